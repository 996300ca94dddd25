"""The HTTP client transport against the real server and staged hostile mirrors."""

from __future__ import annotations

import contextlib
import io
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskGroup
from blackhole_sync_http import HttpTransport, TokenBucket, serve_repository
from http_helpers import HostileMirror, Repo, content, sha256, start_mirror, wait_until

from blackhole_sync.errors import (
    BlobNotFoundError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
    SourceUnavailableError,
    StallError,
)
from blackhole_sync.fetch.transport import Locator, VerifyingSink, fetch_with_fallback
from blackhole_sync.testing import TransportUnderTest, check_transport

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def verifying_sink(blob: bytes) -> tuple[io.BytesIO, VerifyingSink]:
    buffer = io.BytesIO()
    sink = VerifyingSink(
        buffer, max_length=len(blob), expected_length=len(blob), expected_sha256=sha256(blob)
    )
    return buffer, sink


async def test_http_transport_passes_conformance(repo: Repo) -> None:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        async with serve_repository(repo.root) as server, HttpTransport() as transport:
            yield TransportUnderTest(
                transport,
                lambda data: Locator.url(f"{server.url}/blobs/{repo.put(data)}"),
                lambda: Locator.url(f"{server.url}/blobs/{'0' * 64}"),
            )

    # No publish, announce, validator or query: HTTP fetches (and resumes) only.
    assert await check_transport(make) == [
        "fetch",
        "length_cap",
        "missing",
        "range",
        "cancellation",
        "close",
    ]


async def test_download_cut_at_random_points_resumes_without_resending(
    task_group: TaskGroup,
) -> None:
    blob = content(3_000_000, seed=7)
    mirror = await start_mirror(task_group, HostileMirror("cut", blob, seed=11))
    buffer, sink = verifying_sink(blob)
    async with HttpTransport(retries=100, backoff_initial=0) as transport:
        await transport.fetch(Locator.url(f"{mirror.url}/blob"), sink, max_length=len(blob))
    sink.verify()
    assert buffer.getvalue() == blob
    assert len(mirror.cuts) > 3  # it really was cut several times
    assert mirror.bytes_sent == len(blob)  # nothing was sent twice
    assert transport.stats.bytes_received == len(blob)
    assert transport.stats.retries == mirror.requests - 1


class CancelAfter:
    """Wraps a sink; cancels ``scope`` once ``limit`` bytes arrived (a cut connection)."""

    def __init__(self, sink: VerifyingSink, scope: anyio.CancelScope, limit: int) -> None:
        self.sink, self.scope, self.limit = sink, scope, limit

    @property
    def received(self) -> int:
        return self.sink.received

    async def write(self, data: bytes) -> None:
        await self.sink.write(data)
        if self.sink.received >= self.limit:
            self.scope.cancel()


async def test_interrupted_download_resumes_from_partial_file(repo: Repo, tmp_path: Path) -> None:
    blob = content(2_000_000, seed=3)
    digest = repo.put(blob)
    partial = tmp_path / "partial"
    async with serve_repository(repo.root) as server, HttpTransport() as transport:
        locator = Locator.url(f"{server.url}/blobs/{digest}")
        with partial.open("wb") as f, anyio.CancelScope() as scope:
            cutting = CancelAfter(VerifyingSink(f, max_length=len(blob)), scope, 700_000)
            await transport.fetch(locator, cutting, max_length=len(blob))
        assert scope.cancelled_caught
        await wait_until(lambda: not server.stats.active)  # the server saw the cut
        sent_before = server.stats.bytes_sent
        with partial.open("r+b") as f:
            resumed = VerifyingSink(
                f,
                max_length=len(blob),
                expected_length=len(blob),
                expected_sha256=digest,
                resume=True,
            )
            first = resumed.received
            assert 700_000 <= first < len(blob)
            await transport.fetch(locator, resumed, max_length=len(blob), start=first)
            resumed.verify()
        assert server.stats.bytes_sent - sent_before == len(blob) - first
    assert partial.read_bytes() == blob


async def test_parallel_ranges_from_two_mirrors_assemble_the_blob(tmp_path: Path) -> None:
    blob = content(1_000_001, seed=5)
    first, second = Repo(tmp_path / "a"), Repo(tmp_path / "b")
    digest = first.put(blob)
    second.put(blob)
    parts: dict[int, bytes] = {}
    async with (
        serve_repository(first.root) as a,
        serve_repository(second.root) as b,
        HttpTransport() as transport,
    ):
        half = len(blob) // 2

        async def get(url: str, start: int, length: int) -> None:
            locator = Locator.url(f"{url}/blobs/{digest}")
            parts[start] = await transport.read_range(locator, start, length, max_length=len(blob))

        async with anyio.create_task_group() as tg:
            tg.start_soon(get, a.url, 0, half)
            tg.start_soon(get, b.url, half, len(blob) - half)
        assert a.stats.bytes_sent == half and b.stats.bytes_sent == len(blob) - half
    assert parts[0] + parts[half] == blob


