"""A node-side process for tests: peer transports (``ipfs``, optionally ``gossip``) run through
the core's :class:`~blackhole_sync.network.PeerNetwork`, driven by JSON lines on stdin.

    python -m blackhole_sync_ipfs.testing.transport_script --workdir DIR
        [--backend asyncio|trio] [--rpc-facade] [--transports ipfs,gossip]
        [--options JSON] [--root ROOT.json]

``--options``: the transport options (``network_id``, ``loopback_only``, ``node_config``...;
``identity_key`` as hex; ``state_root`` defaults to ``DIR/NODE``). ``--root``: the peer messages
are decided by the core's :class:`~blackhole_sync.network.PeerMessageGate` over that root
(floors in memory); otherwise by a :class:`~blackhole_sync.testing.ScriptedValidator` that
accepts everything. ``--rpc-facade`` also serves the Kubo RPC facade over the embedded node.

Prints ``{"event": "ready", "transports": {name: {"peer_id", "addresses"}}, "rpc", "pid"}``,
then answers each request ``{"id": N, "op": ..., ...}`` like :mod:`.node_script` (errors carry
the exception's class names, most derived first, in ``classes``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.to_thread

from blackhole_sync import (
    Locator,
    PeerMessage,
    TransportPool,
    Verdict,
    VerifyingSink,
    make_plugin_manager,
)


def _plugins(wanted: set[str]) -> Any:
    """A plugin manager loading only the ``wanted`` entry points (the others can be slow to
    import: the gossip plugin imports py-libp2p)."""
    import importlib.metadata

    names = {ep.name for ep in importlib.metadata.entry_points(group="blackhole_sync")}
    return make_plugin_manager(load_entrypoints=True, block=names - wanted)


class _MemoryFloors:
    def __init__(self) -> None:
        self.floors: dict[tuple[str, str], int] = {}

    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        return self.floors.get((kind, node_id))

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        self.floors[(kind, node_id)] = seq


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "classes": [c.__name__ for c in type(exc).__mro__],
        "message": str(exc),
    }


class _Server:
    def __init__(self, peers: Any, options: dict[str, Any], out: TextIO, validator: Any) -> None:
        self.peers = peers
        self.options = options
        self.out = out
        self.validator = validator
        self.lock = threading.Lock()
        self.messages: dict[str, list[dict[str, str]]] = {}
        self.stop = anyio.Event()
        self.tg: Any = None
        self.wanted: set[str] = set()

    def send(self, value: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json.dumps(value) + "\n")
            self.out.flush()

    def transport(self, name: str = "ipfs") -> Any:
        for transport in self.peers.transports:
            if transport.name == name:
                return transport
        raise KeyError(f"no running transport {name!r} (failures: {self.peers.failures})")

    async def handle(self, request: dict[str, Any]) -> None:
        ident = request.get("id")
        try:
            result = await self.run(request)
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            self.send({"id": ident, "ok": False, **_error(exc)})
        else:
            self.send({"id": ident, "ok": True, "result": result})

    async def _collect(self, name: str, kinds: list[str], started: anyio.Event) -> None:
        subscription = self.transport(name).subscribe(kinds)
        started.set()
        async for message in subscription:
            self.messages.setdefault(name, []).append(
                {
                    "kind": message.kind,
                    "payload": base64.b64encode(message.payload).decode(),
                    "peer": message.peer,
                    "transport": message.transport,
                }
            )

    async def _fetch(self, request: dict[str, Any]) -> dict[str, Any]:
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
        started = time.perf_counter()
        try:
            with anyio.fail_after(float(request.get("deadline", 120.0))):
                await self.transport().fetch(locator, sink, max_length=max_length)
            sink.verify()
            verified = True
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            failure = _error(exc)
        finally:
            elapsed = time.perf_counter() - started
            if out:
                buffer.close()
        return {
            "received": sink.received,
            "sha256": sink.hexdigest(),
            "verified": verified,
            "failure": failure,
            "elapsed": elapsed,
        }

    async def _fetch_blob(self, request: dict[str, Any]) -> dict[str, Any]:
        """Through the core's RepositoryClient: sources first, then the extra locators."""
        from blackhole_sync import MetaFile, RepositoryClient

        pool = TransportPool(_plugins(self.wanted).transport_specs(), self.options)
        client = RepositoryClient(request["sources"], pool)
        meta = MetaFile(int(request["length"]), {"sha256": request["sha256"]})
        dest = Path(request["out"])
        failure = None
        try:
            await client.fetch_blob(meta, dest, extra_locators=request.get("locators", []))
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            failure = _error(exc)
        finally:
            await pool.aclose()
        return {
            "failure": failure,
            "exists": dest.exists(),
            "failures": [list(f) for f in client.stats.failures],
        }

    async def run(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        if op == "publish":
            locators = await self.transport().publish(
                Path(request["path"]), sha256=request["sha256"]
            )
            return [[loc.kind, loc.value] for loc in locators]
        if op == "publish_timed":
            began = time.perf_counter()
            locators = await self.transport().publish(
                Path(request["path"]), sha256=request["sha256"]
            )
            return {"cid": locators[0].value, "elapsed": time.perf_counter() - began}
        if op == "locate":
            return [[loc.kind, loc.value] for loc in self.transport().locate(Path(request["path"]))]
        if op == "fetch":
            return await self._fetch(request)
        if op == "fetch_blob":
            return await self._fetch_blob(request)
        if op == "announce":
            await self.transport(request.get("transport", "ipfs")).announce(
                request["kind"], base64.b64decode(request["payload"])
            )
            return None
        if op == "subscribe":
            started = anyio.Event()
            name = request.get("transport", "ipfs")
            self.tg.start_soon(self._collect, name, list(request["kinds"]), started)
            await started.wait()
            return None
        if op == "messages":
            return self.messages.get(request.get("transport", "ipfs"), [])
        if op == "seed":
            blobs = {sha: Path(path) for sha, path in request["blobs"].items()}
            await self.transport().seed(blobs)
            return None
        if op == "seed_node":
            from blackhole_sync.agent import seed_kept_blobs

            return await seed_kept_blobs(self.peers, Path(request["node"]))
        if op == "pinned":
            return await self.transport().inner.pinned()
        if op == "pins":
            return sorted(await self.transport().inner.backend.pins())
        if op == "connect":
            await self.transport().inner.backend.connect(request["addr"])
            return None
        if op == "ipfs_peers":
            return await self.transport().inner.backend.peers()
        if op == "gossip_peers":
            return await self.transport("gossip").inner.connected_peers()
        if op == "guard":
            return dict(self.transport().inner.guard.counts)
        if op == "conformance":
            return await _conformance(self, request)
        if op == "close":
            self.stop.set()
            return None
        raise ValueError(f"unknown op {op!r}")


async def _conformance(server: _Server, request: dict[str, Any]) -> list[str]:
    """``check_transport`` in this process: the transport is a fresh ``ipfs`` transport on
    this process's embedded node (shared through the lease) for each check; its peer an
    ``rpc`` transport to another process's node (``peer_rpc``), both built with one
    ScriptedValidator. Content is placed on the peer, so every fetch crosses the network."""
    import contextlib
    import tempfile

    from blackhole_sync.testing import ScriptedValidator, TransportUnderTest, check_transport
    from blackhole_sync_ipfs import cid_of_bytes
    from blackhole_sync_ipfs.transport import IpfsTransport

    validator = ScriptedValidator()
    base = dict(server.options)
    base["message_validator"] = validator
    peer_options = {
        "network_id": base.get("network_id"),
        "message_validator": validator,
        "node_config": {"ipfs": {"backend": "rpc", "rpc": request["peer_rpc"], "fetch_timeout": 5}},
    }
    workdir = Path(tempfile.mkdtemp(prefix="conformance-"))

    @contextlib.asynccontextmanager
    async def make() -> Any:
        async with IpfsTransport(**base) as transport, IpfsTransport(**peer_options) as peer:

            async def put(data: bytes) -> Locator:
                sha = hashlib.sha256(data).hexdigest()
                path = workdir / sha
                path.write_bytes(data)
                (locator,) = await peer.publish(path, sha256=sha)
                return locator

            def missing() -> Locator:
                return Locator("cid", cid_of_bytes(os.urandom(64)))

            yield TransportUnderTest(transport, put, missing, peer=peer, validator=validator)

    return await check_transport(make)


async def _main(args: argparse.Namespace, out: TextIO) -> None:
    from blackhole_sync.network import PeerMessageGate, PeerNetwork
    from blackhole_sync.testing import ScriptedValidator

    workdir = Path(args.workdir)
    options: dict[str, Any] = json.loads(args.options)
    options.setdefault("state_root", str(workdir / "NODE"))
    if isinstance(options.get("identity_key"), str):
        options["identity_key"] = bytes.fromhex(options["identity_key"])
    validator: Callable[[PeerMessage], Verdict]
    if args.root:
        from blackhole_sync import TrustedState

        root = TrustedState(Path(args.root).read_bytes()).root
        validator = PeerMessageGate(lambda: root, _MemoryFloors())
    else:
        validator = ScriptedValidator()
    wanted = set(args.transports.split(","))
    plugins = _plugins(wanted)
    specs = [s for s in plugins.transport_specs() if s.name in wanted]
    async with AsyncExitStack() as stack:
        peers = await stack.enter_async_context(PeerNetwork(specs, validator, options))  # type: ignore[arg-type]
        if peers.failures:
            raise SystemExit(f"transports failed to start: {peers.failures}")
        facade = None
        if args.rpc_facade:
            from .rpc_facade import serve_facade

            ipfs: Any = next(t for t in peers.transports if t.name == "ipfs").inner
            facade = await stack.enter_async_context(serve_facade(ipfs.backend))
        server = _Server(peers, {**options, "message_validator": validator}, out, validator)
        server.wanted = wanted
        async with anyio.create_task_group() as tg:
            server.tg = tg

            async def read_requests() -> None:
                while True:
                    line = await anyio.to_thread.run_sync(
                        sys.stdin.readline, abandon_on_cancel=True
                    )
                    if not line:
                        server.stop.set()
                        return
                    if line.strip():
                        tg.start_soon(server.handle, json.loads(line))

            tg.start_soon(read_requests)
            transports = {
                t.name: {"peer_id": getattr(t.inner, "peer_id", ""), "addresses": t.addresses()}
                for t in peers.transports
            }
            server.send(
                {"event": "ready", "transports": transports, "rpc": facade, "pid": os.getpid()}
            )
            await server.stop.wait()
            tg.cancel_scope.cancel()
    server.send({"event": "closed", "threads": sorted(t.name for t in threading.enumerate())})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--rpc-facade", action="store_true")
    parser.add_argument("--transports", default="ipfs")
    parser.add_argument("--options", default="{}")
    parser.add_argument("--root", default="")
    args = parser.parse_args(argv)
    if args.rpc_facade and args.backend != "asyncio":
        parser.error("the rpc facade (aiohttp) needs --backend asyncio")
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    runner: Callable[[], Awaitable[None]] = lambda: _main(args, out)  # noqa: E731
    anyio.run(runner, backend=args.backend)
    out.close()


if __name__ == "__main__":
    main()
