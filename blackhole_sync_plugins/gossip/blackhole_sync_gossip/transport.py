"""The gossip transport: the engine behind blackhole-sync's transport API (version 2).

:class:`GossipTransport` announces, subscribes and answers catch-up queries (capabilities
``announce``, ``subscribe``, ``query``; it fetches nothing). Every inbound message goes through
the core's ``message_validator`` before it is delivered or forwarded; its verdict maps one to
one onto the engine's (ACCEPT: deliver and forward; REJECT: drop and penalise the peer that
sent it; IGNORE: drop, no penalty).

How it runs, by anyio backend (detected when it is entered):

- **trio**: the engine's :class:`~blackhole_sync_gossip.GossipHost` runs in this trio run, in
  a task group of its own started as a trio system task (so several transports can be opened
  and closed in any order, which a task group entered in ``__aenter__`` would not allow);
  ``aclose`` stops it and waits until every socket is closed.
- **asyncio** (aiohttp, the CLI): py-libp2p is trio-only, so the host runs in its own trio
  thread (:class:`~blackhole_sync_gossip.AsyncioGossipBridge`); accepted messages cross back
  into the asyncio loop, each subscriber's buffer is bounded. ``aclose`` returns once that
  thread has ended.

What the transport adds to the engine:

- topics follow what the core does: the documented kinds
  (:data:`~blackhole_sync_gossip.DEFAULT_KINDS`) from the start, so a node relays all of them,
  and any other kind as soon as the core subscribes to it, announces it or queries it;
- ``announce`` decides the node's own payload with the validator (a payload peers would
  REJECT is not sent: sending it would get this node graylisted), waits (``announce_wait``,
  5 s) for a first mesh peer when it has none -- a one-shot announcer has just started -- and
  ``aclose`` flushes what is queued;
- ``query`` waits (``query_wait``, 5 s) for a first peer when it has none, then asks; and the
  transport answers peers' queries with the newest message of each kind it accepted or
  announced;
- accepted messages that arrive while nobody subscribes to their kind are kept (the newest
  :data:`BACKLOG` per kind) and handed to the first subscriber: the core's gate has already
  raised its floor for them, so dropping them would lose them for good;
- peers are remembered in ``NODE/gossip/peers.json`` and dialled again after a restart.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, ClassVar, Self

import anyio
import sniffio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from blackhole_sync import (
    CAP_ANNOUNCE,
    CAP_QUERY,
    CAP_SUBSCRIBE,
    BaseTransport,
    ConfigurationError,
    PeerMessage,
    PluginError,
    Verdict as CoreVerdict,
)

from ._config import check_kind
from ._spec import GOSSIP_TRANSPORT_SPEC
from ._types import GossipError, InboundMessage, Verdict
from .settings import TransportSettings, settings_from_options, write_peer_cache

__all__ = ["BACKLOG", "GOSSIP_TRANSPORT_SPEC", "GossipTransport", "SUBSCRIBER_BUFFER"]

log = logging.getLogger(__name__)

#: Accepted messages waiting for one slow subscriber; beyond this the newest are dropped.
SUBSCRIBER_BUFFER = 256
#: Accepted messages kept per kind while nobody subscribes to it.
BACKLOG = 16
#: Seconds aclose() waits for queued outbound messages to be written.
FLUSH_TIMEOUT = 2.0

_VERDICTS = {
    CoreVerdict.ACCEPT: Verdict.ACCEPT,
    CoreVerdict.REJECT: Verdict.REJECT,
    CoreVerdict.IGNORE: Verdict.IGNORE,
}


class _Subscription:
    """Accepted messages of some kinds for one subscriber (iterate it; ``aclose`` ends it)."""

    def __init__(self, transport: GossipTransport, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        self._transport = transport
        send, receive = anyio.create_memory_object_stream[PeerMessage](SUBSCRIBER_BUFFER)
        self._send: MemoryObjectSendStream[PeerMessage] = send
        self._receive: MemoryObjectReceiveStream[PeerMessage] = receive
        self._joined = False
        self.dropped = 0

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> PeerMessage:
        if not self._joined:
            self._joined = True
            await self._transport._join(self.kinds)
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def offer(self, message: PeerMessage) -> None:
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def end(self) -> None:
        self._send.close()

    async def aclose(self) -> None:
        self._send.close()
        self._receive.close()
        self._transport._forget(self)


class _Runner:
    """The engine, reached the same way under either backend."""

    peer_id: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``await host.<name>(*args)`` where the host runs."""
        raise NotImplementedError

    async def read(self, name: str, *args: Any) -> Any:
        """``host.<name>(*args)`` (a quick synchronous read) where the host runs."""
        raise NotImplementedError


