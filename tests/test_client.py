"""RepositoryClient against misbehaving sources (real local repositories, a drip transport)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.documents.trust import TrustedState
from blackhole_sync.errors import SourceUnavailableError, StallError
from blackhole_sync.fetch.client import ClientLimits, RepositoryClient, TransportPool
from blackhole_sync.fetch.local import LOCAL_TRANSPORT_SPEC
from blackhole_sync.fetch.transport import (
    TRANSPORT_API,
    BaseTransport,
    Locator,
    Sink,
    TransportSpec,
)
from blackhole_sync.release import Repository


class DripTransport(BaseTransport):
    """A slow-drip source: one byte, then silence."""

    name = "drip"

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        await sink.write(b"{")
        await anyio.sleep_forever()


DRIP = TransportSpec(
    "drip", DripTransport, api=TRANSPORT_API, backends={"asyncio", "trio"}, schemes={"drip"}
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    key = PrivateKey.generate()
    Repository.init(
        tmp_path / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key, sign_with=[key],
    )  # fmt: skip
    return tmp_path / "repo"


def client(sources: list[str], **limits: Any) -> RepositoryClient:
    pool = TransportPool([DRIP, LOCAL_TRANSPORT_SPEC])
    return RepositoryClient(sources, pool, limits=ClientLimits(**limits))


@pytest.mark.anyio
async def test_slow_drip_source_is_abandoned_and_the_next_source_used(repo: Path) -> None:
    state = TrustedState((repo / "root.json").read_bytes())
    c = client(["drip://mirror/", str(repo)], document_timeout=0.5)
    with anyio.fail_after(10):
        assert await c.refresh(state) is True
    assert state.index is not None and state.index.version == 1


@pytest.mark.anyio
async def test_only_a_slow_drip_source_fails_with_a_typed_error_in_bounded_time(repo: Path) -> None:
    state = TrustedState((repo / "root.json").read_bytes())
    c = client(["drip://mirror/"], document_timeout=0.5)
    with anyio.fail_after(10), pytest.raises(SourceUnavailableError, match=r"within 0\.5 s"):
        await c.refresh(state)
    assert state.index is None
    with anyio.fail_after(10), pytest.raises(StallError):
        await c._fetch_doc("drip://mirror/", "index.json", max_length=1000, expected=None)
