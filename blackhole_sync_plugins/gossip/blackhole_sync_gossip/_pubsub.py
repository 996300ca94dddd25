"""py-libp2p pubsub, extended for a three-way validator, graylisting and bounds.

What py-libp2p 0.8 does, and what this module changes (read
``libp2p/pubsub/pubsub.py`` ``push_msg`` / ``validate_msg`` and
``libp2p/pubsub/gossipsub.py`` alongside):

* Topic validators return a ``bool``; ``False`` makes ``push_msg`` call
  ``scorer.on_invalid_message`` (a P4 penalty) for the forwarder, and the result
  is cached per message id for five minutes, so every later copy is penalised
  too. There is no IGNORE. :class:`ThreeWayPubsub` registers no topic validator
  at all: it overrides ``validate_msg`` (bypassing the validation cache) to call
  the caller's ``validate(kind, payload, from_peer)`` and then

  - ACCEPT: returns, so ``push_msg`` marks the message seen, credits the
    forwarder (P2), delivers it and hands it to the router for forwarding;
  - REJECT: raises ``ValidationError``: ``push_msg`` penalises the forwarder
    (P4) and drops the message;
  - IGNORE: raises :class:`IgnoredMessage`, which is *not* a
    ``ValidationError``: it escapes ``Pubsub.push_msg`` before any penalty,
    seen-marking, delivery or forwarding, and our ``push_msg`` override catches
    it and marks the message seen (so copies from other relays and IHAVE
    gossip do not make us fetch and re-validate it), with no score change.

* There is no graylist on the receive path: ``is_graylisted`` is only
  consulted for GRAFTs and outbound peer selection. ``push_msg`` does have an
  inbound gate, ``allow_publish`` (that topic's score against the *publish*
  threshold), which drops messages silently and unvalidated. Our ``push_msg``
  drops (and counts as graylisted) every message from a peer whose total score
  (all our topics, plus behaviour penalties) is below the graylist threshold or
  whose topic score is below the publish threshold, before validation: after a
  few REJECTs its next valid message is not delivered either.
  :class:`GatedGossipSub` ``handle_rpc`` also drops its control messages
  (IHAVE, IWANT, GRAFT, PRUNE) once its total is below the graylist threshold.

* Messages with a bad libp2p signature are dropped by py-libp2p without any
  penalty; we count them as REJECTed and penalise the forwarder. Payloads over
  the size cap and messages on several topics are rejected the same way.

* A per-peer token bucket bounds how many messages a peer can make us validate;
  over the rate, messages are dropped unvalidated (no penalty: bursts happen).

* The seen-message cache (``LastSeenCache``) has no size bound and starts a
  sweeper *thread* per instance that nothing stops; it is replaced by
  :class:`BoundedSeenCache` (TTL + entry cap, no thread).

* ``PeerScorer.remove_peer`` forgets a peer's penalties on disconnect, so a
  graylisted peer could reconnect with a clean slate; :class:`RetainingScorer`
  keeps negative scores for ``retain_seconds``.

* Peers are only used for pubsub once admitted by the hello exchange: the
  outbound pubsub stream is opened, and an inbound one read, only after
  :class:`PeerGate` says the peer was admitted.

These overrides touch ``Pubsub.push_msg``, ``validate_msg``,
``notify_subscriptions``, ``stream_handler``, ``_handle_new_peer`` and
``GossipSub.handle_rpc`` / ``send_rpc``, which is why the distribution pins
``libp2p>=0.8,<0.9``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable
from typing import Protocol

from libp2p.abc import IHost, INetStream
from libp2p.exceptions import ValidationError
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import PeerScorer, ScoreParams
from libp2p.pubsub.validators import signature_validator

from ._types import Counters, Verdict

__all__ = [
    "BoundedSeenCache",
    "GatedGossipSub",
    "IgnoredMessage",
    "PeerGate",
    "RateLimiter",
    "RetainingScorer",
    "ThreeWayPubsub",
    "message_id",
]

logger = logging.getLogger(__name__)


def message_id(msg: rpc_pb2.Message) -> bytes:
    """Content-addressed message id: SHA-256 over the topic and the payload.

    The same signed document published by two nodes (the origin and a node that
    re-announces it) is one message, deduplicated before validation; the
    topic is included so the same bytes on two topics stay distinct.
    """
    h = hashlib.sha256()
    for topic in msg.topicIDs:
        h.update(topic.encode())
        h.update(b"\x00")
    h.update(msg.data)
    return h.digest()[:20]


class IgnoredMessage(Exception):
    """Raised by ``validate_msg`` on IGNORE; deliberately not a ``ValidationError``."""


class BoundedSeenCache:
    """Seen-message ids with a time-to-live *and* an entry cap, without a thread.

    Drop-in for py-libp2p's ``LastSeenCache`` (``add``/``has``/``stop``/
    ``length``). Entries expire ``ttl`` seconds after first being added; when
    full, the oldest entry goes first. A flood of distinct message ids can thus
    only evict old ids (worst case: an old message is accepted again and the
    validator IGNOREs it by its seq), never grow memory.
    """

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._entries:
            key, expiry = next(iter(self._entries.items()))
            if expiry > now:
                break
            del self._entries[key]

    def add(self, key: bytes) -> bool:
        now = time.monotonic()
        self._expire(now)
        if key in self._entries:
            return False
        self._entries[key] = now + self.ttl
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    def has(self, key: bytes) -> bool:
        self._expire(time.monotonic())
        return key in self._entries

    def length(self) -> int:
        return len(self._entries)

    def stop(self) -> None:
        """Nothing to stop: there is no sweeper thread."""


class RateLimiter:
    """Per-peer token buckets, at most ``max_peers`` of them."""

    def __init__(self, rate: float, burst: int, max_peers: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_peers = max_peers
        self._buckets: OrderedDict[ID, tuple[float, float]] = OrderedDict()

    def allow(self, peer: ID) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[peer] = (tokens, now)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return allowed

    def forget(self, peer: ID) -> None:
        self._buckets.pop(peer, None)


class RetainingScorer(PeerScorer):
    """A ``PeerScorer`` that remembers penalties of disconnected peers.

    py-libp2p drops all score state when a peer disconnects. Here a peer whose
    score is negative when it leaves keeps its state for ``retain_seconds``
    (decaying as usual), for at most ``retain_max`` peers; positive state is
    still dropped at once, so the tables stay bounded by the peer limits.
    """

    def __init__(
        self,
        params: ScoreParams,
        *,
        topics: Callable[[], list[str]],
        retain_seconds: float,
        retain_max: int,
    ) -> None:
        super().__init__(params)
        self._topics = topics
        self._retain_seconds = retain_seconds
        self._retain_max = retain_max
        self._retained: OrderedDict[ID, float] = OrderedDict()

    def total(self, peer: ID) -> float:
        """The peer's score over all our topics (the one graylisting uses)."""
        return self.score(peer, self._topics())

    def remove_peer(self, peer: ID) -> None:
        if self.total(peer) < 0.0:
            self._retained.pop(peer, None)
            self._retained[peer] = time.monotonic() + self._retain_seconds
            while len(self._retained) > self._retain_max:
                oldest, _ = self._retained.popitem(last=False)
                super().remove_peer(oldest)
            return
        super().remove_peer(peer)

    def reconnected(self, peer: ID) -> None:
        """The peer is back: its retained state is live state again."""
        self._retained.pop(peer, None)

    def on_heartbeat(self, dt_seconds: float = 1.0) -> None:
        super().on_heartbeat(dt_seconds)
        now = time.monotonic()
        while self._retained:
            peer, expiry = next(iter(self._retained.items()))
            if expiry > now:
                break
            del self._retained[peer]
            super().remove_peer(peer)


