"""Resumable downloads (the node operator's story in issue 9): a blob download keeps its bytes in
``NODE/partial/<sha256>`` across interruptions, re-hashes them on resume (never trusting them),
continues by range and verifies the whole; what does not verify is discarded.

Library-level tests here, against real local repositories; the command-line ones (a real
``node update`` killed with SIGKILL) are in ``test_cli_downloads.py``.
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from blackhole_sync.documents import MetaFile
from blackhole_sync.errors import LengthOrHashMismatchError, SourceUnavailableError
from blackhole_sync.fetch.client import ClientLimits, RepositoryClient, TransportPool
from blackhole_sync.fetch.local import LocalTransport
from blackhole_sync.fetch.transport import (
    TRANSPORT_API,
    Locator,
    ProgressEvent,
    Sink,
    TransportSpec,
)
from blackhole_sync.metrics import UpdateMetrics
from blackhole_sync.node.layout import NodeLayout
from blackhole_sync.node.partials import partial_file, prune_partials

KiB = 1024
MiB = 1024 * KiB


class Source(LocalTransport):
    """The local transport, counting bytes and start offsets; ``CUT_AT`` bytes in, it fails."""

    sent: ClassVar[Counter[str]] = Counter()
    starts: ClassVar[list[int]] = []
    CUT_AT: ClassVar[int | None] = None

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        Source.starts.append(start)

        class Counting:
            @property
            def received(self) -> int:
                return sink.received

            async def write(self, data: bytes) -> None:
                cut = Source.CUT_AT
                if cut is not None and sink.received + len(data) > cut:
                    data = data[: cut - sink.received]
                    await sink.write(data)
                    Source.sent["bytes"] += len(data)
                    raise SourceUnavailableError("connection reset by peer")
                Source.sent["bytes"] += len(data)
                await sink.write(data)

        await super().fetch(locator, Counting(), max_length=max_length, start=start)


SOURCE = TransportSpec(
    "local", Source, api=TRANSPORT_API, backends={"asyncio", "trio"}, schemes={"file"}
)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Source.sent = Counter()
    Source.starts = []
    Source.CUT_AT = None


def setup(tmp_path: Path, size: int = 1 * MiB) -> tuple[Path, bytes, MetaFile, Path]:
    data = os.urandom(size)
    meta = MetaFile.of(data)
    (tmp_path / "repo" / "blobs").mkdir(parents=True)
    (tmp_path / "repo" / "blobs" / meta.sha256).write_bytes(data)
    (tmp_path / "partial").mkdir(mode=0o700)
    (tmp_path / "staging").mkdir()
    return tmp_path / "repo", data, meta, tmp_path / "partial" / meta.sha256


def client(repo: Path, **kwargs: Any) -> RepositoryClient:
    return RepositoryClient([str(repo)], TransportPool([SOURCE]), limits=ClientLimits(), **kwargs)


@pytest.mark.anyio
async def test_a_download_cut_off_keeps_its_bytes_and_the_next_attempt_continues_after_them(
    tmp_path: Path,
) -> None:
    repo, data, meta, partial = setup(tmp_path)
    Source.CUT_AT = 700 * KiB
    with pytest.raises(SourceUnavailableError):
        await client(repo).fetch_blob(meta, tmp_path / "staging" / "blob", partial=partial)
    assert partial.read_bytes() == data[: 700 * KiB]
    assert not (tmp_path / "staging" / "blob").exists()

    Source.CUT_AT = None
    Source.sent.clear()
    c = client(repo)
    fetched = await c.fetch_blob(meta, tmp_path / "staging" / "blob", partial=partial)
    assert (tmp_path / "staging" / "blob").read_bytes() == data
    assert not partial.exists()
    assert Source.starts[-1] == 700 * KiB
    assert Source.sent["bytes"] == fetched == len(data) - 700 * KiB
    assert c.stats.failures == []


@pytest.mark.anyio
async def test_a_tampered_partial_file_is_discarded_and_the_blob_still_verifies(
    tmp_path: Path,
) -> None:
    repo, data, meta, partial = setup(tmp_path)
    tampered = bytearray(data[: 600 * KiB])
    tampered[1000] ^= 0xFF
    partial.write_bytes(bytes(tampered))
    c = client(repo)
    await c.fetch_blob(meta, tmp_path / "staging" / "blob", partial=partial)
    assert (tmp_path / "staging" / "blob").read_bytes() == data
    assert not partial.exists()
    # resumed after the kept bytes; the whole did not verify, so once more from byte 0
    assert Source.starts == [600 * KiB, 0]
    assert Source.sent["bytes"] == (len(data) - 600 * KiB) + len(data)
    assert c.stats.failures == []  # the source was not at fault


@pytest.mark.anyio
async def test_a_source_serving_wrong_bytes_leaves_nothing_to_resume_from(tmp_path: Path) -> None:
    repo, data, meta, partial = setup(tmp_path)
    (repo / "blobs" / meta.sha256).write_bytes(os.urandom(len(data)))
    with pytest.raises(LengthOrHashMismatchError):
        await client(repo).fetch_blob(meta, tmp_path / "staging" / "blob", partial=partial)
    assert not partial.exists()
    assert not (tmp_path / "staging" / "blob").exists()


@pytest.mark.anyio
async def test_a_partial_file_is_never_followed_or_trusted_beyond_the_blob(tmp_path: Path) -> None:
    repo, data, meta, partial = setup(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    partial.symlink_to(victim)
    await client(repo).fetch_blob(meta, tmp_path / "staging" / "a", partial=partial)
    assert victim.read_bytes() == b"not yours"
    assert (tmp_path / "staging" / "a").read_bytes() == data

    partial.write_bytes(data + b"more than the signed length")
    Source.starts.clear()
    await client(repo).fetch_blob(meta, tmp_path / "staging" / "b", partial=partial)
    assert (tmp_path / "staging" / "b").read_bytes() == data
    assert Source.starts == [0]


@pytest.mark.anyio
async def test_a_whole_partial_file_is_verified_and_used_without_fetching(tmp_path: Path) -> None:
    repo, data, meta, partial = setup(tmp_path)
    partial.write_bytes(data)
    fetched = await client(repo).fetch_blob(meta, tmp_path / "staging" / "blob", partial=partial)
    assert fetched == 0 and Source.starts == []
    assert (tmp_path / "staging" / "blob").read_bytes() == data


@pytest.mark.anyio
async def test_a_cancelled_download_keeps_its_partial_file(tmp_path: Path) -> None:
    repo, data, meta, partial = setup(tmp_path)
    with anyio.CancelScope() as scope:

        def stop_part_way(event: ProgressEvent) -> None:  # the agent stopping, a Ctrl-C
            if event.received >= 100 * KiB:
                scope.cancel()

        c = client(repo, progress=stop_part_way)
        await c.fetch_blob(meta, tmp_path / "staging" / "blob", partial=partial)
    assert scope.cancelled_caught
    kept = partial.stat().st_size
    assert 100 * KiB <= kept < len(data)
    assert partial.read_bytes() == data[:kept]
    assert not (tmp_path / "staging" / "blob").exists()


@pytest.mark.anyio
async def test_progress_of_a_resumed_download_starts_at_the_kept_bytes_and_counts_only_new_ones(
    tmp_path: Path,
) -> None:
    repo, data, meta, partial = setup(tmp_path)
    partial.write_bytes(data[: 512 * KiB])
    events: list[ProgressEvent] = []
    metrics = UpdateMetrics()
    metrics.start_download()

    def on_progress(event: ProgressEvent) -> None:
        events.append(event)
        metrics.on_progress(event)

    await client(repo, progress=on_progress).fetch_blob(
        meta, tmp_path / "staging" / "blob", partial=partial
    )
    first = events[0]
    assert (first.received, first.total, first.resumed) == (512 * KiB, len(data), 512 * KiB)
    assert events[-1].received == len(data)
    assert sum(metrics.bytes_by_source.values()) == len(data) - 512 * KiB
    assert metrics.download_progress == 10_000


def test_the_partial_directory_is_private_and_bounded_in_age_and_size(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path)
    digests = [f"{i:064x}" for i in range(4)]
    path = partial_file(layout, digests[0], 100)
    assert path == layout.partial(digests[0])
    assert stat.S_IMODE(layout.partial_dir.stat().st_mode) == 0o700
    now = time.time()
    for age, digest in zip((10 * 86400, 3000, 2000, 1000), digests, strict=True):
        layout.partial(digest).write_bytes(b"x" * 400)
        os.utime(layout.partial(digest), (now - age, now - age))
    (layout.partial_dir / "not-a-digest").write_bytes(b"?")
    # too old, not a blob name, then the oldest until 200 more bytes fit in 1000
    removed = prune_partials(layout, keep=[digests[1]], room=200, max_bytes=1000, now=now)
    assert sorted(removed) == sorted([digests[0], "not-a-digest", digests[2]])
    assert sorted(os.listdir(layout.partial_dir)) == sorted([digests[1], digests[3]])
    # a blob larger than the whole cap is downloaded without a partial file
    assert partial_file(layout, digests[1], 2000, max_bytes=1000) is None
