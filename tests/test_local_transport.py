"""The local-directory and in-memory transports, under asyncio and trio."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from blackhole_sync.errors import (
    BlobNotFoundError,
    ConfigurationError,
    LengthExceededError,
    LengthOrHashMismatchError,
)
from blackhole_sync.fetch.local import (
    LOCAL_TRANSPORT_SPEC,
    LocalTransport,
    path_to_url,
    url_to_path,
)
from blackhole_sync.fetch.transport import (
    Locator,
    PeerMessage,
    Verdict,
    VerifyingSink,
    fetch_with_fallback,
)
from blackhole_sync.testing import (
    CHECKS,
    MEMORY_TRANSPORT_SPEC,
    MemoryHub,
    MemoryTransport,
    RecordingSink,
    ScriptedValidator,
    TransportUnderTest,
    check_transport,
)

pytestmark = pytest.mark.anyio


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_local_transport_passes_conformance(tmp_path: Path) -> None:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        source = tmp_path / "source"
        source.mkdir(exist_ok=True)

        def put(data: bytes) -> Locator:
            path = source / _sha(data)
            path.write_bytes(data)
            return Locator.url(path_to_url(path))

        async with LocalTransport(root=tmp_path / "repo") as transport:
            yield TransportUnderTest(
                transport, put, lambda: Locator.url(path_to_url(source / "absent"))
            )

    fetch_checks = ["fetch", "length_cap", "missing", "range", "publish", "cancellation"]
    assert await check_transport(make) == [*fetch_checks, "close"]


async def test_memory_transport_passes_conformance() -> None:
    store: dict[str, bytes] = {}

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        hub, validator = MemoryHub(), ScriptedValidator()
        options = {"store": store, "hub": hub, "message_validator": validator}
        async with MemoryTransport(**options) as transport, MemoryTransport(**options) as peer:
            yield TransportUnderTest(
                transport,
                lambda data: transport.put(f"blobs/{_sha(data)}", data),
                lambda: MemoryTransport.locator("blobs/absent"),
                peer=peer,
                validator=validator,
            )

    assert await check_transport(make) == list(CHECKS)


async def test_conformance_catches_a_transport_that_skips_its_validator() -> None:
    class Careless(MemoryTransport):
        def _receive(self, message: PeerMessage) -> None:  # delivers without asking
            for subscription in self._subscriptions:
                subscription.offer(message)

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        hub, validator = MemoryHub(), ScriptedValidator()
        options = {"hub": hub, "message_validator": validator}
        async with Careless(**options) as transport, Careless(**options) as peer:
            yield TransportUnderTest(transport, peer=peer, validator=validator)

    with pytest.raises(AssertionError, match=r"\[validator\].*refused was delivered"):
        await check_transport(make, checks=["validator"])


async def test_conformance_refuses_a_harness_that_exercises_nothing() -> None:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        async with MemoryTransport() as transport:
            yield TransportUnderTest(transport)  # no peer: no peer check can run

    with pytest.raises(AssertionError, match="no conformance check applied"):
        await check_transport(make, checks=["announce", "close"])


async def test_file_url_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dir with space" / "ü.bin"
    path.parent.mkdir()
    url = path_to_url(path)
    assert url.startswith("file:///")
    assert url_to_path(url) == path
    assert url_to_path("file://localhost" + str(path).replace(" ", "%20")) == path


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x",
        "file://evil.example.com/etc/passwd",
        "file:relative/path",
        "file:///tmp/x?query",
        "file:///tmp/x#fragment",
        "file:///tmp/%00x",
    ],
)
async def test_url_to_path_refuses_non_local_urls(url: str) -> None:
    with pytest.raises(ValueError):
        url_to_path(url)


async def test_publish_then_fetch_by_file_url(tmp_path: Path) -> None:
    content = b"artifact bytes" * 1000
    artifact = tmp_path / "artifact"
    artifact.write_bytes(content)
    async with LocalTransport(root=tmp_path / "repo") as transport:
        [locator] = await transport.publish(artifact, sha256=_sha(content))
        assert url_to_path(locator.value) == tmp_path / "repo" / "blobs" / _sha(content)
        buffer = io.BytesIO()
        sink = VerifyingSink(
            buffer,
            max_length=len(content),
            expected_length=len(content),
            expected_sha256=_sha(content),
        )
        await transport.fetch(locator, sink, max_length=len(content))
        sink.verify()
    assert buffer.getvalue() == content
    leftovers = [p.name for p in (tmp_path / "repo" / "blobs").iterdir()]
    assert leftovers == [_sha(content)]


async def test_publish_of_tampered_file_leaves_nothing(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.write_bytes(b"tampered")
    async with LocalTransport(root=tmp_path / "repo") as transport:
        with pytest.raises(LengthOrHashMismatchError):
            await transport.publish(artifact, sha256=_sha(b"original"))
    assert list((tmp_path / "repo" / "blobs").iterdir()) == []


async def test_publish_without_root_is_a_configuration_error(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.write_bytes(b"x")
    async with LocalTransport() as transport:
        with pytest.raises(ConfigurationError):
            await transport.publish(artifact, sha256=_sha(b"x"))


async def test_missing_file_is_blob_not_found(tmp_path: Path) -> None:
    async with LocalTransport() as transport:
        for path in (tmp_path / "absent", tmp_path / "absent" / "deeper", tmp_path):
            with pytest.raises(BlobNotFoundError):
                await transport.fetch(
                    Locator.url(path_to_url(path)), RecordingSink(), max_length=10
                )


async def test_oversized_file_refused_before_any_byte(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1001)
    sink = RecordingSink()
    async with LocalTransport() as transport:
        with pytest.raises(LengthExceededError):
            await transport.fetch(Locator.url(path_to_url(path)), sink, max_length=1000)
    assert sink.received == 0


async def test_mirror_serving_wrong_bytes_falls_back_to_next(tmp_path: Path) -> None:
    good = b"the real release" * 100
    bad_path, good_path = tmp_path / "bad", tmp_path / "good"
    bad_path.write_bytes(b"X" * len(good))
    good_path.write_bytes(good)
    failures: list[Locator] = []
    buffer = io.BytesIO()
    sink = VerifyingSink(
        buffer, max_length=len(good), expected_length=len(good), expected_sha256=_sha(good)
    )
    async with LocalTransport() as transport:
        used = await fetch_with_fallback(
            [
                (transport, Locator.url(path_to_url(tmp_path / "absent"))),
                (transport, Locator.url(path_to_url(bad_path))),
                (transport, Locator.url(path_to_url(good_path))),
            ],
            sink,
            on_failure=lambda loc, exc: failures.append(loc),
        )
    assert used.value == path_to_url(good_path)
    assert len(failures) == 2
    assert buffer.getvalue() == good


def _accept_all(message: PeerMessage) -> Verdict:
    return Verdict.ACCEPT


async def test_memory_announcements_reach_every_other_member() -> None:
    hub = MemoryHub()
    options = {"hub": hub, "message_validator": _accept_all}
    async with (
        MemoryTransport(peer_id="a", **options) as a,
        MemoryTransport(peer_id="b", **options) as b,
        MemoryTransport(peer_id="c", **options) as c,
    ):
        first = a.subscribe(["index"])
        third = c.subscribe(["index", "vote"])
        await b.announce("index", b"index v2")
        assert await first.__anext__() == PeerMessage("index", b"index v2", "b", "memory")
        assert (await third.__anext__()).payload == b"index v2"
        await first.aclose()  # type: ignore[attr-defined]
        await a.announce("vote", b"yes")
        assert await third.__anext__() == PeerMessage("vote", b"yes", "a", "memory")
        with pytest.raises(StopAsyncIteration):
            await first.__anext__()


async def test_memory_members_decide_with_their_own_validator() -> None:
    hub = MemoryHub()
    verdicts = {b"good": Verdict.ACCEPT, b"forged": Verdict.REJECT, b"stale": Verdict.IGNORE}

    def decide(message: PeerMessage) -> Verdict:
        return verdicts[message.payload]

    async with (
        MemoryTransport(hub=hub, peer_id="honest", message_validator=decide) as receiver,
        MemoryTransport(hub=hub, peer_id="sender") as sender,
    ):
        subscription = receiver.subscribe(["index"])
        for payload in (b"forged", b"stale", b"good"):
            await sender.announce("index", payload)
        with anyio.fail_after(5):
            assert (await subscription.__anext__()).payload == b"good"
        assert hub.penalties == {("honest", "sender"): 1}  # the ignored one costs nothing
        answers = await sender.query("index")
        assert [(m.peer, m.payload) for m in answers] == [("honest", b"good")]


async def test_memory_transport_refuses_to_subscribe_without_a_validator() -> None:
    async with MemoryTransport() as transport:
        with pytest.raises(ConfigurationError, match="message_validator"):
            transport.subscribe(["index"])


async def test_slow_memory_subscriber_drops_instead_of_blocking() -> None:
    hub = MemoryHub(buffer=2)
    async with (
        MemoryTransport(hub=hub) as sender,
        MemoryTransport(hub=hub, message_validator=_accept_all) as receiver,
    ):
        subscription = receiver.subscribe(["n"])
        with anyio.fail_after(5):
            for n in range(5):
                await sender.announce("n", str(n).encode())
        assert hub.dropped == 3
        assert [(await subscription.__anext__()).payload for _ in range(2)] == [b"0", b"1"]


async def test_specs_declare_schemes_and_both_backends() -> None:
    assert LOCAL_TRANSPORT_SPEC.handles(Locator.url("file:///x"))
    assert not LOCAL_TRANSPORT_SPEC.handles(Locator.url("http://x/"))
    assert MEMORY_TRANSPORT_SPEC.handles(Locator.url("memory://blobs/x"))
    assert LOCAL_TRANSPORT_SPEC.backends == MEMORY_TRANSPORT_SPEC.backends == {"asyncio", "trio"}
    assert isinstance(LOCAL_TRANSPORT_SPEC.factory(unknown_option=1), LocalTransport)
