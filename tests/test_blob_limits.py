"""Hole 6: a slow source cannot hold a blob download. The client's own minimum rate and per-blob
deadline (``ClientLimits``) apply to every transport; past them the next source continues.

The slow sources are real: a local transport that drips its file at a set rate, a transport
that never answers, and the HTTP plugin's client against an HTTP server that drips.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from slow_http import slow_source

from blackhole_sync.documents import MetaFile
from blackhole_sync.errors import StallError
from blackhole_sync.fetch.client import ClientLimits, RepositoryClient, TransportPool
from blackhole_sync.fetch.local import LocalTransport
from blackhole_sync.fetch.transport import (
    CAP_FETCH,
    CAP_RANGE,
    TRANSPORT_API,
    BaseTransport,
    Locator,
    Sink,
    TransportSpec,
)
from blackhole_sync.testing import scaled

KiB = 1024
MiB = 1024 * KiB


class DripLocal(LocalTransport):
    """A local repository behind a slow link: ``drip:///path`` sends ``RATE`` bytes/s."""

    name: ClassVar[str] = "drip"
    RATE: ClassVar[int] = 8 * KiB
    sent: ClassVar[Counter[str]] = Counter()

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        file_locator = Locator.url("file" + locator.value.removeprefix("drip"))
        step = max(1, self.RATE // 20)  # twenty writes a second

        class Dripping:
            @property
            def received(self) -> int:
                return sink.received

            async def write(self, data: bytes) -> None:
                for i in range(0, len(data), step):
                    await anyio.sleep(step / DripLocal.RATE)
                    await sink.write(data[i : i + step])
                    DripLocal.sent["drip"] += len(data[i : i + step])

        await super().fetch(file_locator, Dripping(), max_length=max_length, start=start)


class CountingLocal(LocalTransport):
    """The local transport, counting what it sends and from which byte it was asked."""

    sent: ClassVar[Counter[str]] = Counter()
    starts: ClassVar[list[int]] = []

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        CountingLocal.starts.append(start)

        class Counting:
            @property
            def received(self) -> int:
                return sink.received

            async def write(self, data: bytes) -> None:
                CountingLocal.sent["local"] += len(data)
                await sink.write(data)

        await super().fetch(locator, Counting(), max_length=max_length, start=start)


class Silent(BaseTransport):
    """Accepts the request and never sends a byte (``read_range`` via fetch, ranged)."""

    name: ClassVar[str] = "silent"
    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_FETCH, CAP_RANGE})

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        await anyio.sleep_forever()


def _spec(name: str, factory: Any, scheme: str) -> TransportSpec:
    return TransportSpec(
        name, factory, api=TRANSPORT_API, backends={"asyncio", "trio"}, schemes={scheme}
    )


DRIP = _spec("drip", DripLocal, "drip")
COUNTING = _spec("local", CountingLocal, "file")
SILENT = _spec("silent", Silent, "silent")


@pytest.fixture(autouse=True)
def _reset() -> None:
    DripLocal.RATE = 8 * KiB
    DripLocal.sent = Counter()
    CountingLocal.sent = Counter()
    CountingLocal.starts = []


def repository(tmp_path: Path, size: int) -> tuple[Path, bytes, MetaFile]:
    data = os.urandom(size)
    meta = MetaFile.of(data)
    (tmp_path / "repo" / "blobs").mkdir(parents=True)
    (tmp_path / "repo" / "blobs" / meta.sha256).write_bytes(data)
    return tmp_path / "repo", data, meta


def make_client(sources: list[str], specs: list[TransportSpec], **limits: Any) -> RepositoryClient:
    options = {"rate_limit": limits.pop("rate_limit")} if "rate_limit" in limits else {}
    return RepositoryClient(sources, TransportPool(specs, options), limits=ClientLimits(**limits))


