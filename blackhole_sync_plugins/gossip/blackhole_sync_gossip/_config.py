"""Every knob of the gossip engine, with its limit, in one place.

Why one module: a reviewer must be able to see every size, rate, timeout and
threshold that bounds what a remote peer can make this process do, without
reading the engine. Each default is chosen for the Blackhole network: a few
dozen to a few thousand nodes, messages of at most a few KiB (announcements are
at most 1 KiB), a handful of messages per minute in normal operation.

Peer scoring: py-libp2p ships every score threshold at minus infinity, i.e.
scoring has no effect until configured. :class:`ScoreConfig` gives explicit
values. Note py-libp2p's sign convention: the weights of P4 (invalid messages)
and P5 (behaviour penalty) are *subtracted*, so they are written as positive
numbers here (go-libp2p writes them as negative weights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_KINDS",
    "GossipConfig",
    "ScoreConfig",
    "check_kind",
    "kind_of_topic",
    "topic_for",
]

#: The message kinds the Blackhole network gossips, subscribed from the start (one topic
#: each) so a node relays all of them; more are added at run time (:meth:`GossipHost.add_kinds`).
DEFAULT_KINDS: tuple[str, ...] = (
    "announcement",
    "status",
    "vote",
    "health",
    "halt",
    "rollout",
    "proposal",
    "certificate",
    "validators",
    "downgrade",
    "deprecation",
)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
#: Network names follow the core's network ids (up to 64 characters).
_NETWORK = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a valid kind name, else raise ``ValueError``."""
    if not isinstance(kind, str) or not _NAME.match(kind):
        raise ValueError(f"kind {kind!r} must match {_NAME.pattern}")
    return kind


def kind_of_topic(network: str, topic: str) -> str | None:
    """The kind a topic of ``network`` carries, or None for any other topic."""
    prefix = f"/blackhole/{network}/"
    if not topic.startswith(prefix) or not topic.endswith("/1"):
        return None
    kind = topic[len(prefix) : -2]
    return kind if _NAME.match(kind) else None


def topic_for(network: str, kind: str) -> str:
    """Return the GossipSub topic of one message kind on one network.

    The layout ``/blackhole/<network>/<kind>/1`` keeps networks apart (a
    testnet node never meshes with mainnet on the same topic) and leaves room for
    a new wire version (the trailing ``1``).
    """
    return f"/blackhole/{network}/{kind}/1"


