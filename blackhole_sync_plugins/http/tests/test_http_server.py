"""The repository server against real sockets on 127.0.0.1: layout, ranges, escapes, limits."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
from blackhole_sync_http import ServerLimits, serve_repository
from blackhole_sync_http.server import IMMUTABLE, NO_CACHE
from http_helpers import Repo, content, raw_request, wait_until

pytestmark = pytest.mark.anyio


async def test_serves_every_document_of_the_layout(repo: Repo) -> None:
    blob = content(1000)
    digest = repo.put(blob)
    async with serve_repository(repo.root) as server:
        for target, cache in [
            ("/root.json", NO_CACHE),
            ("/index.json", NO_CACHE),
            ("/1.root.json", IMMUTABLE),
            ("/2.root.json", IMMUTABLE),
            ("/manifests/1.2.3-rc.1.json", IMMUTABLE),
            (f"/blobs/{digest}", IMMUTABLE),
        ]:
            reply = await raw_request(server.url, target)
            assert reply.status == 200, target
            assert reply.body == (repo.root / target[1:]).read_bytes()
            assert reply.headers["cache-control"] == cache
            assert reply.headers["accept-ranges"] == "bytes"
            assert reply.headers["etag"].startswith('"')


@pytest.mark.parametrize(
    "target",
    [
        "/.bhsync/release.key",
        "/drafts/2.0.0.json",
        "/",
        "/blobs/",
        "/blobs",
        "/manifests/",
        "/blobs/../.bhsync/release.key",
        "/manifests/../.bhsync/release.key",
        "/blobs/..%2f.bhsync%2frelease.key",
        "/blobs%2f..%2f.bhsync%2frelease.key",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/blobs/%2e%2e/index.json",
        "/../../../../etc/passwd",
        "//etc/passwd",
        "/blobs//etc/passwd",
        "/blobs/..\\..\\.bhsync\\release.key",
        "/manifests/..json",
        "/manifests/.json",
        "/0.root.json",
        "/blobs/" + "A" * 64,
        "/index.json%00",
        "/root.json/",
    ],
)
async def test_path_escape_and_private_file_attempts_are_404(repo: Repo, target: str) -> None:
    async with serve_repository(repo.root) as server:
        reply = await raw_request(server.url, target)
    assert reply.status == 404, target
    assert b"PRIVATE" not in reply.body and b"root:" not in reply.body


async def test_symlink_out_of_the_root_is_404(repo: Repo, tmp_path: Path) -> None:
    secret = tmp_path / "outside-secret"
    secret.write_bytes(b"PRIVATE")
    (repo.root / "blobs" / ("e" * 64)).symlink_to(secret)
    (repo.root / "manifests" / "9.9.9.json").symlink_to(secret)
    os.symlink(tmp_path, repo.root / "blobs" / "up")
    async with serve_repository(repo.root) as server:
        for target in ("/blobs/" + "e" * 64, "/manifests/9.9.9.json"):
            reply = await raw_request(server.url, target)
            assert reply.status == 404
            assert b"PRIVATE" not in reply.body


async def test_symlinked_blobs_directory_escaping_root_is_404(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ("f" * 64)).write_bytes(b"PRIVATE")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "blobs").symlink_to(outside)
    async with serve_repository(root) as server:
        reply = await raw_request(server.url, "/blobs/" + "f" * 64)
    assert reply.status == 404


async def test_range_edge_cases(repo: Repo) -> None:
    blob = content(1000)
    target = "/blobs/" + repo.put(blob)
    cases: list[tuple[str, int, bytes, str | None]] = [
        ("bytes=0-0", 206, blob[:1], "bytes 0-0/1000"),
        ("bytes=999-", 206, blob[999:], "bytes 999-999/1000"),
        ("bytes=10-19", 206, blob[10:20], "bytes 10-19/1000"),
        ("bytes=990-5000", 206, blob[990:], "bytes 990-999/1000"),
        ("bytes=-1", 206, blob[-1:], "bytes 999-999/1000"),
        ("bytes=-5000", 206, blob, "bytes 0-999/1000"),
        ("bytes=1000-", 416, b"", "bytes */1000"),
        ("bytes=-0", 416, b"", "bytes */1000"),
        ("bytes=5-2", 200, blob, None),  # invalid: ignored
        ("bytes=0-1,5-6", 200, blob, None),  # multiple ranges: not offered, whole file
        ("items=0-1", 200, blob, None),
        ("bytes=abc", 200, blob, None),
    ]
    async with serve_repository(repo.root) as server:
        for header, status, body, content_range in cases:
            reply = await raw_request(server.url, target, headers=f"Range: {header}\r\n")
            assert reply.status == status, header
            assert reply.body == body, header
            assert reply.headers.get("content-range") == content_range, header
            assert int(reply.headers["content-length"]) == len(body), header


async def test_range_on_empty_file_is_416(repo: Repo) -> None:
    target = "/blobs/" + repo.put(b"")
    async with serve_repository(repo.root) as server:
        reply = await raw_request(server.url, target, headers="Range: bytes=0-\r\n")
        assert reply.status == 416
        assert reply.headers["content-range"] == "bytes */0"
        whole = await raw_request(server.url, target)
        assert whole.status == 200 and whole.body == b""


async def test_if_range_with_stale_etag_serves_whole_file(repo: Repo) -> None:
    blob = content(500)
    target = "/blobs/" + repo.put(blob)
    async with serve_repository(repo.root) as server:
        etag = (await raw_request(server.url, target, method="HEAD")).headers["etag"]
        fresh = await raw_request(
            server.url, target, headers=f"Range: bytes=100-\r\nIf-Range: {etag}\r\n"
        )
        assert fresh.status == 206 and fresh.body == blob[100:]
        stale = await raw_request(
            server.url, target, headers='Range: bytes=100-\r\nIf-Range: "stale"\r\n'
        )
        assert stale.status == 200 and stale.body == blob
        not_modified = await raw_request(server.url, target, headers=f"If-None-Match: {etag}\r\n")
        assert not_modified.status == 304 and not_modified.body == b""


async def test_head_has_headers_and_no_body(repo: Repo) -> None:
    blob = content(4096)
    target = "/blobs/" + repo.put(blob)
    async with serve_repository(repo.root) as server:
        reply = await raw_request(server.url, target, method="HEAD")
        partial = await raw_request(
            server.url, target, method="HEAD", headers="Range: bytes=10-\r\n"
        )
    assert reply.status == 200 and reply.body == b""
    assert reply.headers["content-length"] == "4096"
    assert partial.status == 206 and partial.headers["content-range"] == "bytes 10-4095/4096"


async def test_write_methods_are_refused(repo: Repo) -> None:
    async with serve_repository(repo.root) as server:
        for method in ("POST", "PUT", "DELETE"):
            reply = await raw_request(server.url, "/index.json", method=method)
            assert reply.status == 405, method
    assert (repo.root / "index.json").exists()


async def test_requests_past_the_concurrency_bound_get_503(repo: Repo) -> None:
    target = "/blobs/" + repo.put(content(32 * 1024 * 1024))
    async with serve_repository(
        repo.root, limits=ServerLimits(max_concurrent_requests=1)
    ) as server:
        host, port = server.url.removeprefix("http://").split(":")
        async with await anyio.connect_tcp(host, int(port)) as slow_reader:
            # Ask for a big blob and read nothing: the server blocks in its first response.
            await slow_reader.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await wait_until(lambda: server.stats.active >= 1)
            busy = await raw_request(server.url, "/index.json")
        assert busy.status == 503
        assert busy.headers["retry-after"] == "1"
        assert server.stats.busy_refusals == 1
        await wait_until(lambda: not server.stats.active)
        assert (await raw_request(server.url, "/index.json")).status == 200


async def test_standalone_server_prints_url_and_exits_0_on_sigterm(repo: Repo) -> None:
    command = [sys.executable, "-m", "blackhole_sync_http", str(repo.root), "--port", "0"]
    async with await anyio.open_process(command, stderr=None) as process:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(20):
            while not output.endswith(b"\n"):
                output += await process.stdout.receive()
        url = output.decode().strip()
        assert url.startswith("http://127.0.0.1:")
        assert (await raw_request(url, "/root.json")).status == 200
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await process.wait() == 0


async def test_plugin_hooks_return_the_transport_and_server(repo: Repo) -> None:
    from importlib.metadata import entry_points

    import pluggy

    (entry,) = [e for e in entry_points(group="blackhole_sync") if e.name == "http"]
    plugin = entry.load()
    manager = pluggy.PluginManager("blackhole_sync")
    manager.register(plugin)
    (specs,) = manager.hook.blackhole_sync_transports()
    assert [spec.name for spec in specs] == ["http"]
    assert specs[0].schemes == {"http", "https"} and specs[0].backends == {"asyncio"}
    (server,) = manager.hook.blackhole_sync_server()
    urls: list[str] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await server.serve(repo.root, "127.0.0.1", 0, ready=urls.append)

        tg.start_soon(run)
        await wait_until(lambda: bool(urls))
        assert (await raw_request(urls[0], "/index.json")).status == 200
        tg.cancel_scope.cancel()
    assert len(urls) == 1 and not urls[0].endswith(":0")