class PeerGate(Protocol):
    """What pubsub asks the engine about a peer."""

    def is_admitted(self, peer: ID) -> bool: ...

    async def wait_admitted(self, peer: ID) -> bool: ...


class GatedGossipSub(GossipSub):
    """GossipSub that ignores control traffic from graylisted or unadmitted peers
    and counts the bytes it sends."""

    def __init__(
        self,
        *args: object,
        gate: PeerGate,
        counters: Counters,
        graylisted: Callable[[ID], bool],
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._gate = gate
        self._counters = counters
        self._graylisted = graylisted

    async def handle_rpc(self, rpc: rpc_pb2.RPC, sender_peer_id: ID) -> None:
        if not self._gate.is_admitted(sender_peer_id) or self._graylisted(sender_peer_id):
            return
        await super().handle_rpc(rpc, sender_peer_id)

    def send_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        _slim(rpc)
        self._counters.bytes_out += rpc.ByteSize()
        super().send_rpc(peer_id, rpc, priority)


#: An identity multihash of a 36-byte protobuf ed25519 key: the key is in the peer id.
_ED25519_ID_PREFIX = b"\x00\x24"


def _slim(rpc: rpc_pb2.RPC) -> None:
    """Drop what every forwarded RPC would carry for nothing (the bandwidth it saves is
    about a third of an announcement's, on every copy to every mesh peer):

    * ``senderRecord``: py-libp2p attaches its signed peer record to each RPC it publishes;
      no receiver needs it (peers learn addresses by identify and our peer exchange);
    * a message's ``key`` when the origin's peer id embeds its ed25519 key (receivers
      extract it from ``from``, as go-libp2p does). RSA origins (some Kubo nodes) keep it.

    Neither field is covered by the message's signature or its (content) message id.
    """
    if rpc.senderRecord:
        rpc.ClearField("senderRecord")
    for msg in rpc.publish:
        if msg.key and msg.from_id[:2] == _ED25519_ID_PREFIX:
            msg.ClearField("key")


class ThreeWayPubsub(Pubsub):
    """``Pubsub`` with the caller's three-way validator and the bounds above."""

    def __init__(
        self,
        host: IHost,
        router: GatedGossipSub,
        *,
        kinds_by_topic: dict[str, str],
        validate: Callable[[str, bytes, str], Verdict],
        deliver: Callable[[str, rpc_pb2.Message, ID], None],
        gate: PeerGate,
        counters: Counters,
        scorer: RetainingScorer,
        graylist_threshold: float,
        max_message_size: int,
        rate_limiter: RateLimiter,
        seen_cache: BoundedSeenCache,
        allowed_topics: Container[str],
        max_topics: int,
    ) -> None:
        super().__init__(
            host,
            router,
            strict_signing=True,
            msg_id_constructor=message_id,
            seen_ttl=int(seen_cache.ttl),
            # An RPC may batch several messages plus control: 4 of the largest, and at least
            # 16 announcement-sized ones.
            max_inbound_rpc_size=max(4 * (max_message_size + 512), 16 * 4096),
            max_subscriptions_per_peer=max_topics,
        )
        # py-libp2p keeps a frozenset; any container works (``topic in allowed_topics``):
        # the caller's accepts every topic of our network, joined or not yet.
        self.allowed_topics = allowed_topics  # type: ignore[assignment]
        # py-libp2p's LastSeenCache starts a sweeper thread and is unbounded.
        self.seen_messages.stop()
        self.seen_messages = seen_cache  # type: ignore[assignment]
        self._kinds_by_topic = kinds_by_topic
        self._validate = validate
        self._deliver = deliver
        self._gate = gate
        self._counters = counters
        self._scorer = scorer
        self._graylist_threshold = graylist_threshold
        self._max_message_size = max_message_size
        self._rate = rate_limiter
        self._last_accept: tuple[bytes, ID] | None = None

    # -- admission gate ---------------------------------------------------

    async def _handle_new_peer(self, peer_id: ID) -> None:
        if not await self._gate.wait_admitted(peer_id):
            return
        await super()._handle_new_peer(peer_id)

    async def stream_handler(self, stream: INetStream) -> None:
        if not await self._gate.wait_admitted(stream.muxed_conn.peer_id):
            await stream.reset()
            return
        await super().stream_handler(stream)

    # -- inbound path -------------------------------------------------------

    def is_graylisted(self, peer: ID) -> bool:
        return self._scorer.total(peer) < self._graylist_threshold

    def _penalise(self, peer: ID, topics: Iterable[str]) -> None:
        for topic in topics:
            self._scorer.on_invalid_message(peer, topic)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder == self.my_id:
            await super().push_msg(msg_forwarder, msg)
            return
        c = self._counters
        c.messages_received += 1
        c.bytes_in += msg.ByteSize()
        if not self._gate.is_admitted(msg_forwarder):
            c.messages_ignored += 1
            return
        if self.is_graylisted(msg_forwarder) or not self._scorer.allow_publish(
            msg_forwarder, list(msg.topicIDs)
        ):
            # Below the graylist threshold (total score) nothing is read; below
            # the publish threshold (that topic's score) py-libp2p's own inbound
            # gate would drop the message silently a step later: count both here.
            c.messages_graylisted += 1
            return
        if not self._rate.allow(msg_forwarder):
            c.messages_rate_limited += 1
            return
        ours = [t for t in msg.topicIDs if t in self._kinds_by_topic]
        if len(msg.topicIDs) != 1 or len(msg.data) > self._max_message_size:
            # Honest nodes publish one topic per message and never forward
            # what they would reject themselves.
            c.messages_oversized += 1
            c.messages_rejected += 1
            self._penalise(msg_forwarder, ours)
            return
        if self._is_msg_seen(msg):
            c.messages_duplicate += 1
            return
        if not signature_validator(msg):
            c.messages_rejected += 1
            self._penalise(msg_forwarder, ours)
            return
        try:
            await super().push_msg(msg_forwarder, msg)
        except IgnoredMessage:
            self._mark_msg_seen(msg)

    async def validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """Run the caller's validator; no caching (the seen cache dedups ACCEPTs)."""
        if msg_forwarder == self.my_id:
            return  # the engine validated our own payload before publishing it
        kind = self._kinds_by_topic[msg.topicIDs[0]]
        c = self._counters
        try:
            verdict = self._validate(kind, msg.data, msg_forwarder.to_base58())
        except Exception:
            # The validator is fed attacker-controlled bytes; a bug in it must
            # neither kill the host nor penalise a peer. Counted and logged.
            logger.exception("gossip validator raised on a %s message", kind)
            c.validator_errors += 1
            verdict = Verdict.IGNORE
        if verdict is Verdict.ACCEPT:
            c.messages_accepted += 1
            self._last_accept = (message_id(msg), msg_forwarder)
            return
        if verdict is Verdict.REJECT:
            c.messages_rejected += 1
            raise ValidationError(f"{kind} message rejected by the validator")
        c.messages_ignored += 1
        raise IgnoredMessage

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        """Hand an ACCEPTed inbound message to the engine (not our own publishes)."""
        origin = ID(publish_message.from_id)
        if origin == self.my_id:
            return
        forwarder = origin
        if self._last_accept is not None and self._last_accept[0] == message_id(publish_message):
            forwarder = self._last_accept[1]
        self._last_accept = None
        topic = publish_message.topicIDs[0]
        self._deliver(self._kinds_by_topic[topic], publish_message, forwarder)


def score_params(
    *,
    first_delivery: tuple[float, float, float],
    invalid: tuple[float, float, float],
    behaviour: tuple[float, float, float],
    thresholds: tuple[float, float, float, float],
) -> ScoreParams:
    """Build py-libp2p ``ScoreParams`` from (weight, cap, decay) triples.

    ``behaviour`` is (weight, threshold, decay); ``thresholds`` is (gossip,
    publish, graylist, accept_px). P1, P3 and P6 stay off (P3 is never fed by
    py-libp2p 0.8), and so does P7 (IP colocation): on loopback every peer
    shares one address.
    """
    from libp2p.pubsub.score import TopicScoreParams

    gossip, publish, graylist, accept_px = thresholds
    for value in (*first_delivery, *invalid, *behaviour, *thresholds):
        if math.isnan(value):
            raise ValueError("score parameters must not be NaN")
    return ScoreParams(
        p2_first_message_deliveries=TopicScoreParams(*first_delivery),
        p4_invalid_messages=TopicScoreParams(*invalid),
        p5_behavior_penalty_weight=behaviour[0],
        p5_behavior_penalty_threshold=behaviour[1],
        p5_behavior_penalty_decay=behaviour[2],
        gossip_threshold=gossip,
        publish_threshold=publish,
        graylist_threshold=graylist,
        accept_px_threshold=accept_px,
    )
