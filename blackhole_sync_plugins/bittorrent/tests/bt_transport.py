"""A node-side test process: the ``bittorrent`` transport inside the core's PeerNetwork (as
``node run`` holds it), driven by JSON lines.

    python bt_transport.py --workdir DIR [--backend asyncio|trio] [--options JSON]
        [--root ROOT.json]

``--options``: the transport options (``network_id``, ``loopback_only``, ``node_config``;
``index_key`` as hex; ``state_root`` defaults to ``DIR/NODE``). ``--root``: peer messages are
decided by the core's PeerMessageGate over that root (floors in memory, readable and settable
with ``floor``/``set_floor``); otherwise everything is accepted.

stdout: ``{"event": "ready", "addresses": [...], "pid": P}``, then one
``{"reply": ID, "ok": true, "result": ...}`` or ``{"reply": ID, "error": NAME, "classes":
[...], "message": ...}`` per request ``{"id": ID, "cmd": NAME, ...}``. ``quit`` (or the end
of stdin) closes everything and exits 0.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blackhole_sync import (
    Locator,
    PeerMessage,
    TransportPool,
    Verdict,
    VerifyingSink,
    make_plugin_manager,
)


class MemoryFloors:
    def __init__(self) -> None:
        self.floors: dict[tuple[str, str], int] = {}

    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        return self.floors.get((kind, node_id))

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        self.floors[(kind, node_id)] = seq


def emit(out: Any, value: dict[str, Any]) -> None:
    out.write(json.dumps(value, default=str) + "\n")
    out.flush()


def error_fields(exc: BaseException) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "classes": [c.__name__ for c in type(exc).__mro__],
        "message": str(exc),
    }


def plugins() -> Any:
    import importlib.metadata

    names = {ep.name for ep in importlib.metadata.entry_points(group="blackhole_sync")}
    return make_plugin_manager(load_entrypoints=True, block=names - {"bittorrent", "http"})


class Server:
    def __init__(self, peers: Any, options: dict[str, Any], out: Any, gate: Any) -> None:
        self.peers = peers
        self.options = options
        self.out = out
        self.gate = gate
        self.messages: list[dict[str, Any]] = []
        self.stop = anyio.Event()
        self.tg: Any = None

    @property
    def transport(self) -> Any:
        (transport,) = [t for t in self.peers.transports if t.name == "bittorrent"]
        return transport

    async def handle(self, request: dict[str, Any]) -> None:
        ident = request.get("id")
        try:
            result = await self.run(request)
        except Exception as exc:
            emit(self.out, {"reply": ident, **error_fields(exc)})
        else:
            emit(self.out, {"reply": ident, "ok": True, "result": result})

    async def fetch(self, request: dict[str, Any]) -> dict[str, Any]:
        locator = Locator(request["kind"], request["value"])
        max_length = int(request["max_length"])
        out = request.get("out")
        buffer: Any = open(out, "w+b") if out else io.BytesIO()
        sink = VerifyingSink(
            buffer,
            max_length=max_length,
            expected_length=request.get("expected_length"),
            expected_sha256=request.get("expected_sha256"),
            source=str(locator),
        )
        failure = None
        verified = False
        started = time.monotonic()
        try:
            with anyio.fail_after(float(request.get("deadline", 120.0))):
                await self.transport.fetch(locator, sink, max_length=max_length)
            sink.verify()
            verified = True
        except Exception as exc:
            failure = error_fields(exc)
        finally:
            if out:
                buffer.close()
        return {
            "received": sink.received,
            "sha256": sink.hexdigest(),
            "verified": verified,
            "failure": failure,
            "elapsed": time.monotonic() - started,
            "status": self.transport.inner.status(),
        }

    async def fetch_blob(self, request: dict[str, Any]) -> dict[str, Any]:
        """Through the core's RepositoryClient: the swarm first, then the sources."""
        from blackhole_sync import MetaFile, RepositoryClient

        pool = TransportPool(plugins().transport_specs(), self.options)
        client = RepositoryClient(request["sources"], pool)
        meta = MetaFile(int(request["length"]), {"sha256": request["sha256"]})
        dest = Path(request["out"])
        failure = None
        try:
            await client.fetch_blob(meta, dest, extra_locators=request.get("locators", []))
        except Exception as exc:
            failure = error_fields(exc)
        finally:
            await pool.aclose()
        return {
            "failure": failure,
            "exists": dest.exists(),
            "failures": [list(f) for f in client.stats.failures],
            "status": self.transport.inner.status(),
        }

    async def collect(self, kinds: list[str], started: anyio.Event) -> None:
        async for decided in self.peers.messages(kinds):
            started.set()
            self.messages.append(
                {
                    "kind": decided.kind,
                    "seq": decided.seq,
                    "payload": base64.b64encode(decided.envelope.raw).decode()
                    if decided.envelope is not None
                    else None,
                }
            )

    async def run(self, request: dict[str, Any]) -> Any:
        cmd = request["cmd"]
        inner = self.transport.inner
        if cmd == "publish":
            locators = await self.transport.publish(Path(request["path"]), sha256=request["sha256"])
            return [[x.kind, x.value] for x in locators]
        if cmd == "locate":
            return [[x.kind, x.value] for x in self.transport.locate(Path(request["path"]))]
        if cmd == "fetch":
            return await self.fetch(request)
        if cmd == "fetch_blob":
            return await self.fetch_blob(request)
        if cmd == "seed":
            await self.transport.seed({k: Path(v) for k, v in request["blobs"].items()})
            return inner.status()
        if cmd == "status":
            return inner.status()
        if cmd == "settings":
            settings = await inner.host.engine.get_settings()
            return {k: v for k, v in settings.items() if isinstance(v, (bool, int, str))}
        if cmd == "announce":
            told = await self.peers.announce(request["kind"], base64.b64decode(request["payload"]))
            return told
        if cmd == "query":
            answers = await self.transport.query(request["kind"])
            out = []
            for answer in answers:
                verdict = self.gate(answer) if request.get("decide", True) else None
                out.append(
                    {
                        "payload": base64.b64encode(answer.payload).decode(),
                        "peer": answer.peer,
                        "verdict": None if verdict is None else verdict.value,
                    }
                )
            return out
        if cmd == "subscribe":
            started = anyio.Event()
            self.tg.start_soon(self.collect, list(request["kinds"]), started)
            return None
        if cmd == "messages":
            return self.messages
        if cmd == "floor":
            return getattr(getattr(self.gate, "_floors", None), "floors", {}).get(
                (request["kind"], request["key"])
            )
        if cmd == "set_floor":
            self.gate._floors.set_seq_floor(request["kind"], request["key"], int(request["seq"]))
            return None
        if cmd == "dht_put":
            from blackhole_sync_bittorrent import MutableItem
            from nacl.signing import SigningKey

            item = MutableItem.sign(
                SigningKey(bytes.fromhex(request["key"])),
                base64.b64decode(request["value"]),
                int(request["seq"]),
                request["salt"].encode(),
            )
            result = await inner.host.engine.dht_put(item)
            return {"stored": result.stored, "refused": [list(r) for r in result.refused]}
        if cmd == "add_dht_nodes":
            await inner.host.engine.add_dht_nodes([tuple(x) for x in request["nodes"]])
            return None
        if cmd == "quit":
            self.stop.set()
            return None
        raise ValueError(f"unknown command {cmd!r}")


