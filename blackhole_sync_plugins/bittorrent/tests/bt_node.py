"""A test node: one Engine in its own process, driven by JSON lines.

    python bt_node.py --state DIR [--backend asyncio|trio] [--port N] [--no-dht]
        [--dht-node HOST:PORT ...] [--upload-rate N] [--tick S] [--resume-interval S]
        [--dht-announce-interval S]

stdout: one JSON object per line. First ``{"event": "ready", "port": N, "pid": P}``; then a
reply ``{"reply": ID, "ok": true, ...}`` or ``{"reply": ID, "error": NAME, "message": ...}``
per command, and ``{"event": KIND, "btih": ..., ...}`` for each download event.
stdin: ``{"id": ID, "cmd": NAME, ...}`` per line; ``quit`` (or end of input) closes the engine
and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blackhole_sync_bittorrent import (
    Download,
    Engine,
    EngineConfig,
    Event,
    MutableItem,
    Seed,
    Torrent,
)


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


def event_message(event: Event) -> dict[str, Any]:
    kind = type(event).__name__.lower()
    data = dataclasses.asdict(event)
    if "stats" in data:
        data = {**data.pop("stats"), "ratio": event.stats.ratio}  # type: ignore[union-attr]
    return {"event": kind, **data}


def item_to_json(item: MutableItem) -> dict[str, Any]:
    return {
        "public_key": item.public_key.hex(),
        "salt": item.salt.hex(),
        "seq": item.seq,
        "value": item.value.hex(),
        "signature": item.signature.hex(),
    }


def item_from_json(data: dict[str, Any]) -> MutableItem:
    return MutableItem(
        bytes.fromhex(data["public_key"]),
        bytes.fromhex(data["salt"]),
        int(data["seq"]),
        bytes.fromhex(data["value"]),
        bytes.fromhex(data["signature"]),
    )


class Node:
    def __init__(self, engine: Engine, tg: anyio.abc.TaskGroup) -> None:
        self.engine = engine
        self.tg = tg
        self.transfers: dict[str, Seed | Download] = {}

    async def forward(self, download: Download) -> None:
        with download.events() as events:
            async for event in events:
                emit(event_message(event))

    def load(self, cmd: dict[str, Any]) -> Torrent:
        data = Path(cmd["torrent"]).read_bytes()
        return Torrent.from_bytes(
            data,
            expected_btih=cmd.get("expected_btih"),
            expected_length=cmd.get("expected_length"),
            max_length=cmd.get("max_length"),
        )

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        engine = self.engine
        if name == "settings":
            return {"settings": await engine.get_settings()}
        if name == "seed":
            torrent = self.load(cmd)
            seed = await engine.seed(
                torrent,
                cmd["file"],
                upload_limit=cmd.get("upload_limit", 0),
                super_seeding=cmd.get("super_seeding", False),
                verify=cmd.get("verify", False),
            )
            self.transfers[torrent.btih] = seed
            return {"btih": torrent.btih}
        if name == "download":
            torrent = self.load(cmd)
            download = await engine.download(
                torrent,
                cmd["staging"],
                max_length=cmd["cap"],
                peers=[tuple(p) for p in cmd.get("peers", [])],
                use_dht=cmd.get("use_dht", False),
                stall_timeout=cmd.get("stall_timeout", 60.0),
            )
            self.transfers[torrent.btih] = download
            self.tg.start_soon(self.forward, download)
            return {"btih": torrent.btih, "path": str(download.path)}
        if name == "peers":
            transfer = self.transfers[cmd["btih"]]
            assert isinstance(transfer, Download)
            await transfer.add_peers([tuple(p) for p in cmd["peers"]])
            return {}
        if name == "web_seed":
            transfer = self.transfers[cmd["btih"]]
            assert isinstance(transfer, Download)
            await transfer.add_web_seed(cmd["url"])
            return {}
        if name == "stop":
            transfer = self.transfers.pop(cmd["btih"])
            stats = transfer.stats()
            await transfer.stop()
            return {"stats": dataclasses.asdict(stats), "ratio": stats.ratio}
        if name == "stats":
            stats = engine.stats()
            return {
                "engine": dataclasses.asdict(stats),
                "transfers": {
                    s.btih: {**dataclasses.asdict(s), "ratio": s.ratio} for s in stats.transfers
                },
            }
        if name == "dht_put":
            result = await engine.dht_put(item_from_json(cmd["item"]))
            return dataclasses.asdict(result)
        if name == "dht_get":
            result = await engine.dht_get(
                bytes.fromhex(cmd["public_key"]), bytes.fromhex(cmd["salt"])
            )
            return {
                "candidates": [
                    {**item_to_json(c.item), "responders": c.responders} for c in result.candidates
                ],
                "nodes_queried": result.nodes_queried,
                "nodes_responded": result.nodes_responded,
                "invalid": result.invalid,
            }
        if name == "dht_put_native":
            key = SigningKey(bytes.fromhex(cmd["seed"]))
            with anyio.fail_after(45):
                seq, stored = await engine.dht_put_native(
                    key, bytes.fromhex(cmd["value"]), bytes.fromhex(cmd["salt"])
                )
            return {"seq": seq, "stored": stored}
        if name == "dht_get_native":
            with anyio.fail_after(45):
                item = await engine.dht_get_native(
                    bytes.fromhex(cmd["public_key"]), bytes.fromhex(cmd["salt"])
                )
            return {"item": item_to_json(item) if item else None}
        if name == "dht_nodes":
            await engine.add_dht_nodes([("127.0.0.1", int(port)) for port in cmd["ports"]])
            return {}
        if name == "keep_published":
            await engine.keep_published(item_from_json(cmd["item"]), interval=cmd["interval"])
            return {}
        raise ValueError(f"unknown command {name!r}")


async def main(args: argparse.Namespace) -> None:
    config = EngineConfig(
        state_dir=Path(args.state),
        loopback_only=True,
        listen_port=args.port,
        upload_rate_limit=args.upload_rate,
        enable_dht=not args.no_dht,
        dht_nodes=[(h, int(p)) for h, p in (n.rsplit(":", 1) for n in args.dht_node)],
        tick_interval=args.tick,
        resume_save_interval=args.resume_interval,
        dht_announce_interval=args.dht_announce_interval,
        limit_local_peers=not args.no_peer_class_filter,
        extra_settings={k: json.loads(v) for k, v in (x.split("=", 1) for x in args.setting)},
    )
    async with Engine(config) as engine, anyio.create_task_group() as tg:
        node = Node(engine, tg)
        client_port = engine.dht.local_address[1] if engine.dht else None
        emit({"event": "ready", "port": engine.listen_port, "dht_client_port": client_port})
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                break
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                break
            try:
                reply = await node.handle(cmd)
            except Exception as e:  # reported to the test, which asserts on it
                traceback.print_exc()
                emit({"reply": cmd.get("id"), "error": type(e).__name__, "message": str(e)})
            else:
                emit({"reply": cmd.get("id"), "ok": True, **reply})
        tg.cancel_scope.cancel()
    emit({"event": "closed"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-dht", action="store_true")
    parser.add_argument("--dht-node", action="append", default=[])
    parser.add_argument("--upload-rate", type=int, default=0)
    parser.add_argument("--tick", type=float, default=0.25)
    parser.add_argument("--resume-interval", type=float, default=30.0)
    parser.add_argument("--dht-announce-interval", type=int, default=900)
    parser.add_argument("--no-peer-class-filter", action="store_true")
    parser.add_argument("--setting", action="append", default=[], help="NAME=JSON_VALUE")
    ns = parser.parse_args()
    anyio.run(main, ns, backend=ns.backend)
