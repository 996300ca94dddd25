"""The origin server under attack, on real sockets: clients that hold slots without reading,
slow readers, hostile Range headers, malformed requests -- and what each leaves in the log."""

from __future__ import annotations

import errno
import io
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import anyio.to_thread
import pytest
from blackhole_sync_http import (
    HttpTransport,
    ServerLimits,
    serve_repository,
    server as server_module,
)
from blackhole_sync_http.server import _client_key
from http_helpers import Repo, content, raw_request, sha256, wait_until

from blackhole_sync import Locator, SourceUnavailableError, VerifyingSink

pytestmark = pytest.mark.anyio

BLOB = 32 * 1024 * 1024  # well past the kernel's socket buffers on loopback


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@contextmanager
def clients_that_never_read(url: str, target: str, sources: list[str]) -> Iterator[None]:
    """One connection per entry of ``sources`` (a loopback address to connect from), each
    asking for ``target`` and then reading nothing, until the block ends."""
    sockets = []
    try:
        for source in sources:
            sock = socket.socket()
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.bind((source, 0))
            sock.connect(_host_port(url))  # loopback: the kernel completes it at once
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield
    finally:
        for sock in sockets:
            sock.close()


async def fetch(url: str, blob: bytes, **options: object) -> None:
    sink = VerifyingSink(
        io.BytesIO(), max_length=len(blob), expected_length=len(blob), expected_sha256=sha256(blob)
    )
    async with HttpTransport(retries=0, **options) as transport:
        await transport.fetch(Locator.url(url), sink, max_length=len(blob))
    sink.verify()


def client_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the server and aiohttp logged at INFO or above."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name.startswith(("blackhole_sync_http", "aiohttp"))
    ]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in caplog.text
        assert "\n" not in record.getMessage(), record.getMessage()