@pytest.mark.anyio
async def test_a_source_below_the_minimum_rate_is_dropped_within_one_window_and_the_next_continues(
    tmp_path: Path,
) -> None:
    repo, data, meta = repository(tmp_path, 1 * MiB)
    c = make_client(
        [f"drip://{repo}/", str(repo)],
        [DRIP, COUNTING],
        blob_min_rate=64 * KiB,
        blob_rate_window=0.5,
    )
    begun = time.monotonic()
    with anyio.fail_after(scaled(30)):
        fetched = await c.fetch_blob(meta, tmp_path / "out")
    elapsed = time.monotonic() - begun
    assert (tmp_path / "out").read_bytes() == data
    assert elapsed < 0.5 + scaled(2.0)  # one window, then the fast source
    [(where, why)] = c.stats.failures
    assert where.startswith("drip://") and "StallError" in why and "slower than" in why
    dripped = DripLocal.sent["drip"]
    assert 0 < dripped < 64 * KiB
    # the next source continued after the bytes already there: it sent only the rest
    assert CountingLocal.starts == [dripped]
    assert CountingLocal.sent["local"] == len(data) - dripped
    assert fetched == len(data)


@pytest.mark.anyio
async def test_a_source_just_above_the_minimum_rate_is_cut_at_the_blob_deadline(
    tmp_path: Path,
) -> None:
    repo, data, meta = repository(tmp_path, 1 * MiB)
    DripLocal.RATE = 128 * KiB  # twice the floor: it would take 8 s
    c = make_client(
        [f"drip://{repo}/", str(repo)],
        [DRIP, COUNTING],
        blob_min_rate=64 * KiB,
        blob_rate_window=0.5,
        blob_deadline_base=0.2,
        blob_deadline_rate=1 * MiB,  # 0.2 s + 1 MiB / (1 MiB/s) = 1.2 s for this blob
    )
    begun = time.monotonic()
    with anyio.fail_after(scaled(30)):
        await c.fetch_blob(meta, tmp_path / "out")
    elapsed = time.monotonic() - begun
    assert (tmp_path / "out").read_bytes() == data
    assert 1.2 <= elapsed < 1.2 + scaled(2.0)
    assert DripLocal.sent["drip"] < len(data) // 2  # cut long before it would have ended
    [(where, why)] = c.stats.failures
    assert where.startswith("drip://") and "StallError" in why and "deadline of 1 s" in why
    assert CountingLocal.sent["local"] == len(data) - DripLocal.sent["drip"]