@dataclass(frozen=True, slots=True)
class ScoreConfig:
    """GossipSub v1.1 peer-scoring parameters (py-libp2p's ``ScoreParams``).

    Thresholds are ordered ``graylist < publish < gossip <= 0 <= accept_px``.
    With these values a peer whose messages the validator REJECTs loses
    ``invalid_weight`` per message: after two it no longer receives our
    gossip, after three (py-libp2p's inbound gate uses the publish threshold;
    the credit a peer earned by first deliveries is at most
    ``first_delivery_weight * first_delivery_cap``) its messages are dropped
    unvalidated, and below the graylist threshold its control messages too,
    until the penalty decays
    (``invalid_decay`` per heartbeat; 0.99 per second is a half-life of about 70 s).
    IGNOREd messages cost nothing, so an honest relay of a stale message keeps
    its score.
    """

    #: P2: credit for each message a peer is first to deliver (bounded by the cap).
    first_delivery_weight: float = 1.0
    first_delivery_cap: float = 10.0
    first_delivery_decay: float = 0.98
    #: P4: penalty for each REJECTed message (subtracted by py-libp2p).
    invalid_weight: float = 20.0
    invalid_cap: float = 1000.0
    invalid_decay: float = 0.99
    #: P5: penalty for protocol misbehaviour (IWANT/IHAVE spam, GRAFT flood).
    behaviour_weight: float = 1.0
    behaviour_threshold: float = 10.0
    behaviour_decay: float = 0.98
    gossip_threshold: float = -20.0
    publish_threshold: float = -40.0
    graylist_threshold: float = -50.0
    accept_px_threshold: float = 0.0
    #: How long (seconds) a disconnected peer's penalties are remembered, so a
    #: graylisted peer cannot wash its score by reconnecting.
    retain_seconds: float = 300.0
    #: At most this many disconnected peers' penalties are remembered.
    retain_max_peers: int = 1024

    def __post_init__(self) -> None:
        if not (
            self.graylist_threshold
            < self.publish_threshold
            < self.gossip_threshold
            <= 0.0
            <= self.accept_px_threshold
        ):
            raise ValueError(
                "score thresholds must satisfy graylist < publish < gossip <= 0 <= accept_px"
            )
        if self.invalid_weight <= 0 or self.invalid_cap <= 0:
            raise ValueError(
                "invalid_weight and invalid_cap must be positive (py-libp2p subtracts them)"
            )
        for name in ("first_delivery_decay", "invalid_decay", "behaviour_decay"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Settings of one gossip host (one per process).

    Only ``network`` and ``identity_seed`` are required. Everything else is a
    limit with a default sized for the Blackhole network; every limit is enforced
    by the engine, never only documented.
    """

    #: Network name, part of every topic and stream protocol id.
    network: str
    #: 32-byte ed25519 seed of the node's identity key: the libp2p peer id is
    #: derived from it, so the key that signs the node's votes and status is the
    #: key its gossip channel is authenticated with (Noise).
    identity_seed: bytes
    #: Message kinds to subscribe to from the start (one topic each).
    kinds: tuple[str, ...] = DEFAULT_KINDS
    #: At most this many kinds (topics) in all, counting those added at run time; also
    #: the number of a peer's topic subscriptions that are tracked.
    max_kinds: int = 32
    #: Listen only on 127.0.0.1, dial only loopback addresses, no discovery.
    loopback_only: bool = False
    #: Interface to listen on when not loopback-only.
    listen_host: str = "0.0.0.0"  # noqa: S104 - a public node must be reachable
    #: TCP port (0: let the OS choose).
    listen_port: int = 0
    #: Bootstrap peers, multiaddrs ending in ``/p2p/<peer id>``.
    bootstrap: tuple[str, ...] = ()
    #: The bytes this node sends in its ``/blackhole/hello/1`` exchange (e.g. a
    #: fork id). The default admission accepts exactly the same bytes.
    hello: bytes = b""
    hello_max_size: int = 256
    hello_timeout: float = 5.0
    #: Admit peers that do not speak ``/blackhole/hello/1`` at all (Kubo and other
    #: libp2p pubsub nodes) without calling ``admit``; their messages still go
    #: through the validator and peer scoring. A peer that speaks hello with the
    #: wrong bytes is refused either way.
    admit_without_hello: bool = False
    #: Peers remembered from an earlier run (multiaddrs ending in ``/p2p/<id>``),
    #: dialled like peer-exchange entries (evictable, unlike bootstrap entries).
    cached_peers: tuple[str, ...] = ()

    #: Largest gossip payload accepted or published: the largest peer message the core
    #: sends (a rollout plan, 64 KiB; announcements are under 1 KiB). The validator
    #: applies each kind's own, smaller cap.
    max_message_size: int = 65536
    #: Per-peer inbound message rate (token bucket), before any validation.
    peer_rate_per_second: float = 50.0
    peer_rate_burst: int = 200
    #: Seen-message cache: entries and lifetime (seconds).
    seen_cache_size: int = 16384
    seen_ttl: float = 120.0
    #: Bounded queue of accepted messages waiting for the caller.
    inbound_queue_size: int = 256

    #: Connection limits, kept apart per direction so inbound connections
    #: (which anyone can open) never crowd out the peers this node chose.
    max_inbound_peers: int = 32
    max_outbound_peers: int = 8
    #: The dialer keeps this many outbound peers when it knows enough candidates.
    target_outbound_peers: int = 4
    #: Bounded table of known peer addresses (bootstrap + peer exchange).
    max_known_peers: int = 256
    max_addrs_per_peer: int = 4
    dial_timeout: float = 5.0
    #: Per-candidate exponential backoff between failed dials (seconds).
    dial_backoff_initial: float = 1.0
    dial_backoff_max: float = 60.0
    #: How often (seconds) to ask a peer for more peers when connected.
    peer_exchange_interval: float = 30.0
    peer_exchange_max_peers: int = 16

    #: Catch-up queries: per-peer timeout, peers asked, answers accepted.
    query_timeout: float = 5.0
    query_max_peers: int = 4
    query_max_items: int = 16
    #: Queries answered per peer (token bucket), to bound amplification.
    query_rate_per_second: float = 2.0
    query_rate_burst: int = 10

    #: GossipSub mesh degree (D, D_lo, D_hi) and heartbeat.
    mesh_degree: int = 6
    mesh_degree_low: int = 5
    mesh_degree_high: int = 12
    heartbeat_interval: int = 1
    #: Gossipsub v1.1 peer exchange in PRUNE messages.
    gossip_px: bool = True
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def __post_init__(self) -> None:
        if not _NETWORK.match(self.network):
            raise ValueError(f"network name {self.network!r} must match {_NETWORK.pattern}")
        if not isinstance(self.identity_seed, bytes) or len(self.identity_seed) != 32:
            raise ValueError("identity_seed must be exactly 32 bytes")
        if not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ValueError("kinds must be a non-empty tuple of distinct names")
        for kind in self.kinds:
            check_kind(kind)
        if len(self.kinds) > self.max_kinds:
            raise ValueError("more kinds than max_kinds")
        if len(self.hello) > self.hello_max_size:
            raise ValueError("hello is larger than hello_max_size")
        if not 0 <= self.listen_port <= 65535:
            raise ValueError("listen_port out of range")
        if not 64 <= self.max_message_size <= 1 << 20:
            raise ValueError("max_message_size must be within 64 B .. 1 MiB")
        if self.target_outbound_peers > self.max_outbound_peers:
            raise ValueError("target_outbound_peers must not exceed max_outbound_peers")
        if not self.mesh_degree_low <= self.mesh_degree <= self.mesh_degree_high:
            raise ValueError("mesh degrees must satisfy D_lo <= D <= D_hi")
        positive = (
            "hello_timeout",
            "peer_rate_per_second",
            "peer_rate_burst",
            "seen_cache_size",
            "seen_ttl",
            "inbound_queue_size",
            "max_inbound_peers",
            "max_outbound_peers",
            "max_known_peers",
            "max_addrs_per_peer",
            "dial_timeout",
            "dial_backoff_initial",
            "peer_exchange_interval",
            "peer_exchange_max_peers",
            "query_timeout",
            "query_max_peers",
            "query_max_items",
            "query_rate_per_second",
            "query_rate_burst",
            "heartbeat_interval",
            "max_kinds",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.dial_backoff_max < self.dial_backoff_initial:
            raise ValueError("dial_backoff_max must be >= dial_backoff_initial")

    @property
    def topics(self) -> dict[str, str]:
        """Map each configured kind to its topic."""
        return {kind: topic_for(self.network, kind) for kind in self.kinds}

    @property
    def query_protocol(self) -> str:
        return f"/blackhole/{self.network}/query/1"

    @property
    def peers_protocol(self) -> str:
        return f"/blackhole/{self.network}/peers/1"
