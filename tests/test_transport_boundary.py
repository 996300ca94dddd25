"""The plugin boundary: a plugin's own failures never break the fallback chain, optional
operations are declared, and a plugin written for another transport API is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from blackhole_sync.documents import MetaFile
from blackhole_sync.errors import (
    DownloadError,
    LengthOrHashMismatchError,
    MissingPluginError,
    PluginError,
)
from blackhole_sync.fetch import (
    CAP_FETCH,
    CAP_READ_RANGE,
    LOCAL_TRANSPORT_SPEC,
    TRANSPORT_API,
    BaseTransport,
    ClientLimits,
    GuardedTransport,
    Locator,
    RepositoryClient,
    Sink,
    TransportPool,
    TransportSpec,
    read_range,
)

PAYLOAD = b"the release artifact " * 1000


class BrokenDisk(BaseTransport):
    """A third-party transport with a bug: it lets OSError escape instead of DownloadError."""

    name: ClassVar[str] = "broken"

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        await sink.write(b"partial bytes")
        raise OSError(5, "Input/output error")


class LyingRanges(BaseTransport):
    """Declares ``read_range`` and answers with the wrong number of bytes."""

    name: ClassVar[str] = "liar"
    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_FETCH, CAP_READ_RANGE})

    async def read_range(
        self, locator: Locator, start: int, length: int, *, max_length: int
    ) -> bytes:
        return b"x" * (length + 1)


class NoRangeCapability(BaseTransport):
    """Has a ``read_range`` method but does not declare it: the core must not call it."""

    name: ClassVar[str] = "plain"
    called: ClassVar[int] = 0

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        await sink.write(PAYLOAD[start:])

    async def read_range(
        self, locator: Locator, start: int, length: int, *, max_length: int
    ) -> bytes:
        NoRangeCapability.called += 1
        return b""


def spec(
    name: str, factory: type[BaseTransport], scheme: str, api: int = TRANSPORT_API
) -> TransportSpec:
    return TransportSpec(name, factory, api=api, backends={"asyncio", "trio"}, schemes={scheme})


@pytest.mark.anyio
async def test_a_plugin_raising_oserror_falls_back_to_the_next_source(tmp_path: Path) -> None:
    meta = MetaFile.of(PAYLOAD)
    good = tmp_path / "good"
    (good / "blobs").mkdir(parents=True)
    (good / "blobs" / meta.sha256).write_bytes(PAYLOAD)
    pool = TransportPool([spec("broken", BrokenDisk, "broken"), LOCAL_TRANSPORT_SPEC])
    client = RepositoryClient(["broken://mirror/", str(good)], pool, limits=ClientLimits())
    with anyio.fail_after(10):
        await client.fetch_blob(meta, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == PAYLOAD
    [(where, why)] = client.stats.failures
    assert where.startswith("broken://") and "OSError" in why and "'broken'" in why


@pytest.mark.anyio
async def test_the_guard_wraps_foreign_errors_and_passes_the_library_s_own() -> None:
    guarded = GuardedTransport(BrokenDisk())

    class Sink_:
        received = 0

        async def write(self, data: bytes) -> None:
            pass

    with pytest.raises(DownloadError) as caught:
        await guarded.fetch(Locator.url("broken://x"), Sink_(), max_length=10)
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(DownloadError, match="got 5 of 4 range bytes"):
        await read_range(GuardedTransport(LyingRanges()), Locator.url("x://y"), 0, 4, max_length=8)

    class Refuses(BaseTransport):
        name: ClassVar[str] = "refuses"

        async def fetch(
            self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0
        ) -> None:
            raise LengthOrHashMismatchError("a security refusal of the plugin's own")

    with pytest.raises(LengthOrHashMismatchError) as own:
        await GuardedTransport(Refuses()).fetch(Locator.url("r://x"), Sink_(), max_length=10)
    assert own.value.__cause__ is None  # passed through, not wrapped


@pytest.mark.anyio
async def test_cancellation_passes_through_the_guard() -> None:
    class Hangs(BaseTransport):
        name: ClassVar[str] = "hangs"

        async def fetch(
            self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0
        ) -> None:
            await anyio.sleep_forever()

    with anyio.move_on_after(0.1) as scope:
        await GuardedTransport(Hangs()).fetch(Locator.url("h://x"), None, max_length=1)  # type: ignore[arg-type]
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_read_range_is_used_only_when_declared() -> None:
    NoRangeCapability.called = 0
    data = await read_range(
        NoRangeCapability(), Locator.url("p://x"), 10, 5, max_length=len(PAYLOAD)
    )
    assert data == PAYLOAD[10:15]
    assert NoRangeCapability.called == 0


def test_a_plugin_for_another_transport_api_is_refused_naming_it() -> None:
    old = spec("oldplugin", NoRangeCapability, "old", api=TRANSPORT_API - 1)
    pool = TransportPool([old])
    with pytest.raises(PluginError, match=r"'oldplugin' implements transport API 1.*API 2"):
        pool.for_locator(Locator.url("old://mirror/blobs/x"))


def test_a_spec_must_declare_its_api_and_backends() -> None:
    with pytest.raises(TypeError, match="api"):
        TransportSpec("x", NoRangeCapability, backends={"asyncio"})  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="backends"):
        TransportSpec("x", NoRangeCapability, api=TRANSPORT_API)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="backends"):
        TransportSpec("x", NoRangeCapability, api=TRANSPORT_API, backends={"curio"})


def test_an_unknown_scheme_names_the_plugin_to_install() -> None:
    pool = TransportPool([LOCAL_TRANSPORT_SPEC])
    with pytest.raises(MissingPluginError, match="blackhole-sync-bittorrent"):
        pool.for_locator(Locator("btih", "0" * 40))