async def main(args: argparse.Namespace, out: Any) -> None:
    from blackhole_sync.network import PeerMessageGate, PeerNetwork

    workdir = Path(args.workdir)
    options: dict[str, Any] = json.loads(args.options)
    options.setdefault("state_root", str(workdir / "NODE"))
    if isinstance(options.get("index_key"), str):
        options["index_key"] = bytes.fromhex(options["index_key"])
    gate: Callable[[PeerMessage], Verdict]
    if args.root:
        from blackhole_sync import TrustedState

        root = TrustedState(Path(args.root).read_bytes()).root
        gate = PeerMessageGate(lambda: root, MemoryFloors())
        options.setdefault(
            "index_keys", lambda: [k.raw for k in root.role_keys("index")[1].values()]
        )
    else:
        gate = lambda message: Verdict.ACCEPT  # noqa: E731
    specs = [s for s in plugins().transport_specs() if s.name == "bittorrent"]
    async with PeerNetwork(specs, gate, options) as peers:  # type: ignore[arg-type]
        if peers.failures:
            raise SystemExit(f"transports failed to start: {peers.failures}")
        server = Server(peers, {**options, "message_validator": gate}, out, gate)
        async with anyio.create_task_group() as tg:
            server.tg = tg

            async def read_requests() -> None:
                while True:
                    line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                    if not line:
                        server.stop.set()
                        return
                    if line.strip():
                        tg.start_soon(server.handle, json.loads(line))

            tg.start_soon(read_requests)
            emit(
                out,
                {
                    "event": "ready",
                    "addresses": server.transport.addresses(),
                    "pid": os.getpid(),
                },
            )
            await server.stop.wait()
            tg.cancel_scope.cancel()
    emit(out, {"event": "closed"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--options", default="{}")
    parser.add_argument("--root", default="")
    parsed = parser.parse_args()
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    anyio.run(main, parsed, stream, backend=parsed.backend)
    stream.close()
