"""Parallel multi-source downloads: ranges split between sources, verified as a whole."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from blackhole_sync.documents import MetaFile
from blackhole_sync.errors import LengthOrHashMismatchError
from blackhole_sync.fetch.client import ClientLimits, RepositoryClient, TransportPool
from blackhole_sync.fetch.local import LocalTransport
from blackhole_sync.fetch.transport import TRANSPORT_API, Locator, Sink, TransportSpec

MiB = 1024 * 1024


class CountingLocal(LocalTransport):
    """The local transport, counting bytes per source directory; some sources are slow."""

    bytes_by_source: ClassVar[Counter[str]] = Counter()
    slow: ClassVar[frozenset[str]] = frozenset()

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        source = locator.value.rsplit("/blobs/", 1)[0].rsplit("/", 1)[-1]
        if source in self.slow:
            await anyio.sleep(0.05)

        class Counting:
            @property
            def received(self) -> int:
                return sink.received

            async def write(self, data: bytes) -> None:
                CountingLocal.bytes_by_source[source] += len(data)
                await sink.write(data)

        await super().fetch(locator, Counting(), max_length=max_length, start=start)


def make_sources(tmp_path: Path, data: bytes, names: list[str]) -> tuple[list[str], MetaFile]:
    meta = MetaFile.of(data)
    for name in names:
        (tmp_path / name / "blobs").mkdir(parents=True)
        (tmp_path / name / "blobs" / meta.sha256).write_bytes(data)
    return [str(tmp_path / name) for name in names], meta


def client(sources: list[str], **limits: Any) -> RepositoryClient:
    spec = TransportSpec(
        "counting-local",
        CountingLocal,
        api=TRANSPORT_API,
        backends={"asyncio", "trio"},
        schemes={"file"},
    )
    defaults = {"parallel_min_length": 1 * MiB, "parallel_chunk": 256 * 1024}
    defaults.update(limits)
    return RepositoryClient(sources, TransportPool([spec]), limits=ClientLimits(**defaults))


@pytest.fixture(autouse=True)
def reset_counters() -> None:
    CountingLocal.bytes_by_source = Counter()
    CountingLocal.slow = frozenset()


@pytest.mark.anyio
async def test_blob_is_split_between_two_sources_and_verifies(tmp_path: Path) -> None:
    data = os.urandom(4 * MiB)
    sources, meta = make_sources(tmp_path, data, ["a", "b"])
    c = client(sources)
    received = await c.fetch_blob(meta, tmp_path / "out")
    assert hashlib.sha256((tmp_path / "out").read_bytes()).hexdigest() == meta.sha256
    assert CountingLocal.bytes_by_source["a"] > 0 and CountingLocal.bytes_by_source["b"] > 0
    assert received == sum(CountingLocal.bytes_by_source.values())
    assert received <= meta.length + 2 * 256 * 1024  # at most a raced range or two extra


@pytest.mark.anyio
async def test_faster_source_serves_most_ranges_and_slow_one_cannot_hold_up_the_end(
    tmp_path: Path,
) -> None:
    data = os.urandom(4 * MiB)
    sources, meta = make_sources(tmp_path, data, ["fast", "slow"])
    CountingLocal.slow = frozenset({"slow"})
    await client(sources).fetch_blob(meta, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert CountingLocal.bytes_by_source["fast"] > 3 * CountingLocal.bytes_by_source["slow"]


@pytest.mark.anyio
async def test_source_missing_the_blob_is_dropped_and_others_finish(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB)
    sources, meta = make_sources(tmp_path, data, ["a", "b"])
    (tmp_path / "empty" / "blobs").mkdir(parents=True)
    c = client([str(tmp_path / "empty"), *sources])
    await c.fetch_blob(meta, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert any("empty" in locator for locator, _ in c.stats.failures)


@pytest.mark.anyio
async def test_source_serving_corrupt_ranges_cannot_poison_the_blob(tmp_path: Path) -> None:
    data = os.urandom(4 * MiB)
    sources, meta = make_sources(tmp_path, data, ["good", "evil"])
    evil = tmp_path / "evil" / "blobs" / meta.sha256
    evil.write_bytes(bytes(b ^ 0x55 for b in data[: 2 * MiB]) + data[2 * MiB :])
    await client(sources).fetch_blob(meta, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data  # the whole-file check caught it; refetched


@pytest.mark.anyio
async def test_every_source_corrupt_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    sources, meta = make_sources(tmp_path, data, ["x", "y"])
    for name in ("x", "y"):
        (tmp_path / name / "blobs" / meta.sha256).write_bytes(os.urandom(2 * MiB))
    with pytest.raises(LengthOrHashMismatchError):
        await client(sources).fetch_blob(meta, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.anyio
async def test_small_blobs_are_fetched_whole_from_one_source(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    sources, meta = make_sources(tmp_path, data, ["a", "b"])
    await client(sources).fetch_blob(meta, tmp_path / "out")
    assert CountingLocal.bytes_by_source == Counter({"a": len(data)})
