"""The spool transport passes the core's conformance kit, under asyncio and trio, and a node
installs a release through it."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bhs_spool import SpoolTransport
from bhs_spool.transport import path_to_url

from blackhole_sync import Locator
from blackhole_sync.testing import CHECKS, ScriptedValidator, TransportUnderTest, check_transport

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_conformance(tmp_path: Path) -> None:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        spool = tmp_path / "spool"
        validator = ScriptedValidator()  # both ends ask it, as both would ask the core
        async with (
            SpoolTransport(spool_dir=spool, message_validator=validator, peer_id="a") as mine,
            SpoolTransport(spool_dir=spool, message_validator=validator, peer_id="b") as peer,
        ):

            def put(data: bytes) -> Locator:
                path = spool / "blobs" / hashlib.sha256(data).hexdigest()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                return Locator.url(path_to_url(path))

            def missing() -> Locator:
                return Locator.url(path_to_url(spool / "blobs" / ("0" * 64)))

            yield TransportUnderTest(mine, put, missing, peer=peer, validator=validator)

    ran = await check_transport(make)
    assert ran == list(CHECKS)  # every check applied: fetch, range, publish, peer messages