@pytest.mark.anyio
async def test_only_slow_sources_fail_with_a_stall_error_in_bounded_time(tmp_path: Path) -> None:
    repo, _data, meta = repository(tmp_path, 256 * KiB)
    c = make_client(
        [f"drip://{repo}/", "silent://mirror/"],
        [DRIP, SILENT],
        blob_min_rate=64 * KiB,
        blob_rate_window=0.3,
    )
    with anyio.fail_after(scaled(30)), pytest.raises(StallError):
        await c.fetch_blob(meta, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [why.split(":")[0] for _, why in c.stats.failures] == ["StallError", "StallError"]


@pytest.mark.anyio
async def test_the_nodes_own_bandwidth_limit_does_not_trip_the_minimum_rate(tmp_path: Path) -> None:
    repo, data, meta = repository(tmp_path, 32 * KiB)
    DripLocal.RATE = 16 * KiB  # a source sending as fast as the node's limit lets it
    limits = {"blob_min_rate": 64 * KiB, "blob_rate_window": scaled(1.0)}
    unlimited = make_client([f"drip://{repo}/"], [DRIP], **limits)
    with anyio.fail_after(scaled(30)), pytest.raises(StallError):
        await unlimited.fetch_blob(meta, tmp_path / "a")  # below the floor: dropped
    limited = make_client([f"drip://{repo}/"], [DRIP], **limits, rate_limit=16 * KiB)
    with anyio.fail_after(scaled(30)):
        await limited.fetch_blob(meta, tmp_path / "b")  # the floor is now 8 KiB/s
    assert (tmp_path / "b").read_bytes() == data
    assert limited.stats.failures == []


class WholeOnly(CountingLocal):
    """The local transport without the ``range`` capability (it only sends whole files)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_FETCH})


@pytest.mark.anyio
async def test_silent_sources_cannot_hold_a_parallel_fetch_past_the_range_deadline(
    tmp_path: Path,
) -> None:
    repo, data, meta = repository(tmp_path, 2 * MiB)
    c = make_client(
        ["silent://a/", "silent://b/", str(repo)],
        [SILENT, _spec("whole", WholeOnly, "file")],
        parallel_min_length=1 * MiB,
        parallel_chunk=256 * KiB,
        blob_min_rate=64 * KiB,
        blob_rate_window=0.3,
        blob_deadline_base=0.3,
        blob_deadline_rate=1 * MiB,  # a 256 KiB range: 0.55 s
    )
    begun = time.monotonic()
    with anyio.fail_after(scaled(30)):
        await c.fetch_blob(meta, tmp_path / "out")
    elapsed = time.monotonic() - begun
    assert (tmp_path / "out").read_bytes() == data
    # both ranged sources gave up their first range at its deadline, then each was tried
    # alone (one rate window each) before the source that only sends whole files
    assert elapsed < 0.55 + 2 * 0.3 + scaled(2.0)
    failures = [(where.split(":")[1][2:3], why.split(":")[0]) for where, why in c.stats.failures]
    assert sorted(failures) == [("a", "StallError")] * 2 + [("b", "StallError")] * 2
    assert CountingLocal.starts == [0] and CountingLocal.sent["local"] == len(data)


def test_the_limits_are_documented_with_their_defaults() -> None:
    limits = ClientLimits()
    assert limits.blob_min_rate == 16 * KiB and limits.blob_rate_window == 30.0
    assert limits.blob_deadline_base == 120.0 and limits.blob_deadline_rate == 64 * KiB
    docs = (Path(__file__).parent.parent / "docs" / "limits.rst").read_text()
    assert "blackhole_sync.fetch.client.ClientLimits" in docs
    source = Path(__import__("blackhole_sync.fetch.client").fetch.client.__file__).read_text()
    for name in ("blob_min_rate", "blob_rate_window", "blob_deadline_base", "blob_deadline_rate"):
        assert f"    {name}:" in source
    with pytest.raises(ValueError):
        ClientLimits(blob_rate_window=0)
    with pytest.raises(ValueError):
        ClientLimits(blob_min_rate=-1)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the HTTP plugin runs under asyncio
@pytest.mark.anyio
async def test_the_http_transport_is_held_to_the_same_limits_against_a_dripping_server(
    tmp_path: Path, anyio_backend: str
) -> None:
    pytest.importorskip("blackhole_sync_http")
    from blackhole_sync_http.plugin import HTTP_TRANSPORT_SPEC  # type: ignore[import-not-found]

    repo, data, meta = repository(tmp_path, 512 * KiB)
    # 16 KiB/s: four times the HTTP plugin's own stall floor, a quarter of the core's here
    with slow_source(repo, rate=16 * KiB, chunk=1024) as server:
        c = make_client(
            [server.url, str(repo)],
            [HTTP_TRANSPORT_SPEC, COUNTING],
            blob_min_rate=64 * KiB,
            blob_rate_window=0.5,
        )
        try:
            begun = time.monotonic()
            with anyio.fail_after(scaled(30)):
                await c.fetch_blob(meta, tmp_path / "out")
            elapsed = time.monotonic() - begun
        finally:
            await c.pool.aclose()
        assert (tmp_path / "out").read_bytes() == data
        assert elapsed < 0.5 + scaled(2.0)
        [(where, why)] = c.stats.failures
        assert where.startswith("http://127.0.0.1:") and "StallError" in why
        served_over_http = server.blob_bytes_sent
    assert CountingLocal.starts and CountingLocal.starts[0] > 0
    assert CountingLocal.sent["local"] == len(data) - CountingLocal.starts[0]
    assert served_over_http >= CountingLocal.starts[0]
