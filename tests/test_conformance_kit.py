"""The conformance kit reports like a test framework: a failure is an assertion naming the
check, whatever went wrong -- an assertion of the check, another exception of the transport,
or the check's time limit -- and a harness that exercises nothing is an error, not a pass."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from blackhole_sync.fetch import Locator
from blackhole_sync.testing import MemoryTransport, TransportUnderTest, check_transport, conformance

pytestmark = pytest.mark.anyio


def harness(transport_class: type[MemoryTransport]) -> Any:
    store: dict[str, bytes] = {}

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        async with transport_class(store=store) as transport:
            yield TransportUnderTest(
                transport,
                lambda data: transport.put(f"blobs/{len(data)}", data),
                lambda: MemoryTransport.locator("blobs/absent"),
            )

    return make


async def test_a_transport_that_raises_something_else_fails_as_an_assertion_naming_the_check() -> (
    None
):
    class Broken(MemoryTransport):
        async def fetch(self, locator: Locator, sink: Any, **kwargs: Any) -> None:
            raise RuntimeError("the plugin's own bug")

    with pytest.raises(AssertionError, match=r"conformance \[fetch\]: raised RuntimeError: "):
        await check_transport(harness(Broken), checks=["fetch"])


async def test_a_check_past_its_time_limit_fails_as_an_assertion_naming_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Hanging(MemoryTransport):
        async def fetch(self, locator: Locator, sink: Any, **kwargs: Any) -> None:
            await anyio.sleep_forever()

    monkeypatch.setattr(conformance, "CHECK_TIMEOUT", 0.2)
    with pytest.raises(AssertionError, match=r"conformance \[missing\]: did not finish within"):
        await check_transport(harness(Hanging), checks=["missing"])


async def test_the_length_cap_check_demands_length_exceeded_error() -> None:
    class Uncapped(MemoryTransport):
        async def fetch(
            self, locator: Locator, sink: Any, *, max_length: int, start: int = 0
        ) -> None:
            await super().fetch(locator, sink, max_length=1 << 40, start=start)

    with pytest.raises(AssertionError, match=r"\[length_cap\]"):
        await check_transport(harness(Uncapped), checks=["length_cap"])


async def test_a_harness_that_yields_something_else_is_named() -> None:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Any]:
        yield object()

    with pytest.raises(AssertionError, match=r"\[harness\]: make\(\) must yield"):
        await check_transport(make, checks=["fetch"])
