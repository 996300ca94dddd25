"""A node's peer side for the tests and the benchmark: the agent's PeerNetwork, one process.

Run as ``python peer_node.py '<json settings>'`` with ``{"node": NODE_DIR, "backend":
"asyncio"|"trio"}``. It opens the node's peer network exactly as ``node run`` does
(:func:`blackhole_sync.agent.open_peer_network`: the installed plugins, the node's identity,
config.toml's ``[network]`` and ``[gossip]`` tables, and the :class:`PeerMessageGate` over the
node's trusted root and the seq floors in its state.db), catches up on announcements and then
listens, like the agent's listener. It prints one ``{"event": "ready", ...}`` line, then
answers each JSON command read on stdin with one line; EOF on stdin stops it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from blackhole_sync import make_plugin_manager
from blackhole_sync.agent import open_peer_network
from blackhole_sync.node import NodeConfig

KINDS = ["announcement", "status"]


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def record(decided: Any, via: str) -> dict[str, Any]:
    doc = decided.document
    return {
        "kind": decided.kind,
        "seq": decided.seq,
        "index_version": getattr(doc, "index_version", None),
        "publisher": decided.publisher,
        "via": via,
        "t": time.time(),
    }


async def main(settings: dict[str, Any]) -> None:
    node = Path(settings["node"])
    config = NodeConfig.from_file(node / "config.toml")
    plugins = make_plugin_manager(  # as `node run` loads them
        load_entrypoints=config.plugins.autoload, block=config.plugins.block
    )
    peers = open_peer_network(node, plugins)
    received: list[dict[str, Any]] = []
    async with peers, anyio.create_task_group() as tg:
        if peers.failures:
            emit({"event": "failed", "failures": peers.failures})
            return
        [guarded] = [t for t in peers.transports if t.name == "gossip"]
        gossip: Any = guarded.inner

        async def listen() -> None:
            for decided in await peers.catch_up("announcement"):
                received.append(record(decided, "catch_up"))
            async for decided in peers.messages(KINDS):
                received.append(record(decided, "gossip"))

        tg.start_soon(listen)
        emit({"event": "ready", "peer_id": gossip.peer_id, "addrs": gossip.addresses()})
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                break
            request = json.loads(line)
            try:
                reply = await handle(request, peers, gossip, received)
            except Exception as exc:  # reported to the test, which fails
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            reply["id"] = request["id"]
            emit(reply)
            if request["cmd"] == "stop":
                break
        tg.cancel_scope.cancel()


async def handle(r: dict[str, Any], peers: Any, gossip: Any, received: list[Any]) -> dict[str, Any]:
    cmd = r["cmd"]
    if cmd == "received":
        return {"messages": received}
    if cmd == "announce":
        told = await peers.announce(r["kind"], bytes.fromhex(r["payload"]))
        return {"told": told, "t": time.time()}
    if cmd == "counters":
        counters = await gossip.counters()
        counters.update({f"gate_{k}": v for k, v in peers.gate.counts.items()})
        return {"counters": counters}
    if cmd == "score":
        return {"score": await gossip.peer_score(r["peer"])}
    if cmd == "peers":
        return {
            "peers": await gossip.connected_peers(),
            "mesh": await gossip.read_engine("mesh_peers", r.get("kind", "announcement")),
        }
    if cmd == "wait_mesh":
        ok = await gossip.call_engine(
            "wait_for_mesh", r.get("kind", "announcement"), timeout=float(r.get("within", 10))
        )
        return {"ok": ok}
    if cmd == "settings":
        return {"settings": await gossip.effective_settings()}
    if cmd == "io":
        return {"pid": __import__("os").getpid()}
    if cmd == "stop":
        return {"ok": True}
    raise ValueError(f"unknown command {cmd!r}")


if __name__ == "__main__":
    options = json.loads(sys.argv[1])
    anyio.run(main, options, backend=options.get("backend", "asyncio"))