async def _fallback(bad: str, good: str, blob: bytes) -> tuple[bytes, list[BaseException]]:
    buffer, sink = verifying_sink(blob)
    failures: list[BaseException] = []
    async with HttpTransport(
        retries=1, backoff_initial=0, stall_window=0.5, stall_min_rate=1000
    ) as transport:
        used = await fetch_with_fallback(
            [(transport, Locator.url(bad)), (transport, Locator.url(good))],
            sink,
            on_failure=lambda _, exc: failures.append(exc),
        )
    assert used.value == good
    sink.verify()
    return buffer.getvalue(), failures


@contextlib.asynccontextmanager
async def origin_and_mirror(tmp_path: Path, blob: bytes) -> AsyncIterator[tuple[str, str, Repo]]:
    origin, mirror = Repo(tmp_path / "origin"), Repo(tmp_path / "mirror")
    digest = origin.put(blob)
    async with serve_repository(origin.root) as good, serve_repository(mirror.root) as bad:
        yield f"{bad.url}/blobs/{digest}", f"{good.url}/blobs/{digest}", mirror


async def test_mirror_missing_the_blob_404_falls_back(tmp_path: Path) -> None:
    blob = content(100_000)
    async with origin_and_mirror(tmp_path, blob) as (bad, good, _):
        got, failures = await _fallback(bad, good, blob)
    assert got == blob
    assert [type(e) for e in failures] == [BlobNotFoundError]


async def test_mirror_serving_stale_bytes_falls_back(tmp_path: Path) -> None:
    blob = content(100_000)
    async with origin_and_mirror(tmp_path, blob) as (bad, good, mirror):
        mirror.put(content(100_000, seed=99), name=sha256(blob))  # same name, other content
        got, failures = await _fallback(bad, good, blob)
    assert got == blob
    assert [type(e) for e in failures] == [LengthOrHashMismatchError]


async def test_mirror_serving_truncated_file_falls_back(tmp_path: Path) -> None:
    blob = content(100_000)
    async with origin_and_mirror(tmp_path, blob) as (bad, good, mirror):
        mirror.put(blob[:60_000], name=sha256(blob))
        got, failures = await _fallback(bad, good, blob)
    assert got == blob
    assert [type(e) for e in failures] == [LengthOrHashMismatchError]


async def test_mirror_serving_oversized_file_is_refused_before_the_body(tmp_path: Path) -> None:
    blob = content(100_000)
    async with origin_and_mirror(tmp_path, blob) as (bad, good, mirror):
        mirror.put(blob + b"trailing payload", name=sha256(blob))
        got, failures = await _fallback(bad, good, blob)
    assert got == blob
    assert [type(e) for e in failures] == [LengthExceededError]


async def test_mirror_answering_garbage_falls_back(tmp_path: Path, task_group: TaskGroup) -> None:
    blob = content(100_000)
    mirror = await start_mirror(task_group, HostileMirror("garbage"))
    async with origin_and_mirror(tmp_path, blob) as (_, good, _):
        got, failures = await _fallback(f"{mirror.url}/blob", good, blob)
    assert got == blob
    assert [type(e) for e in failures] == [SourceUnavailableError]
    assert mirror.requests == 2  # tried once, retried once, then abandoned


async def test_mirror_sending_a_4400_digit_content_range_is_a_download_error(
    task_group: TaskGroup,
) -> None:
    mirror = await start_mirror(task_group, HostileMirror("huge_range"))
    buffer, sink = verifying_sink(content(1000))
    async with HttpTransport(retries=0) as transport:
        with pytest.raises(DownloadError, match="Content-Range we did not ask for"):
            await transport.fetch(Locator.url(f"{mirror.url}/blob"), sink, max_length=1000)
    assert buffer.getvalue() == b""


async def test_object_store_403_for_a_missing_key_means_not_found(task_group: TaskGroup) -> None:
    mirror = await start_mirror(task_group, HostileMirror("forbidden"))
    async with HttpTransport() as transport:
        with pytest.raises(BlobNotFoundError):
            await transport.fetch(
                Locator.url(f"{mirror.url}/2.root.json"),
                io.BytesIO(),
                max_length=1000,  # type: ignore[arg-type]
            )
    assert mirror.requests == 1  # "not there" is an answer: no retries


async def test_mirror_stalling_after_headers_falls_back(
    tmp_path: Path, task_group: TaskGroup
) -> None:
    blob = content(100_000)
    mirror = await start_mirror(task_group, HostileMirror("stall"))
    async with origin_and_mirror(tmp_path, blob) as (_, good, _):
        with anyio.fail_after(10):
            got, failures = await _fallback(f"{mirror.url}/blob", good, blob)
    assert got == blob
    assert [type(e) for e in failures] == [StallError]