class _TrioRunner(_Runner):
    """The host in this trio run: a system task with its own task group."""

    def __init__(self, make_host: Callable[..., Any], deliver: Callable[..., None]) -> None:
        self.host = make_host(on_message=deliver)
        self.peer_id = self.host.peer_id
        self._done: Any = None
        self._error: BaseException | None = None

    async def start(self) -> None:
        import trio

        started = trio.Event()
        self._done = done = trio.Event()

        async def main() -> None:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.host.run)
                    started.set()
            except Exception as exc:  # noqa: BLE001 - a system task must not raise
                self._error = exc
                log.warning("gossip host failed: %r", exc)
            finally:
                done.set()
                started.set()

        trio.lowlevel.spawn_system_task(main, name="blackhole-gossip-host")
        await started.wait()
        if self._error is not None:
            raise PluginError(f"the gossip host did not start: {self._error!r}") from self._error

    async def stop(self) -> None:
        if self._done is None:
            return
        self.host.stop()
        with anyio.CancelScope(shield=True):
            await self._done.wait()

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.host, name)(*args, **kwargs)

    async def read(self, name: str, *args: Any) -> Any:
        value = getattr(self.host, name)
        return value(*args) if callable(value) else value


class _AsyncioRunner(_Runner):
    """The host in a trio thread of its own (:class:`AsyncioGossipBridge`)."""

    def __init__(self, make_host: Callable[..., Any], deliver: Callable[..., None]) -> None:
        from ._bridge import AsyncioGossipBridge

        self.bridge = make_host(bridge=AsyncioGossipBridge, on_message=deliver)
        self.peer_id = self.bridge.peer_id

    async def start(self) -> None:
        await self.bridge.start()

    async def stop(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.bridge.stop()

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.bridge.host, name)

        async def run() -> Any:
            return await fn(*args, **kwargs)

        return await self.bridge.call(run)

    async def read(self, name: str, *args: Any) -> Any:
        host = self.bridge.host

        def get() -> Any:
            value = getattr(host, name)
            return value(*args) if callable(value) else value

        return await self.bridge.read(get)


