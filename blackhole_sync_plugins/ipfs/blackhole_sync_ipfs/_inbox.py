"""Inbound peer messages: Kubo pubsub -> limits -> the core's validator -> the subscriber.

A message arrives on a topic ``/blackhole/<network>/<kind>/1`` (the gossip plugin's topics).
Before anything parses it: the node's own messages (Kubo hands them back) are dropped; a payload
over ``max_message_size`` is dropped; a peer over its message rate, or muted after too many
rejected messages, is dropped. Then the core's ``message_validator`` decides, on a worker
thread (it verifies signatures and persists seq floors): only ``ACCEPT`` is delivered.

What Kubo's pubsub does not let a plugin do: Kubo's gossipsub forwards a message to its mesh
before the application sees it, so a message the validator rejects has already been relayed,
and its sender cannot be penalised in Kubo's peer scores. The muting here only stops this node
from spending work on that peer.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

import anyio
import anyio.to_thread

from blackhole_sync.errors import DownloadError
from blackhole_sync.fetch import MessageValidator, PeerMessage, Verdict

from ._api import IpfsBackend, PubsubMessage, Subscription
from ._errors import IpfsError

__all__ = ["Inbox", "InboundGuard"]

#: Peers whose limits are tracked at once (least recently seen forgotten first).
MAX_TRACKED_PEERS = 1024


class _PeerState:
    __slots__ = ("muted_until", "rejects", "stamp", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.stamp = now
        self.rejects = 0
        self.muted_until = 0.0


class InboundGuard:
    """Per-peer limits applied before validation, shared by a transport's subscriptions.

    A token bucket per peer (``rate`` messages per second, ``burst`` at once); a peer whose
    messages were rejected ``reject_limit`` times is muted for ``mute_seconds``. ``counts``
    tallies what happened to every inbound message.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        reject_limit: int,
        mute_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.reject_limit = reject_limit
        self.mute_seconds = mute_seconds
        self._clock = clock
        self._peers: OrderedDict[str, _PeerState] = OrderedDict()
        self.counts: dict[str, int] = {
            "own": 0,
            "oversized": 0,
            "rate": 0,
            "muted": 0,
            "accept": 0,
            "reject": 0,
            "ignore": 0,
        }

    def _state(self, peer: str) -> _PeerState:
        now = self._clock()
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _PeerState(float(self.burst), now)
            while len(self._peers) > MAX_TRACKED_PEERS:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
            state.tokens = min(float(self.burst), state.tokens + (now - state.stamp) * self.rate)
            state.stamp = now
        return state

    def admit(self, peer: str) -> bool:
        """May a message from ``peer`` be validated now? (Takes a token when it may.)"""
        state = self._state(peer)
        if state.muted_until > self._clock():
            self.counts["muted"] += 1
            return False
        if state.tokens < 1.0:
            self.counts["rate"] += 1
            return False
        state.tokens -= 1.0
        return True

    def record(self, peer: str, verdict: Verdict) -> None:
        """Count the validator's verdict on a message from ``peer``."""
        self.counts[verdict.value] += 1
        if verdict is not Verdict.REJECT:
            return
        state = self._state(peer)
        state.rejects += 1
        if state.rejects >= self.reject_limit:
            state.rejects = 0
            state.muted_until = self._clock() + self.mute_seconds


class Inbox:
    """Accepted peer messages of some kinds, as an async iterator; :meth:`aclose` ends it.

    ``topics`` maps each pubsub topic to its kind. Subscriptions open on the first
    ``__anext__``; a message published before that is not seen (pubsub keeps no history).
    """

    def __init__(
        self,
        node: IpfsBackend,
        topics: Mapping[str, str],
        *,
        validator: MessageValidator,
        own_peer: str,
        guard: InboundGuard,
        max_size: int,
        transport: str,
        on_close: Callable[[Inbox], None] = lambda _inbox: None,
    ) -> None:
        self._node = node
        self._topics = dict(topics)
        self._validator = validator
        self._own_peer = own_peer
        self._guard = guard
        self._max_size = max_size
        self._transport = transport
        self._on_close = on_close
        self._stack = AsyncExitStack()
        self._subs: list[tuple[str, Subscription]] | None = None
        self._pending: deque[tuple[str, PubsubMessage]] = deque()
        self.closed = False

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> PeerMessage:
        while True:
            kind, raw = await self._next_raw()
            if raw.from_peer == self._own_peer:
                self._guard.counts["own"] += 1
                continue
            if len(raw.payload) > self._max_size:
                self._guard.counts["oversized"] += 1
                continue
            if not self._guard.admit(raw.from_peer):
                continue
            message = PeerMessage(kind, raw.payload, peer=raw.from_peer, transport=self._transport)
            verdict = await anyio.to_thread.run_sync(self._validator, message)
            self._guard.record(raw.from_peer, verdict)
            if verdict is Verdict.ACCEPT:
                return message

    async def _open(self) -> list[tuple[str, Subscription]]:
        if self._subs is None:
            subs = []
            try:
                for topic, kind in self._topics.items():
                    subs.append(
                        (kind, await self._stack.enter_async_context(self._node.subscribe(topic)))
                    )
            except IpfsError as exc:
                await self._stack.aclose()
                raise DownloadError(f"could not subscribe to IPFS pubsub: {exc}") from exc
            self._subs = subs
        return self._subs

    async def _next_raw(self) -> tuple[str, PubsubMessage]:
        if self._pending:
            return self._pending.popleft()
        if self.closed:
            raise StopAsyncIteration
        subs = await self._open()
        try:
            if len(subs) == 1:
                kind, sub = subs[0]
                return kind, await sub.receive()
            await self._race(subs)
        except IpfsError as exc:
            if self.closed:
                raise StopAsyncIteration from None
            raise DownloadError(f"IPFS pubsub subscription failed: {exc}") from exc
        return self._pending.popleft()

    async def _race(self, subs: list[tuple[str, Subscription]]) -> None:
        """Wait for the next message on any subscription (both backends' ``receive`` may be
        cancelled without losing a message: the losers keep theirs for the next call)."""
        failure: list[IpfsError] = []
        async with anyio.create_task_group() as tg:

            async def take(kind: str, sub: Subscription) -> None:
                try:
                    self._pending.append((kind, await sub.receive()))
                except IpfsError as exc:
                    failure.append(exc)
                tg.cancel_scope.cancel()

            for kind, sub in subs:
                tg.start_soon(take, kind, sub)
        if not self._pending and failure:
            raise failure[0]

    async def aclose(self) -> None:
        """Unsubscribe (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._on_close(self)
        with anyio.CancelScope(shield=True):
            try:
                await self._stack.aclose()
            except IpfsError:
                pass  # the node is gone already: nothing left to unsubscribe