async def test_unreachable_mirror_is_source_unavailable() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there any more
    async with HttpTransport(retries=2, backoff_initial=0) as transport:
        with pytest.raises(SourceUnavailableError):
            await transport.fetch(
                Locator.url(f"http://127.0.0.1:{port}/blobs/x"),
                io.BytesIO(),
                max_length=1,  # type: ignore[arg-type]
            )
        assert transport.stats.requests == 3


async def test_endless_response_cut_at_cap_plus_one_with_bounded_memory(
    task_group: TaskGroup,
) -> None:
    cap = 16 * 1024 * 1024
    mirror = await start_mirror(task_group, HostileMirror("endless"))

    class Counting:
        received = 0

        async def write(self, data: bytes) -> None:
            self.received += len(data)

    sink = Counting()
    tracemalloc.start()
    try:
        async with HttpTransport() as transport:
            with pytest.raises(LengthExceededError):
                await transport.fetch(Locator.url(f"{mirror.url}/x"), sink, max_length=cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert transport.stats.bytes_received == cap + 1
    assert sink.received <= cap
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while streaming a {cap}-byte cap"


async def test_length_cap_refused_early_from_content_length(repo: Repo) -> None:
    digest = repo.put(content(1_000_000))
    async with serve_repository(repo.root) as server, HttpTransport() as transport:
        sink = io.BytesIO()
        with pytest.raises(LengthExceededError):
            await transport.fetch(
                Locator.url(f"{server.url}/blobs/{digest}"),
                VerifyingSink(sink, max_length=1000),
                max_length=1000,
            )
    assert transport.stats.bytes_received == 0


async def test_non_http_locator_is_caller_misuse() -> None:
    async with HttpTransport() as transport:
        with pytest.raises(ValueError):
            await transport.fetch(Locator.url("file:///etc/passwd"), io.BytesIO(), max_length=1)  # type: ignore[arg-type]


async def test_rate_limit_paces_a_real_download_with_injected_sleep(repo: Repo) -> None:
    blob = content(1_048_576)
    digest = repo.put(blob)
    clock = FakeClock()
    async with (
        serve_repository(repo.root) as server,
        HttpTransport(
            rate_limit=262_144, rate_burst=65_536, chunk_size=65_536, clock=clock, sleep=clock.sleep
        ) as transport,
    ):
        _, sink = verifying_sink(blob)
        await transport.fetch(
            Locator.url(f"{server.url}/blobs/{digest}"), sink, max_length=len(blob)
        )
    sink.verify()
    # 1 MiB at 256 KiB/s with a 64 KiB head start: exactly 3.75 s of waiting.
    assert sum(clock.slept) == pytest.approx(3.75, abs=1e-9)


async def test_token_bucket_is_exact_under_a_controllable_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1024, 256, clock=clock, sleep=clock.sleep)
    assert await bucket.take(256) == 0  # the burst is free
    assert await bucket.take(256) == 0.25  # then exactly rate-limited
    assert await bucket.take(1024) == 1.0  # larger than the bucket: debt, repaid exactly
    clock.now += 10  # idle time refills only up to the burst
    assert bucket.tokens == 256
    assert await bucket.take(512) == 0.25
    assert clock.now == 11.5
    assert clock.slept == [0.25, 1.0, 0.25]


async def test_token_bucket_shared_by_two_fetchers_halves_each_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, 100, clock=clock, sleep=clock.sleep)
    waits = [bucket.reserve(100), bucket.reserve(100), bucket.reserve(100)]
    assert waits == [0.0, 0.1, 0.2]


async def test_timeout_cancels_a_throttled_fetch_promptly(repo: Repo) -> None:
    digest = repo.put(content(20_000_000))
    async with (
        serve_repository(repo.root) as server,
        HttpTransport(rate_limit=1_000_000) as transport,
    ):
        with anyio.move_on_after(0.3) as scope:
            await transport.fetch(
                Locator.url(f"{server.url}/blobs/{digest}"),
                VerifyingSink(io.BytesIO(), max_length=20_000_000),
                max_length=20_000_000,
            )
        assert scope.cancelled_caught
        assert transport.stats.bytes_received < 2_000_000


async def test_closed_transport_refuses_to_fetch() -> None:
    transport = HttpTransport()
    await transport.aclose()
    with pytest.raises(RuntimeError):
        await transport.fetch(Locator.url("http://127.0.0.1:1/x"), io.BytesIO(), max_length=1)  # type: ignore[arg-type]
    assert isinstance(DownloadError("x"), Exception)