class GossipTransport(BaseTransport):
    """libp2p GossipSub as a blackhole-sync peer transport (see the module docstring).

    Options (unknown ones are ignored): ``message_validator`` (required to start),
    ``network_id``, ``identity_key``, ``state_dir``, ``loopback_only``, ``node_config``,
    ``listen``, ``bootstrap`` -- the core's standard options -- and this plugin's own:

    ``hello`` (bytes)
        what this node says in ``/blackhole/hello/1`` right after Noise (default: the network
        id), e.g. a fork id;
    ``admit`` (``(peer_id, hello) -> bool``)
        whether to keep a peer given its hello (default: its hello equals ours); under
        asyncio it runs in the gossip thread, so keep it quick and thread-safe;
    ``admit_without_hello`` (bool)
        admit peers that speak no hello at all (Kubo), also ``[gossip] admit_without_hello``.
    """

    name: ClassVar[str] = "gossip"
    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_ANNOUNCE, CAP_SUBSCRIBE, CAP_QUERY})

    def __init__(self, **options: Any) -> None:
        super().__init__()  # the options are not kept: they hold the node's identity seed
        self.settings: TransportSettings = settings_from_options(options)
        self._validator: Callable[[PeerMessage], CoreVerdict] | None = options.get(
            "message_validator"
        )
        self._runner: _Runner | None = None
        self._backend = ""
        self._closed = False
        self._addresses: list[str] = []
        self._subs: list[_Subscription] = []
        self._newest: dict[str, bytes] = {}
        self._backlog: OrderedDict[str, deque[PeerMessage]] = OrderedDict()
        self._joined: set[str] = set(self.settings.engine.kinds)
        self._lock: anyio.Lock | None = None
        self._published = 0
        self.own_refused = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's libp2p peer id (derived from ``identity_key``); empty before start."""
        return self._runner.peer_id if self._runner is not None else ""

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._closed

    async def __aenter__(self) -> Self:
        """Start the host (idempotent while running); returns once it listens."""
        if self._closed:
            raise RuntimeError("this gossip transport was closed; make a new one")
        if self._runner is not None:
            return self
        if self._validator is None:
            raise ConfigurationError(
                "the gossip transport needs the core's message_validator: it delivers and "
                "forwards only what the validator accepts"
            )
        self._backend = sniffio.current_async_library()
        runner_type = _TrioRunner if self._backend == "trio" else _AsyncioRunner
        runner = runner_type(self._make_host, self._deliver)
        self._lock = anyio.Lock()
        try:
            await runner.start()
        except GossipError as exc:
            raise PluginError(f"the gossip host did not start: {exc}") from exc
        self._runner = runner
        self._addresses = list(await runner.read("listen_addrs"))
        log.info("gossip host %s listening on %s", runner.peer_id, ", ".join(self._addresses))
        return self

    def _make_host(self, *, bridge: Any = None, on_message: Callable[..., None]) -> Any:
        from ._host import GossipHost

        kwargs: dict[str, Any] = {
            "validate": self._validate,
            "answer": self._answer,
            "admit": self.settings.admit,
        }
        if bridge is not None:
            return bridge(self.settings.engine, on_message=on_message, **kwargs)
        return GossipHost(self.settings.engine, on_message=on_message, **kwargs)

    async def aclose(self) -> None:
        """Stop the host (flushing what is queued, remembering peers); idempotent."""
        if self._closed:
            return
        self._closed = self.closed = True
        runner, self._runner = self._runner, None
        for sub in list(self._subs):
            sub.end()
        if runner is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                if self._published:
                    await runner.call("flush", FLUSH_TIMEOUT)
                if self.settings.peer_cache is not None:
                    peers = await runner.read("known_peers", 64)
                    if peers:
                        await anyio.to_thread.run_sync(
                            write_peer_cache, self.settings.peer_cache, peers
                        )
            except (GossipError, OSError) as exc:
                log.warning("gossip transport: closing: %s", exc)
            finally:
                await runner.stop()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _require_runner(self) -> _Runner:
        if self._runner is None or self._closed:
            raise RuntimeError("the gossip transport is not running (use `async with`)")
        return self._runner

    # -- the engine's callbacks --------------------------------------------------------------

    def _validate(self, kind: str, payload: bytes, from_peer: str) -> Verdict:
        """Every inbound message, before it is delivered or forwarded (in the host's thread)."""
        assert self._validator is not None
        verdict = self._validator(PeerMessage(kind, payload, from_peer, self.name))
        return _VERDICTS.get(verdict, Verdict.REJECT)

    def _answer(self, kind: str) -> list[bytes]:
        newest = self._newest.get(kind)
        return [newest] if newest is not None else []

    def _deliver(self, message: InboundMessage) -> None:
        """An ACCEPTed message, in the caller's event loop thread."""
        peer_message = PeerMessage(message.kind, message.payload, message.from_peer, self.name)
        self._newest[message.kind] = message.payload
        takers = [s for s in self._subs if message.kind in s.kinds]
        if not takers:
            backlog = self._backlog.setdefault(message.kind, deque(maxlen=BACKLOG))
            backlog.append(peer_message)
            return
        for sub in takers:
            sub.offer(peer_message)

    # -- subscriptions and topics ------------------------------------------------------------

    async def _join(self, kinds: Iterable[str]) -> None:
        missing = [k for k in kinds if k not in self._joined]
        if not missing:
            return
        runner = self._require_runner()
        assert self._lock is not None
        async with self._lock:
            missing = [k for k in missing if k not in self._joined]
            if missing:
                await runner.call("add_kinds", missing)
                self._joined.update(missing)

    def _forget(self, sub: _Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def subscribe(self, kinds: Iterable[str]) -> AsyncIterator[PeerMessage]:
        """Accepted messages of ``kinds`` from now on (plus those kept while nobody listened).

        The kinds' topics are joined when iteration starts. Each subscriber has its own
        bounded buffer: one that falls behind misses messages (counted), never blocks others.
        """
        self._require_runner()
        wanted = frozenset(check_kind(k) for k in kinds)
        sub = _Subscription(self, wanted)
        self._subs.append(sub)
        for kind in wanted:
            for message in self._backlog.pop(kind, ()):
                sub.offer(message)
        return sub

    # -- sending and asking ------------------------------------------------------------------

    async def announce(self, kind: str, payload: bytes) -> None:
        """Spread a signed peer message (best effort; see the module docstring)."""
        runner = self._require_runner()
        check_kind(kind)
        payload = bytes(payload)
        if len(payload) > self.settings.engine.max_message_size:
            raise ValueError(
                f"a {kind} of {len(payload)} bytes exceeds the gossip cap "
                f"({self.settings.engine.max_message_size})"
            )
        assert self._validator is not None
        verdict = self._validator(PeerMessage(kind, payload, runner.peer_id, self.name))
        if verdict is CoreVerdict.REJECT:
            # Peers would reject it too and penalise us for it. (IGNORE is expected: the
            # core decides its own payload before handing it over, which raised its floor.)
            self.own_refused += 1
            log.warning("not announcing a %s the validator rejects", kind)
            return
        await self._join([kind])
        self._newest[kind] = payload
        if not await runner.read("mesh_peers", kind):
            await runner.call("wait_for_mesh", kind, timeout=self.settings.announce_wait)
        await runner.call("publish", kind, payload, validate=False)
        self._published += 1

    async def query(self, kind: str) -> list[PeerMessage]:
        """Peers' newest messages of ``kind`` (unverified: the core decides each)."""
        runner = self._require_runner()
        check_kind(kind)
        await self._join([kind])
        if not await runner.read("connected_peers"):
            await runner.call("wait_for_peers", 1, self.settings.query_wait)
        answers = await runner.call("query", kind)
        return [
            PeerMessage(kind, payload, answer.peer_id, self.name)
            for answer in answers
            for payload in answer.payloads
        ]

    def addresses(self) -> list[str]:
        """Multiaddrs peers can dial (``/ip4/.../tcp/.../p2p/<peer id>``)."""
        return list(self._addresses) if self.running else []

    # -- observation -------------------------------------------------------------------------

    async def counters(self) -> dict[str, int]:
        """The engine's counters plus the transport's own."""
        runner = self._require_runner()
        counts: dict[str, int] = dict(await runner.read("counters"))
        counts["own_refused"] = self.own_refused
        counts["subscriber_dropped"] = sum(s.dropped for s in self._subs)
        return counts

    async def peer_score(self, peer_id: str) -> float:
        return float(await self._require_runner().read("peer_score", peer_id))

    async def connected_peers(self) -> list[str]:
        return list(await self._require_runner().read("connected_peers"))

    async def effective_settings(self) -> dict[str, Any]:
        """What the host actually does (the engine's view) and where settings came from."""
        runner = self._require_runner()
        settings: dict[str, Any] = dict(await runner.read("effective_settings"))
        settings["backend"] = self._backend
        settings["thread"] = "own trio thread" if self._backend == "asyncio" else "caller's"
        settings["announce_wait_s"] = self.settings.announce_wait
        settings["query_wait_s"] = self.settings.query_wait
        settings["peer_cache"] = str(self.settings.peer_cache or "")
        settings["sources"] = dict(self.settings.sources or {})
        return settings

    async def call_engine(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Await ``GossipHost.<name>(*args)`` where the host runs (diagnostics and tests)."""
        return await self._require_runner().call(name, *args, **kwargs)

    async def read_engine(self, name: str, *args: Any) -> Any:
        """Read ``GossipHost.<name>`` (called with ``args`` if a method) where the host runs."""
        return await self._require_runner().read(name, *args)
