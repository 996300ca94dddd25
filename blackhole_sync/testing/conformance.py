"""Conformance checks every transport plugin runs: ``await check_transport(make)``.

``make`` is a zero-argument callable returning an async context manager that yields a
:class:`TransportUnderTest`: the transport, a way to place content where it can fetch it,
and a locator it cannot resolve. Each check enters a fresh one, so a harness that needs a
server (HTTP serving a directory, a Kubo node, a seeding swarm) starts and stops it there::

    @contextlib.asynccontextmanager
    async def make():
        async with serve_repository(tmp_path) as server, HttpTransport() as transport:
            async def put(data: bytes) -> Locator:
                sha = sha256_hex(data)
                (tmp_path / "blobs" / sha).write_bytes(data)
                return Locator.url(f"{server.url}/blobs/{sha}")
            yield TransportUnderTest(transport, put, lambda: Locator.url(f"{server.url}/blobs/{'0' * 64}"))

    await check_transport(make)

Peer-to-peer transports also hand over a second, connected instance (``peer``) built with
the same :class:`ScriptedValidator` as ``message_validator``: the announce/subscribe/query
checks run between the two. A transport without ``fetch`` (a pure gossip transport) passes
``put``/``missing`` as None and its fetch checks are skipped.

A failed check raises ``AssertionError`` naming the check and what went wrong; a run in which
no check applied raises too (a harness that exercises nothing is a broken harness).
"""

from __future__ import annotations

import inspect
import io
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
from attrs import define

from .._fsutil import sha256, sha256_hex
from ..errors import (
    BlobNotFoundError,
    LengthExceededError,
    LengthOrHashMismatchError,
)
from ..fetch import (
    CAP_ANNOUNCE,
    CAP_FETCH,
    CAP_PUBLISH,
    CAP_QUERY,
    CAP_RANGE,
    CAP_SUBSCRIBE,
    Locator,
    PeerMessage,
    Transport,
    Verdict,
    VerifyingSink,
)
from .timeouts import scaled

__all__ = [
    "CHECKS",
    "RecordingSink",
    "ScriptedValidator",
    "TransportUnderTest",
    "check_transport",
]

#: Size of the ordinary test blob: not a multiple of any usual chunk size.
BLOB_SIZE = 300_007
#: Size of the blob fetched when checking cancellation: several chunks for any transport.
CANCEL_BLOB_SIZE = 8 * 1024 * 1024
#: Writes a transport may still make after its scope was cancelled (a chunk in flight).
CANCEL_SLACK_WRITES = 2
#: Each check must finish within this many seconds (times BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE).
CHECK_TIMEOUT = 60.0
#: How long a peer message may take to arrive (a gossip mesh forms first).
DELIVERY_TIMEOUT = 20.0
#: Kind used by the peer-message checks.
KIND = "conformance"


class ScriptedValidator:
    """The ``message_validator`` a harness gives both transports; the checks script it.

    Payloads listed in ``verdicts`` get that verdict, others are accepted. Every call is
    recorded in ``seen`` (so a check can tell a transport that skipped validation).
    """

    def __init__(self) -> None:
        self.verdicts: dict[bytes, Verdict] = {}
        self.seen: list[PeerMessage] = []

    def __call__(self, message: PeerMessage) -> Verdict:
        self.seen.append(message)
        return self.verdicts.get(message.payload, Verdict.ACCEPT)


@define
class TransportUnderTest:
    """What a harness hands to :func:`check_transport`.

    ``put(data)`` places ``data`` where ``transport`` can fetch it and returns its locator
    (sync or async). ``missing()`` returns a locator of the same kind that names nothing.
    Both are None for a transport without ``fetch``. ``peer`` is a second instance
    connected to ``transport`` and ``validator`` the :class:`ScriptedValidator` both were
    built with (as their ``message_validator`` option), for the peer-message checks.
    """

    transport: Transport
    put: Callable[[bytes], Locator | Awaitable[Locator]] | None = None
    missing: Callable[[], Locator] | None = None
    peer: Transport | None = None
    validator: ScriptedValidator | None = None

    async def place(self, data: bytes) -> Locator:
        if self.put is None:
            raise _fail("harness", "this check needs put() but the harness gave none")
        result = self.put(data)
        if inspect.isawaitable(result):
            return await result
        return result

    def missing_locator(self) -> Locator:
        if self.missing is None:
            raise _fail("harness", "this check needs missing() but the harness gave none")
        return self.missing()