async def test_64_clients_from_one_address_that_never_read_leave_room_for_others(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    blob = content(BLOB)
    target = "/blobs/" + repo.put(blob)
    async with serve_repository(repo.root) as server:  # default limits: 64 slots, 8 per client
        with clients_that_never_read(server.url, target, ["127.0.0.2"] * 64):
            await wait_until(lambda: server.stats.active + server.stats.client_refusals == 64)
            assert server.stats.active == ServerLimits().max_requests_per_client
            with anyio.fail_after(5):
                await fetch(server.url + target, blob)
    assert server.stats.client_refusals == 64 - 8
    assert_no_traceback(caplog)


async def test_64_clients_that_never_read_are_dropped_and_their_slots_reclaimed(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    blob = content(BLOB)
    target = "/blobs/" + repo.put(blob)
    limits = ServerLimits(write_timeout=1.0)
    async with serve_repository(repo.root, limits=limits) as server:
        sources = [f"127.0.0.{10 + i}" for i in range(64)]  # one slot each: every slot taken
        with clients_that_never_read(server.url, target, sources):
            await wait_until(lambda: server.stats.active == 64)
            assert (await raw_request(server.url, "/index.json")).status == 503
            with anyio.fail_after(5):
                await wait_until(lambda: server.stats.active == 0)
                await fetch(server.url + target, blob)
    assert server.stats.dropped == 64
    dropped = [r for r in client_errors(caplog) if "dropped" in r.getMessage()]
    assert len(dropped) == 64
    assert "write_timeout" in dropped[0].getMessage()
    assert_no_traceback(caplog)


def read_slowly(url: str, target: str, seconds: float) -> int:
    """Ask for ``target`` and read it at about 20 kB/s (blocking, for a worker thread) until the
    server ends the connection or ``seconds`` pass; return the bytes read."""
    received = 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(seconds)
        sock.connect(_host_port(url))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                block = sock.recv(1024)
            except OSError:  # reset by the server
                break
            if not block:
                break
            received += len(block)
            time.sleep(0.05)
    return received


async def test_reader_below_the_minimum_rate_is_dropped(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    blob = content(BLOB)
    target = "/blobs/" + repo.put(blob)
    limits = ServerLimits(min_send_rate=1_000_000, send_rate_window=1.0, write_timeout=60.0)
    async with serve_repository(repo.root, limits=limits) as server:
        start = time.monotonic()
        received = await anyio.to_thread.run_sync(read_slowly, server.url, target, 20)
        assert received < BLOB and time.monotonic() - start < 10
        await wait_until(lambda: server.stats.active == 0)
        assert server.stats.dropped == 1
        with anyio.fail_after(10):  # a reader at full speed meets the same limits
            await fetch(server.url + target, blob)
    assert server.stats.dropped == 1
    (line,) = [r.getMessage() for r in client_errors(caplog) if "dropped" in r.getMessage()]
    assert "below min_send_rate 1000000 bytes/s" in line
    assert_no_traceback(caplog)


async def test_huge_range_number_is_400_in_one_log_line(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    blob = content(1000)
    target = "/blobs/" + repo.put(blob)
    async with serve_repository(repo.root) as server:
        reply = await raw_request(server.url, target, headers=f"Range: bytes={'9' * 5000}-\r\n")
        assert reply.status == 400
        (line,) = client_errors(caplog)
        assert line.levelno == logging.INFO
        assert "Range header longer than 256 characters" in line.getMessage()
        assert (await raw_request(server.url, target)).body == blob  # still serving
    assert_no_traceback(caplog)


@pytest.mark.parametrize(
    ("header", "status", "content_range"),
    [
        (f"bytes={'1' * 20}-", 400, None),
        (f"bytes=0-{'9' * 20}", 400, None),
        (f"bytes=-{'9' * 20}", 400, None),
        (f"bytes={'0' * 40}5-9", 206, "bytes 5-9/1000"),  # leading zeros are not digits past
        (f"bytes={'9' * 19}-", 416, "bytes */1000"),
        ("bytes=" + ",".join(["0-0"] * 9), 416, "bytes */1000"),  # excessive ranges
        ("bytes=" + ",".join(["0-0"] * 8), 200, None),  # several ranges: the whole file
        ("bytes=2000-3000, 4000-", 416, "bytes */1000"),
        ("bytes=0-1,,5-6", 200, None),
        ("BYTES=0-0", 206, "bytes 0-0/1000"),
        ("bytes=" + "0" * 250, 200, None),  # no dash: invalid, ignored
        ("bytes=0-1" + "," * 250, 400, None),  # 259 characters
    ],
)
async def test_range_header_bounds(
    repo: Repo,
    caplog: pytest.LogCaptureFixture,
    header: str,
    status: int,
    content_range: str | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    target = "/blobs/" + repo.put(content(1000))
    async with serve_repository(repo.root) as server:
        reply = await raw_request(server.url, target, headers=f"Range: {header}\r\n")
    assert reply.status == status
    assert reply.headers.get("content-range") == content_range
    assert len(client_errors(caplog)) == (1 if status in (400, 416) else 0)
    assert_no_traceback(caplog)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /index.json HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /index.json HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 9000 + b"\r\n\r\n",
        b"GET /index.json HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /index.json HTTP/9.9\r\nHost: x\r\n\r\n",
    ],
    ids=["header-token", "long-line", "long-header", "bad-length", "bad-version"],
)
async def test_malformed_request_is_400_in_one_log_line(
    repo: Repo, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_repository(repo.root) as server:
        async with await anyio.connect_tcp(*_host_port(server.url)) as stream:
            await stream.send(raw)
            reply = b""
            with anyio.fail_after(10):
                try:
                    while True:
                        reply += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
        assert reply.startswith(b"HTTP/1.0 400 ") or reply.startswith(b"HTTP/1.1 400 ")
        assert (await raw_request(server.url, "/index.json")).status == 200
    (line,) = client_errors(caplog)
    assert line.levelno == logging.INFO and "127.0.0.1" in line.getMessage()
    assert_no_traceback(caplog)


async def test_client_going_away_mid_body_is_one_log_line(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    target = "/blobs/" + repo.put(content(BLOB))
    async with serve_repository(repo.root) as server:
        async with await anyio.connect_tcp(*_host_port(server.url)) as stream:
            await stream.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await stream.receive()
        await wait_until(lambda: server.stats.active == 0)
        assert (await raw_request(server.url, "/index.json")).status == 200
    (line,) = client_errors(caplog)
    assert "went away" in line.getMessage()
    assert server.stats.dropped == 0
    assert_no_traceback(caplog)


def test_per_client_limit_counts_an_ipv6_host_by_its_64() -> None:
    assert _client_key("2001:db8:1:2::1") == _client_key("2001:db8:1:2:ffff::9")
    assert _client_key("2001:db8:1:2::1") != _client_key("2001:db8:1:3::1")
    assert _client_key("::ffff:192.0.2.7") == _client_key("192.0.2.7") == "192.0.2.7"
    assert _client_key("192.0.2.7") != _client_key("192.0.2.8")
    assert _client_key(None) == "?"


async def test_unreadable_blob_ends_the_connection_after_a_short_body(
    repo: Repo, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    blob = content(1024 * 1024)
    target = "/blobs/" + repo.put(blob)
    real_pread = os.pread

    def failing_pread(fd: int, length: int, offset: int) -> bytes:
        if offset >= 256 * 1024:
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, length, offset)

    monkeypatch.setattr(server_module.os, "pread", failing_pread)
    async with serve_repository(repo.root) as server:
        with pytest.raises(SourceUnavailableError):  # short body, then the connection closes
            await fetch(server.url + target, blob)
        await wait_until(lambda: server.stats.active == 0)
    (line,) = client_errors(caplog)
    assert line.levelno == logging.ERROR and "Input/output error" in line.getMessage()
    assert_no_traceback(caplog)


async def test_connection_trickling_its_request_headers_is_closed(repo: Repo) -> None:
    async with serve_repository(repo.root, limits=ServerLimits(keepalive_timeout=1.0)) as server:
        async with await anyio.connect_tcp(*_host_port(server.url)) as stream:
            await stream.send(b"GET /index.json HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            with anyio.fail_after(5):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    while True:
                        await stream.receive()
        assert server.stats.requests == 0
