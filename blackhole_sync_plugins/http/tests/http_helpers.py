"""Helpers for the HTTP plugin tests: a repository on disk and staged hostile mirrors."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from pathlib import Path

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Repo:
    """A repository directory in the layout of ARCHITECTURE.md section 5, plus private files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True)
        (root / "manifests").mkdir()
        (root / "root.json").write_bytes(b'{"signed":{"version":2}}')
        (root / "1.root.json").write_bytes(b'{"signed":{"version":1}}')
        (root / "2.root.json").write_bytes(b'{"signed":{"version":2}}')
        (root / "index.json").write_bytes(b'{"signed":{"index":1}}')
        (root / "manifests" / "1.2.3-rc.1.json").write_bytes(b'{"signed":{"m":1}}')
        (root / ".bhsync").mkdir()
        (root / ".bhsync" / "release.key").write_bytes(b"PRIVATE KEY")
        (root / "drafts").mkdir()
        (root / "drafts" / "2.0.0.json").write_bytes(b"draft")

    def put(self, data: bytes, name: str | None = None) -> str:
        digest = sha256(data)
        (self.root / "blobs" / (name or digest)).write_bytes(data)
        return digest


def content(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


_RANGE = re.compile(rb"\r\nrange: *bytes=(\d+)-(\d*)", re.IGNORECASE)


class HostileMirror:
    """A real TCP server speaking just enough HTTP/1.1 to stage one misbehaviour.

    ``mode``: ``cut`` (serves ``data`` honouring Range, but drops the connection after a random
    number of bytes per response), ``stall`` (headers, then silence), ``endless`` (headers
    without a length, then bytes forever), ``garbage`` (not HTTP at all), ``forbidden``
    (403 for everything, as an object store answers for a key it does not hold), ``huge_range``
    (206 with a 4400-digit Content-Range position).
    """

    def __init__(self, mode: str, data: bytes = b"", *, seed: int = 1) -> None:
        self.mode = mode
        self.data = data
        self.rng = random.Random(seed)
        self.bytes_sent = 0
        self.requests = 0
        self.cuts: list[int] = []
        self.url = ""

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                try:
                    head += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            self.requests += 1
            try:
                await getattr(self, "_" + self.mode)(stream, head)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                pass

    async def _cut(self, stream: SocketStream, head: bytes) -> None:
        match = _RANGE.search(head)
        start = int(match.group(1)) if match else 0
        body = self.data[start:]
        if match:
            status = b"206 Partial Content"
            extra = b"Content-Range: bytes %d-%d/%d\r\n" % (
                start,
                len(self.data) - 1,
                len(self.data),
            )
        else:
            status, extra = b"200 OK", b""
        await stream.send(
            b"HTTP/1.1 "
            + status
            + b'\r\nContent-Length: %d\r\nETag: "v1"\r\n' % len(body)
            + extra
            + b"Connection: close\r\n\r\n"
        )
        cut = self.rng.randrange(1, len(body) + 1) if len(body) > 1 else len(body)
        self.cuts.append(cut)
        await stream.send(body[:cut])
        self.bytes_sent += cut

    async def _stall(self, stream: SocketStream, head: bytes) -> None:
        await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        await anyio.sleep(30)

    async def _endless(self, stream: SocketStream, head: bytes) -> None:
        await stream.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        block = b"\xaa" * 65536
        while True:
            await stream.send(block)
            self.bytes_sent += len(block)

    async def _forbidden(self, stream: SocketStream, head: bytes) -> None:
        await stream.send(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 13\r\nConnection: close\r\n\r\nAccessDenied\n"
        )

    async def _huge_range(self, stream: SocketStream, head: bytes) -> None:
        digits = b"9" * 4400  # past int()'s 4300-digit limit, within aiohttp's 8190-byte line
        await stream.send(
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %s-1/*\r\n"
            b"Content-Length: 10\r\nConnection: close\r\n\r\n0123456789" % digits
        )

    async def _garbage(self, stream: SocketStream, head: bytes) -> None:
        await stream.send(b"\x00\xffSSH-2.0-definitely not http\r\n" * 50)


async def start_mirror(tg: TaskGroup, mirror: HostileMirror) -> HostileMirror:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    mirror.url = f"http://127.0.0.1:{port}"

    async def serve() -> None:
        async with listener:
            await listener.serve(mirror._handle)

    tg.start_soon(serve)
    return mirror


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (server counters have no event to wait on) until true, for up to 10 s."""
    with anyio.fail_after(10):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)


class Reply:
    """A raw HTTP/1.1 reply: status, lower-cased headers, body."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()


async def raw_request(url: str, target: str, *, method: str = "GET", headers: str = "") -> Reply:
    """Send ``target`` byte for byte (no client-side normalisation) and read the reply."""
    host, port = url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(
            f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n".encode(
                "latin-1"
            )
        )
        raw = b""
        with anyio.fail_after(10):
            while True:
                try:
                    raw += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    return Reply(raw)