class RecordingSink:
    """A sink that keeps every byte and enforces nothing (so the transport must).

    ``initial`` bytes are taken as already received, as when resuming.
    """

    def __init__(self, initial: bytes = b"") -> None:
        self.data = bytearray(initial)
        self.writes = 0

    @property
    def received(self) -> int:
        return len(self.data)

    async def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1


class _CancellingSink(RecordingSink):
    def __init__(self, scope: anyio.CancelScope, after: int) -> None:
        super().__init__()
        self._scope = scope
        self._after = after
        self.writes_after_cancel = 0

    async def write(self, data: bytes) -> None:
        if self._scope.cancel_called:
            self.writes_after_cancel += 1
        await super().write(data)
        if self.received >= self._after:
            self._scope.cancel()


Make = Callable[[], AbstractAsyncContextManager[TransportUnderTest]]


def _content(size: int, seed: int) -> bytes:
    block = sha256(seed.to_bytes(8, "big")).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += sha256(block + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def _fail(check: str, message: str) -> AssertionError:
    return AssertionError(f"transport conformance [{check}]: {message}")


async def _check_fetch(tut: TransportUnderTest) -> None:
    for size in (BLOB_SIZE, 0, 1):
        content = _content(size, size)
        locator = await tut.place(content)
        buffer = io.BytesIO()
        sink = VerifyingSink(
            buffer,
            max_length=size,
            expected_length=size,
            expected_sha256=sha256_hex(content),
            source=str(locator),
        )
        await tut.transport.fetch(locator, sink, max_length=size)
        if buffer.getvalue() != content:
            raise _fail(
                "fetch", f"{size}-byte blob: got {len(buffer.getvalue())} bytes, not the content"
            )
        try:
            sink.verify()
        except LengthOrHashMismatchError as e:
            raise _fail("fetch", f"sink does not verify: {e}") from e


async def _check_length_cap(tut: TransportUnderTest) -> None:
    cap = BLOB_SIZE - 1
    content = _content(BLOB_SIZE, 2)
    locator = await tut.place(content)
    sink = RecordingSink()
    try:
        await tut.transport.fetch(locator, sink, max_length=cap)
    except LengthExceededError:
        pass
    else:
        raise _fail("length_cap", f"fetched {sink.received} bytes with a {cap}-byte cap, no error")
    if sink.received > cap:
        raise _fail("length_cap", f"the sink received {sink.received} bytes past the {cap} cap")
    exact = RecordingSink()
    await tut.transport.fetch(locator, exact, max_length=BLOB_SIZE)
    if bytes(exact.data) != content:
        raise _fail("length_cap", "a blob exactly at the cap was not delivered whole")


async def _check_missing(tut: TransportUnderTest) -> None:
    sink = RecordingSink()
    try:
        await tut.transport.fetch(tut.missing_locator(), sink, max_length=BLOB_SIZE)
    except BlobNotFoundError:
        pass
    else:
        raise _fail("missing", "fetching a missing blob did not raise BlobNotFoundError")
    if sink.received:
        raise _fail("missing", f"the sink received {sink.received} bytes for a missing blob")


async def _check_range(tut: TransportUnderTest) -> None:
    if CAP_RANGE not in tut.transport.capabilities:
        return
    content = _content(BLOB_SIZE, 3)
    locator = await tut.place(content)
    for start in (1, BLOB_SIZE // 2, BLOB_SIZE - 1, BLOB_SIZE):
        sink = RecordingSink(content[:start])
        await tut.transport.fetch(locator, sink, max_length=BLOB_SIZE, start=start)
        if bytes(sink.data) != content:
            raise _fail(
                "range",
                f"fetch(start={start}) delivered {sink.received - start} bytes that do not "
                "continue the prefix",
            )


async def _check_publish(tut: TransportUnderTest) -> None:
    if CAP_PUBLISH not in tut.transport.capabilities:
        return
    content = _content(BLOB_SIZE, 4)
    sha = sha256_hex(content)
    workdir = await anyio.to_thread.run_sync(tempfile.mkdtemp)
    try:
        path = Path(workdir) / "artifact"
        await anyio.Path(path).write_bytes(content)
        locators = await tut.transport.publish(path, sha256=sha)
        if not locators:
            raise _fail("publish", "publish returned no locator")
        sink = RecordingSink()
        await tut.transport.fetch(locators[0], sink, max_length=BLOB_SIZE)
        if bytes(sink.data) != content:
            raise _fail("publish", f"fetching {locators[0]} did not return the published bytes")
        try:
            await tut.transport.publish(path, sha256="0" * 64)
        except LengthOrHashMismatchError:
            pass
        else:
            raise _fail("publish", "publishing a file under the wrong sha256 was accepted")
    finally:
        await anyio.to_thread.run_sync(_rmtree, workdir)


def _rmtree(path: str) -> None:
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    os.rmdir(path)


async def _check_cancellation(tut: TransportUnderTest) -> None:
    content = _content(CANCEL_BLOB_SIZE, 5)
    locator = await tut.place(content)
    completed = False
    with anyio.CancelScope() as scope:
        sink = _CancellingSink(scope, after=1)
        try:
            await tut.transport.fetch(locator, sink, max_length=CANCEL_BLOB_SIZE)
        except Exception as e:
            raise _fail(
                "cancellation", f"cancelling the fetch raised {type(e).__name__}: {e}"
            ) from e
        completed = True
    if completed:
        raise _fail(
            "cancellation",
            "fetch returned normally after its scope was cancelled (it swallowed the "
            "cancellation or never checkpointed while streaming)",
        )
    if not scope.cancelled_caught:
        raise _fail("cancellation", "the cancellation did not propagate out of fetch")
    if sink.writes_after_cancel > CANCEL_SLACK_WRITES:
        raise _fail(
            "cancellation",
            f"{sink.writes_after_cancel} writes happened after cancellation; "
            "checkpoint between chunks",
        )
    if sink.received >= CANCEL_BLOB_SIZE:
        raise _fail("cancellation", "the whole blob was delivered despite the cancellation")


def _peer_ready(tut: TransportUnderTest, check: str) -> bool:
    needs = {CAP_ANNOUNCE} <= tut.transport.capabilities
    if tut.peer is None or not needs or CAP_SUBSCRIBE not in tut.peer.capabilities:
        return False
    if tut.validator is None:
        raise _fail(check, "peer checks need the ScriptedValidator both transports were built with")
    return True


async def _check_announce(tut: TransportUnderTest) -> None:
    assert tut.validator is not None
    message = await _receive_suffixed(tut, [b"conformance announcement"], set(), "announce")
    if message.kind != KIND:
        raise _fail("announce", f"delivered with kind {message.kind!r}, not {KIND!r}")
    if not any(m.payload == message.payload for m in tut.validator.seen):
        raise _fail("announce", "delivered without asking the message_validator")


async def _receive_suffixed(
    tut: TransportUnderTest, payloads: list[bytes], unwanted: set[bytes], check: str
) -> PeerMessage:
    """Subscribe on the peer, then announce ``payloads`` from the transport, each suffixed
    ``#<attempt>`` and repeated with a growing pause while a mesh forms, until the last one
    arrives; fail if one whose base payload is ``unwanted`` is delivered first."""
    assert tut.peer is not None
    subscription = tut.peer.subscribe([KIND])
    got: list[PeerMessage] = []
    try:
        with anyio.fail_after(scaled(DELIVERY_TIMEOUT)):
            async with anyio.create_task_group() as tg:

                async def receive() -> None:
                    async for message in subscription:
                        base = message.payload.rsplit(b"#", 1)[0]
                        if base in unwanted:
                            raise _fail(
                                check, f"a message the validator refused was delivered: {message}"
                            )
                        if base == payloads[-1]:
                            got.append(message)
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(receive)
                attempt = 0
                while True:
                    for payload in payloads:
                        await tut.transport.announce(KIND, payload + b"#%d" % attempt)
                    attempt += 1
                    await anyio.sleep(min(0.25 * attempt, 2.0))
    except TimeoutError as exc:
        raise _fail(check, f"no message reached the peer within {DELIVERY_TIMEOUT:g} s") from exc
    except BaseExceptionGroup as group:
        failures = group.subgroup(AssertionError)
        if failures is None:
            raise
        raise failures.exceptions[0] from None
    finally:
        closer = getattr(subscription, "aclose", None)
        if closer is not None:
            await closer()
    return got[0]


async def _check_validator(tut: TransportUnderTest) -> None:
    """Rejected and ignored messages are never delivered; later good ones still are."""
    assert tut.validator is not None
    rejected, ignored, good = b"conformance forged", b"conformance stale", b"conformance good"
    for n in range(256):  # announcements are suffixed "#<attempt>"
        tut.validator.verdicts[rejected + b"#%d" % n] = Verdict.REJECT
        tut.validator.verdicts[ignored + b"#%d" % n] = Verdict.IGNORE
    await _receive_suffixed(tut, [rejected, ignored, good], {rejected, ignored}, "validator")


async def _check_query(tut: TransportUnderTest) -> None:
    assert tut.peer is not None
    if CAP_QUERY not in tut.peer.capabilities:
        return
    payload = b"conformance newest"
    await _receive_suffixed(tut, [payload], set(), "query")  # both now hold it
    with anyio.fail_after(scaled(DELIVERY_TIMEOUT)):
        answers = await tut.transport.query(KIND)
    if not any(a.payload.rsplit(b"#", 1)[0] == payload for a in answers):
        raise _fail("query", f"the peer's newest {KIND!r} was not among {len(answers)} answers")
    if any(a.kind != KIND for a in answers):
        raise _fail("query", "an answer carried another kind")


async def _check_close(tut: TransportUnderTest) -> None:
    transport = tut.transport
    entered = await transport.__aenter__()
    if entered is not transport:
        raise _fail("close", "__aenter__ must return the transport itself")
    await transport.__aexit__(None, None, None)
    await transport.aclose()  # a second close is a no-op
    await transport.aclose()


#: The checks, in the order they run. ``close`` runs last: it closes the transport.
CHECKS: dict[str, Callable[[TransportUnderTest], Awaitable[None]]] = {
    "fetch": _check_fetch,
    "length_cap": _check_length_cap,
    "missing": _check_missing,
    "range": _check_range,
    "publish": _check_publish,
    "cancellation": _check_cancellation,
    "announce": _check_announce,
    "validator": _check_validator,
    "query": _check_query,
    "close": _check_close,
}

#: The capability each check needs (on ``transport``; peer checks also need a peer).
_NEEDS: dict[str, str] = {
    "fetch": CAP_FETCH,
    "length_cap": CAP_FETCH,
    "missing": CAP_FETCH,
    "cancellation": CAP_FETCH,
    "range": CAP_RANGE,
    "publish": CAP_PUBLISH,
    "announce": CAP_ANNOUNCE,
    "validator": CAP_ANNOUNCE,
    "query": CAP_QUERY,
}
_PEER_CHECKS = {"announce", "validator", "query"}


def _applies(name: str, tut: TransportUnderTest) -> bool:
    needed = _NEEDS.get(name)
    if needed is not None and needed not in tut.transport.capabilities:
        return False
    if name in _PEER_CHECKS:
        return _peer_ready(tut, name)
    return True


async def check_transport(make: Make, *, checks: Iterable[str] | None = None) -> list[str]:
    """Run the conformance checks against the transports ``make`` yields.

    Each check enters ``make()`` afresh. A check whose capability the transport does not
    declare is skipped (the fetch checks without ``fetch``, ``range``, ``publish``; the peer
    checks without ``announce`` on the transport, ``subscribe`` on a ``peer``, or ``query``).
    Returns the names of the checks that ran; raises ``AssertionError`` naming the check on the
    first failure -- an assertion of the check, any other exception, or the check's time limit
    (``CHECK_TIMEOUT`` times ``BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE``) -- and when no check but
    ``close`` ran. ``checks`` selects a subset by name (see :data:`CHECKS`).
    """
    selected = list(CHECKS) if checks is None else list(checks)
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks: {unknown}; known: {list(CHECKS)}")
    ran: list[str] = []
    for name in selected:
        limit = scaled(CHECK_TIMEOUT)
        try:
            with anyio.fail_after(limit) as scope:
                async with make() as tut:
                    if not isinstance(tut, TransportUnderTest):
                        raise _fail("harness", "make() must yield a TransportUnderTest")
                    if not _applies(name, tut):
                        continue
                    await CHECKS[name](tut)
                    ran.append(name)
        except AssertionError:
            raise
        except TimeoutError as exc:
            if scope.cancel_called:
                raise _fail(name, f"did not finish within {limit:g} s") from exc
            raise _fail(name, f"raised {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # the transport (or the harness) failed otherwise: say where
            raise _fail(name, f"raised {type(exc).__name__}: {exc}") from exc
    if not [name for name in ran if name != "close"]:
        raise _fail("harness", f"no conformance check applied (selected: {selected})")
    return ran
