"""A process's peer-to-peer side: every installed transport that announces or subscribes.

:class:`PeerNetwork` starts those transports (gossip, IPFS pubsub, the BitTorrent DHT...) with
the node's identity and the :class:`~blackhole_sync.network.messages.PeerMessageGate` as their
``message_validator``, and gives the process one view of them: :meth:`announce` spreads a
signed document over all of them, :meth:`messages` merges what they accepted, :meth:`catch_up`
asks peers for the newest documents of a kind and runs each answer through the gate.

Nothing is acted on that the gate has not accepted: a transport delivers only what the gate
accepted, and :meth:`messages` checks again (by the payload's digest, against the gate's record
of accepted payloads), so a buggy plugin cannot slip a message past it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import BlackholeSyncError
from ..fetch import (
    CAP_ANNOUNCE,
    CAP_QUERY,
    CAP_SEED,
    CAP_SUBSCRIBE,
    GuardedTransport,
    PeerMessage,
    TransportPool,
    TransportSpec,
    Verdict,
)
from .messages import Decided, PeerMessageGate

__all__ = ["PEER_CAPABILITIES", "PeerNetwork"]

log = logging.getLogger(__name__)

#: A transport with any of these takes part in the peer network.
PEER_CAPABILITIES = frozenset({CAP_ANNOUNCE, CAP_SUBSCRIBE, CAP_QUERY, CAP_SEED})
#: Accepted messages waiting for the consumer; beyond this the oldest are dropped (counted).
MESSAGE_BUFFER = 256


class PeerNetwork:
    """The peer transports of one process, started together and stopped together.

    ``specs`` are the registered transports (those without a peer capability are left out);
    ``options`` the shared transport options (the gate is added as ``message_validator``).
    """

    def __init__(
        self,
        specs: Sequence[TransportSpec],
        gate: PeerMessageGate,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.gate = gate
        self._pool = TransportPool(specs, {**(options or {}), "message_validator": gate})
        self.transports: list[GuardedTransport] = []
        self.failures: dict[str, str] = {}
        self.dropped = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._send: MemoryObjectSendStream[Decided] | None = None
        self._receive: MemoryObjectReceiveStream[Decided] | None = None
        self._kinds: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        return bool(self.transports)

    async def __aenter__(self) -> Self:
        for transport in self._pool.usable():
            if not PEER_CAPABILITIES & transport.capabilities:
                continue
            try:
                await transport.__aenter__()
            except BlackholeSyncError as exc:  # one plugin failing to start leaves the others
                log.warning("peer transport %s did not start: %s", transport.name, exc)
                self.failures[transport.name] = str(exc)
                continue
            self.transports.append(transport)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
            transports, self.transports = self.transports, []
            for transport in transports:
                try:
                    await transport.aclose()
                except BlackholeSyncError as exc:
                    log.warning("peer transport %s did not stop cleanly: %s", transport.name, exc)

    # -- sending -----------------------------------------------------------------------------

    async def announce(self, kind: str, payload: bytes) -> list[str]:
        """Spread ``payload`` over every transport that announces; the names that took it.

        Best effort: a transport that fails is logged and skipped. The payload is run through
        the gate first, as a peer would (a node never spreads what it would not accept); the
        gate raises its floor, so the node's own copy arriving back is ignored.
        """
        decided = self.gate.decide(PeerMessage(kind, payload, "self", "local"))
        if decided.verdict is Verdict.REJECT:
            raise ValueError(f"refusing to announce a {kind} peers would reject: {decided.reason}")
        told = []
        for transport in self.transports:
            if CAP_ANNOUNCE not in transport.capabilities:
                continue
            try:
                await transport.announce(kind, payload)
                told.append(transport.name)
            except BlackholeSyncError as exc:
                log.warning("announce over %s failed: %s", transport.name, exc)
        return told

    async def seed(self, blobs: Mapping[str, Path]) -> list[str]:
        """Offer exactly ``blobs`` (sha256 -> verified file: the transfer blobs the node keeps)
        over every transport that seeds, withdrawing what it offered before and is no longer
        among them; the names that took it. Best effort: a transport that fails is logged."""
        told = []
        for transport in self.transports:
            if CAP_SEED not in transport.capabilities:
                continue
            try:
                await transport.seed(blobs)
                told.append(transport.name)
            except BlackholeSyncError as exc:
                log.warning("seeding over %s failed: %s", transport.name, exc)
        return told

    # -- receiving ---------------------------------------------------------------------------

    async def messages(self, kinds: Iterable[str]) -> AsyncGenerator[Decided, None]:
        """Accepted messages of ``kinds`` from every subscribing transport, as they arrive."""
        kinds = frozenset(kinds)
        send, receive = anyio.create_memory_object_stream[Decided](MESSAGE_BUFFER)
        async with anyio.create_task_group() as tg, send, receive:
            for transport in self.transports:
                if CAP_SUBSCRIBE in transport.capabilities:
                    tg.start_soon(self._pump, transport, kinds, send)
            async for decided in receive:
                yield decided
            tg.cancel_scope.cancel()

    async def _pump(
        self,
        transport: GuardedTransport,
        kinds: frozenset[str],
        send: MemoryObjectSendStream[Decided],
    ) -> None:
        try:
            async for message in transport.subscribe(kinds):
                decided = self.gate.accepted(message)
                if decided is None:  # a plugin delivered what the gate did not accept
                    log.warning("%s delivered an unaccepted %s; dropped", transport.name, message)
                    continue
                try:
                    send.send_nowait(decided)
                except anyio.WouldBlock:
                    self.dropped += 1
        except BlackholeSyncError as exc:
            log.warning("subscription on %s ended: %s", transport.name, exc)

    async def catch_up(self, kind: str) -> list[Decided]:
        """Ask every querying transport's peers for their newest ``kind``; what the gate accepts.

        Answers are decided like any peer message (a stale answer is ignored, a forged one
        rejected), so a lying peer cannot make a node act on anything.
        """
        found: list[Decided] = []
        for transport in self.transports:
            if CAP_QUERY not in transport.capabilities:
                continue
            try:
                answers = await transport.query(kind)
            except BlackholeSyncError as exc:
                log.info("catch-up over %s failed: %s", transport.name, exc)
                continue
            for answer in answers:
                if answer.kind != kind:
                    continue
                decided = self.gate.decide(answer)
                if decided.verdict is Verdict.ACCEPT:
                    found.append(decided)
        return found
