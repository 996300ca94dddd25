"""A node process for tests: one embedded node driven by JSON lines on stdin.

    python -m blackhole_sync_ipfs.testing.node_script --repo DIR [--backend asyncio|trio]
        [--rpc-facade] [--pin-check-timeout S]

Prints ``{"event": "ready", ...}`` (peer id, addresses, facade URL, pid) on stdout, then answers
each request line ``{"id": N, "op": ..., ...}`` with ``{"id": N, "ok": true, "result": ...}``
or ``{"id": N, "ok": false, "error": "<class name>", "message": ...}``. Requests run
concurrently. ``{"op": "close"}`` stops the node, reports the threads and sockets left, and
the process exits. Anything else that writes to stdout is sent to stderr instead.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TextIO

import anyio
import anyio.to_thread

from .._config import EmbeddedConfig
from .._embedded import EmbeddedNode


def _inet_sockets() -> list[dict[str, Any]]:
    import psutil

    out = []
    for conn in psutil.Process().net_connections(kind="inet"):
        laddr = conn.laddr
        out.append(
            {
                "type": "tcp" if conn.type == 1 else "udp",
                "status": conn.status,
                "ip": laddr.ip if laddr else None,
                "port": laddr.port if laddr else None,
            }
        )
    return out


class _Server:
    def __init__(self, node: EmbeddedNode, out: TextIO, facade: str | None) -> None:
        self.node = node
        self.out = out
        self.facade = facade
        self.lock = threading.Lock()
        self.messages: dict[str, list[dict[str, str]]] = {}
        self.stop = anyio.Event()
        self.tg: Any = None

    def send(self, value: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json.dumps(value) + "\n")
            self.out.flush()

    async def _collect(self, topic: str, started: anyio.Event) -> None:
        async with self.node.subscribe(topic) as sub:
            started.set()
            async for message in sub:
                self.messages.setdefault(topic, []).append(
                    {"from": message.from_peer, "payload": base64.b64encode(message.payload).decode()}
                )

    async def handle(self, request: dict[str, Any]) -> None:
        ident = request.get("id")
        try:
            result = await self.run(request)
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            self.send({"id": ident, "ok": False, "error": type(exc).__name__, "message": str(exc)})
        else:
            self.send({"id": ident, "ok": True, "result": result})

    async def run(self, request: dict[str, Any]) -> Any:
        node = self.node
        op = request["op"]
        if op == "add":
            return await node.add_file(request["path"])
        if op == "add_v0":
            lib = node._lib_or_raise()
            return await node._quick(lib.add_file_v0, request["path"], False)
        if op == "get":
            digest = hashlib.sha256()
            written = 0
            error = None
            with open(request["out"], "wb") as out:

                async def write(chunk: bytes) -> None:
                    nonlocal written
                    digest.update(chunk)
                    written += len(chunk)
                    await anyio.to_thread.run_sync(out.write, chunk)

                try:
                    await node.get(
                        request["cid"],
                        write,
                        max_length=int(request["max_length"]),
                        timeout=float(request.get("timeout", 30.0)),
                    )
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    error = {"error": type(exc).__name__, "message": str(exc)}
            return {"written": written, "sha256": digest.hexdigest(), "failure": error}
        if op == "download_native":
            # Kubo's own UnixFS reader over the whole DAG (not the engine's block walk).
            lib = node._lib_or_raise()
            status = await node._quick(lib.download, request["cid"], request["out"])
            with open(request["out"], "rb") as data:
                return {"status": status, "sha256": hashlib.sha256(data.read()).hexdigest()}
        if op == "pin":
            await node.pin(request["cid"], timeout=float(request.get("timeout", 30.0)))
            return None
        if op == "unpin":
            await node.unpin(request["cid"])
            return None
        if op == "pins":
            return sorted(await node.pins())
        if op == "connect":
            await node.connect(request["addr"])
            return None
        if op == "peers":
            return await node.peers()
        if op == "id":
            info = await node.id()
            return {"peer_id": info.peer_id, "addresses": list(info.addresses)}
        if op == "config":
            return node.effective_config
        if op == "counters":
            c = node.counters
            return {"bytes_added": c.bytes_added, "bytes_fetched": c.bytes_fetched, **c.extra}
        if op == "publish":
            await node.publish(request["topic"], base64.b64decode(request["payload"]))
            return None
        if op == "subscribe":
            started = anyio.Event()
            self.tg.start_soon(self._collect, request["topic"], started)
            await started.wait()
            return None
        if op == "messages":
            return self.messages.get(request["topic"], [])
        if op == "sockets":
            return _inet_sockets()
        if op == "threads":
            return sorted(t.name for t in threading.enumerate())
        if op == "close":
            self.stop.set()
            return None
        raise ValueError(f"unknown op {op!r}")


async def _main(args: argparse.Namespace, out: TextIO) -> None:
    config = EmbeddedConfig(
        repo=args.repo,
        loopback_only=True,
        pin_check_timeout=args.pin_check_timeout,
        fsync=not args.no_fsync,
        prefetch=args.prefetch,
        bootstrap=tuple(args.bootstrap),
    )
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(EmbeddedNode(config))
        facade = None
        if args.rpc_facade:
            from .rpc_facade import serve_facade

            facade = await stack.enter_async_context(serve_facade(node))
        server = _Server(node, out, facade)
        info = await node.id()
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
            server.send(
                {
                    "event": "ready",
                    "peer_id": info.peer_id,
                    "addresses": list(info.addresses),
                    "rpc": facade,
                    "pid": os.getpid(),
                }
            )
            await server.stop.wait()
            tg.cancel_scope.cancel()
    # The node is closed: report what is left, for the tests' "nothing left running" checks.
    server.send(
        {
            "event": "closed",
            "threads": sorted(t.name for t in threading.enumerate()),
            "sockets": _inet_sockets(),
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--rpc-facade", action="store_true")
    parser.add_argument("--pin-check-timeout", type=float, default=10.0)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--bootstrap", action="append", default=[], help="a peer to dial at start")
    args = parser.parse_args(argv)
    if args.rpc_facade and args.backend != "asyncio":
        parser.error("the rpc facade (aiohttp) needs --backend asyncio")
    # Keep stdout for the protocol: anything else printing there goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    runner: Callable[[], Awaitable[None]] = lambda: _main(args, out)  # noqa: E731
    anyio.run(runner, backend=args.backend)
    out.close()


if __name__ == "__main__":
    main()
