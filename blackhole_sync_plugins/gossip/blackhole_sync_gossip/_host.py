"""The gossip engine: one libp2p host per process, trio-native.

:class:`GossipHost` owns a py-libp2p host (TCP + Noise only, ed25519 identity
from the node's 32-byte seed, yamux), a GossipSub v1.1 router with explicit peer
scoring, and three small stream protocols of its own:

``/blackhole/hello/1``
    Admission. Right after Noise, the dialling side opens it and sends its hello
    (caller-supplied bytes, e.g. a fork id); the listening side answers with its
    own only if its ``admit(peer_id, hello)`` accepts, and the dialler then
    applies its own ``admit``. A peer is used for pubsub, queries and peer
    exchange only once admitted; a refused peer (or one silent past
    ``hello_timeout``) is disconnected.
``/blackhole/<network>/query/1``
    Catch-up. The requester sends a kind, the answerer replies with what its
    ``answer(kind)`` returns (at most ``query_max_items`` payloads of at most
    ``max_message_size`` bytes each). The requester returns whatever arrived
    before its timeout, unverified.
``/blackhole/<network>/peers/1``
    Peer exchange: a list of other admitted peers and their addresses, used to
    find more peers when bootstrap peers are few or gone (GossipSub's own PX on
    PRUNE is on too, but a small network never prunes).

Run it inside the caller's trio task group::

    host = GossipHost(config, validate=validate, answer=answer)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        await host.publish("announcement", payload)
        async for msg in host.messages:
            ...
        host.stop()

or with :func:`open_gossip_host` as an async context manager. From asyncio use
:class:`blackhole_sync_gossip.AsyncioGossipBridge`.

Why "one host per process": py-libp2p hosts sharing one trio loop starve each
other (identify timed out with 15 to 40 hosts in one process on this machine).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.protocol_muxer.exceptions import MultiselectClientError, ProtocolNotSupportedError
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.rcmgr.metrics import Direction
from libp2p.security.noise.transport import (
    PROTOCOL_ID as NOISE_PROTOCOL_ID,
    Transport as NoiseTransport,
)
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from ._config import GossipConfig, check_kind, kind_of_topic, topic_for
from ._peers import AddressPolicy, PeerBook
from ._pubsub import (
    BoundedSeenCache,
    GatedGossipSub,
    RateLimiter,
    RetainingScorer,
    ThreeWayPubsub,
    score_params,
)
from ._types import (
    AdmitFn,
    AnswerFn,
    Counters,
    InboundMessage,
    NotRunningError,
    PublishRefusedError,
    QueryAnswer,
    ValidateFn,
    Verdict,
)
from ._wire import (
    HELLO_PROTOCOL,
    decode_peer_record,
    encode_peer_record,
    read_frame,
    read_list,
    read_query_request,
    write_frame,
    write_list,
)
from ._yamux import use_half_window_yamux

__all__ = ["GossipHost", "open_gossip_host"]

logger = logging.getLogger(__name__)


def _not_supported(exc: BaseException) -> bool:
    """Whether a failed stream open means the peer answered ``na`` (it does not speak the
    protocol), as opposed to a timeout or a connection that is not ready yet. py-libp2p
    reports it as a ``MultiselectClientError`` saying so, or a ``ProtocolNotSupportedError``."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, ProtocolNotSupportedError):
            return True
        if isinstance(seen, MultiselectClientError) and "not supported" in str(seen):
            return True
        seen = seen.__cause__
    return False


def _valid_kind(kind: str) -> bool:
    try:
        check_kind(kind)
    except ValueError:
        return False
    return True


class _PeerSpeaksNoHello(Exception):
    """The peer answered ``na`` to one of our stream protocols (it is not a Blackhole node)."""


#: Failures of network I/O with one peer. They end that exchange (the peer is
#: refused, the query answer is what arrived so far); they never end the host.
_PEER_IO_ERRORS: tuple[type[BaseException], ...] = (
    BaseLibp2pError,
    OSError,
    EOFError,
    ValueError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    _PeerSpeaksNoHello,
)

# trio.TaskStatus[None] at run time; the trio-typing stubs some environments
# install hide it from type checkers, hence the alias.
_TaskStatus = Any


@dataclass(slots=True)
class _PeerState:
    """One connected peer, from its first connection to its last."""

    direction: Direction
    decided: trio.Event = field(default_factory=trio.Event)
    admitted: bool = False
    #: Admitted without a hello exchange (``admit_without_hello``: a Kubo peer).
    without_hello: bool = False


class _TopicFilter:
    """py-libp2p's ``allowed_topics``: any well-formed topic of our network.

    A peer's subscriptions to topics we have not joined yet are remembered (bounded by
    ``max_subscriptions_per_peer``), so a kind added at run time meshes at once.
    """

    def __init__(self, network: str) -> None:
        self._network = network

    def __contains__(self, topic: object) -> bool:
        return isinstance(topic, str) and kind_of_topic(self._network, topic) is not None


class _ConnectionWatcher(INotifee):
    """Forwards swarm connection events to the engine (never blocks the swarm)."""

    def __init__(self, engine: GossipHost) -> None:
        self._engine = engine

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._engine._on_connected(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._engine._on_disconnected(conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


class GossipHost:
    """One libp2p gossip host (see the module docstring).

    :param config: all settings and limits.
    :param validate: ``validate(kind, payload, from_peer) -> Verdict``, run for
        every inbound message before delivery or forwarding, and for our own
        payloads before publishing.
    :param answer: ``answer(kind) -> list[bytes]`` for catch-up queries from
        peers; ``None`` answers every query with nothing.
    :param admit: ``admit(peer_id, hello) -> bool``; ``None`` admits exactly the
        peers whose hello equals ``config.hello``.
    :param on_message: called (in the host's trio thread, synchronously, never
        blocking) with each ACCEPTed message instead of queueing it on :attr:`messages`.
    """

    def __init__(
        self,
        config: GossipConfig,
        *,
        validate: ValidateFn,
        answer: AnswerFn | None = None,
        admit: AdmitFn | None = None,
        on_message: Callable[[InboundMessage], None] | None = None,
    ) -> None:
        self.config = config
        self._on_message = on_message
        self._validate = validate
        self._answer = answer
        self._admit = admit
        self._key_pair = create_new_key_pair(config.identity_seed)
        self._peer_id = ID.from_pubkey(self._key_pair.public_key)
        self._topics = config.topics
        self._kinds_by_topic = {t: k for k, t in self._topics.items()}
        self._policy = AddressPolicy(loopback_only=config.loopback_only)
        self._book = PeerBook(
            self_id=self._peer_id,
            policy=self._policy,
            max_peers=config.max_known_peers,
            max_addrs=config.max_addrs_per_peer,
            backoff_initial=config.dial_backoff_initial,
            backoff_max=config.dial_backoff_max,
        )
        self._bootstrap_rejected: list[str] = []
        for text in config.bootstrap:
            info = info_from_p2p_addr(Multiaddr(text))  # ValueError on a malformed entry
            if not self._book.add(info.peer_id, list(info.addrs), bootstrap=True):
                self._bootstrap_rejected.append(text)
        for text in config.cached_peers:
            try:
                info = info_from_p2p_addr(Multiaddr(text))
            except Exception as exc:  # noqa: BLE001 - a stale cache entry is skipped, not fatal
                logger.debug("peer cache entry %r skipped: %s", text, exc)
                continue
            self._book.add(info.peer_id, list(info.addrs))
        self._counters = Counters()
        self._peers: dict[ID, _PeerState] = {}
        self._msg_send, self._msg_recv = trio.open_memory_channel[InboundMessage](
            config.inbound_queue_size
        )
        self._query_rate = RateLimiter(
            config.query_rate_per_second,
            config.query_rate_burst,
            config.max_inbound_peers + config.max_outbound_peers,
        )
        self._host: IHost | None = None
        self._pubsub: ThreeWayPubsub | None = None
        self._router: GatedGossipSub | None = None
        self._scorer: RetainingScorer | None = None
        self._nursery: trio.Nursery | None = None
        # Connections that arrive while run() is still starting up.
        self._early_conns: list[INetConn] = []
        self._wake = trio.Event()
        self._stop = trio.Event()
        self._started = False
        self._running = False

    # -- identity and state ------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's base58 peer id (derived from the identity seed)."""
        return self._peer_id.to_base58()

    @property
    def listen_addrs(self) -> list[str]:
        """Addresses peers can dial, each ending in ``/p2p/<peer id>``."""
        if self._host is None:
            return []
        return [str(a) for a in self._host.get_addrs()]

    @property
    def running(self) -> bool:
        return self._running

    @property
    def messages(self) -> trio.MemoryReceiveChannel[InboundMessage]:
        """ACCEPTed inbound messages. Bounded: when the caller falls behind,
        new messages are dropped and counted (``messages_dropped_queue_full``);
        catch-up queries recover them."""
        return self._msg_recv

    @property
    def kinds(self) -> list[str]:
        """The kinds (topics) this host has joined."""
        return list(self._topics)

    def known_peers(self, limit: int | None = None) -> list[str]:
        """Dialable addresses of peers this host knows (connected ones first), each ending
        in ``/p2p/<id>``: what a caller persists to rejoin after a restart."""
        out: list[str] = []
        admitted = [p for p, s in self._peers.items() if s.admitted]
        others = [p for p in self._book.peers() if p not in self._peers]
        for peer in [*admitted, *others]:
            addrs = self._book.addrs_of(peer)
            if not addrs and self._host is not None:
                addrs = tuple(
                    a
                    for a in (
                        self._policy.transport_part(a)
                        for a in self._host.get_peerstore().addrs(peer)
                    )
                    if self._policy.allows(a)
                )
            if addrs:
                out.append(f"{addrs[0]}/p2p/{peer.to_base58()}")
            if limit is not None and len(out) >= limit:
                break
        return out

    def counters(self) -> dict[str, int]:
        c = self._counters
        admitted = [s for s in self._peers.values() if s.admitted]
        c.peers_connected = len(admitted)
        c.peers_inbound = sum(1 for s in admitted if s.direction == Direction.INBOUND)
        c.peers_outbound = len(admitted) - c.peers_inbound
        return c.snapshot()

    def connected_peers(self) -> list[str]:
        """Base58 ids of connected, admitted peers."""
        return [p.to_base58() for p, s in self._peers.items() if s.admitted]

    def mesh_peers(self, kind: str) -> list[str]:
        topic = self._topics.get(kind)
        if self._router is None or topic is None:
            return []
        return [p.to_base58() for p in self._router.mesh.get(topic, set())]

    def peer_score(self, peer_id: str) -> float:
        """A peer's score over all our topics (graylisted below the threshold)."""
        if self._scorer is None:
            return 0.0
        return self._scorer.total(ID.from_base58(peer_id))

    def effective_settings(self) -> dict[str, Any]:
        """What this host actually does, as plain data (for tests and diagnostics)."""
        cfg = self.config
        s = cfg.score
        return {
            "peer_id": self.peer_id,
            "network": cfg.network,
            "loopback_only": cfg.loopback_only,
            "listen_host": "127.0.0.1" if cfg.loopback_only else cfg.listen_host,
            "listen_addrs": self.listen_addrs,
            "dial_policy": "loopback addresses only" if cfg.loopback_only else "any tcp ip address",
            "connection_gate_allow": list(self._gate_allow_list()),
            "mdns": False,
            "upnp": False,
            "public_bootstrap": False,
            "bootstrap": [str(p) for p in cfg.bootstrap if p not in self._bootstrap_rejected],
            "bootstrap_rejected": list(self._bootstrap_rejected),
            "transports": ["tcp"],
            "security": [str(NOISE_PROTOCOL_ID)],
            "pubsub_protocols": [str(PROTOCOL_ID_V11)],
            "topics": dict(self._topics),
            "max_kinds": cfg.max_kinds,
            "admit_without_hello": cfg.admit_without_hello,
            "stream_protocols": [HELLO_PROTOCOL, cfg.query_protocol, cfg.peers_protocol],
            "mesh": {
                "D": cfg.mesh_degree,
                "D_lo": cfg.mesh_degree_low,
                "D_hi": cfg.mesh_degree_high,
                "heartbeat_s": cfg.heartbeat_interval,
            },
            "gossip_px": cfg.gossip_px,
            "max_message_size": cfg.max_message_size,
            "peer_rate": {"per_second": cfg.peer_rate_per_second, "burst": cfg.peer_rate_burst},
            "seen_cache": {"entries": cfg.seen_cache_size, "ttl_s": cfg.seen_ttl},
            "limits": {
                "max_inbound_peers": cfg.max_inbound_peers,
                "max_outbound_peers": cfg.max_outbound_peers,
                "target_outbound_peers": cfg.target_outbound_peers,
                "max_known_peers": cfg.max_known_peers,
            },
            "score": {
                "gossip_threshold": s.gossip_threshold,
                "publish_threshold": s.publish_threshold,
                "graylist_threshold": s.graylist_threshold,
                "accept_px_threshold": s.accept_px_threshold,
                "invalid_weight": s.invalid_weight,
                "retain_seconds": s.retain_seconds,
            },
        }

    def hello_less_peers(self) -> list[str]:
        """Admitted peers that never spoke ``/blackhole/hello/1`` (``admit_without_hello``)."""
        return [p.to_base58() for p, s in self._peers.items() if s.admitted and s.without_hello]

    def _gate_allow_list(self) -> tuple[str, ...]:
        return ("127.0.0.0/8", "::1/128") if self.config.loopback_only else ()

    def _require_running(self) -> None:
        if not self._running:
            raise NotRunningError("the gossip host is not running")

    # -- lifecycle ------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to shut down and return (idempotent, never blocks)."""
        self._stop.set()

    async def run(self, *, task_status: _TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the host until :meth:`stop` is called or the task is cancelled.

        ``task_status.started()`` is called once the host listens, has
        subscribed to every topic and has started dialling bootstrap peers.
        On return every socket and task of the host is closed.
        """
        if self._started:
            raise RuntimeError("a GossipHost runs once; create a new one")
        self._started = True
        cfg = self.config
        listen = Multiaddr(
            f"/ip4/{'127.0.0.1' if cfg.loopback_only else cfg.listen_host}/tcp/{cfg.listen_port}"
        )
        host = self._build_host(listen)
        self._host = host
        # Our notifee goes first, so a peer has admission state before
        # pubsub's notifee asks about it.
        host.get_network().register_notifee(_ConnectionWatcher(self))
        router, pubsub = self._build_pubsub(host)
        host.set_stream_handler(TProtocol(HELLO_PROTOCOL), self._handle_hello)
        host.set_stream_handler(TProtocol(cfg.query_protocol), self._handle_query)
        host.set_stream_handler(TProtocol(cfg.peers_protocol), self._handle_peers)
        try:
            async with host.run(listen_addrs=[listen]):
                async with background_trio_service(pubsub), background_trio_service(router):
                    await pubsub.wait_until_ready()
                    for topic in self._topics.values():
                        await pubsub.subscribe(topic)
                    try:
                        async with trio.open_nursery() as nursery:
                            self._nursery = nursery
                            early, self._early_conns = self._early_conns, []
                            for conn in early:
                                if not getattr(conn.muxed_conn, "is_closed", False):
                                    self._on_connected(conn)
                            nursery.start_soon(self._maintain_connections)
                            self._running = True
                            task_status.started()
                            await self._stop.wait()
                            self._running = False
                            nursery.cancel_scope.cancel()
                    finally:
                        self._running = False
                        # py-libp2p's own shutdown path closes connections
                        # while already cancelled, which leaks their sockets:
                        # close everything explicitly, shielded and bounded.
                        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                            await host.close()
        finally:
            self._running = False
            self._nursery = None
            self._msg_send.close()
            for topic in list(self._topics.values()):
                pubsub.subscribed_topics_send.pop(topic, None)

    def _build_host(self, listen: Multiaddr) -> IHost:
        cfg = self.config
        # Noise only: py-libp2p's default also offers TLS, SECIO and *plaintext*.
        sec_opt = {
            NOISE_PROTOCOL_ID: NoiseTransport(
                self._key_pair, noise_privkey=create_new_x25519_key_pair().private_key
            )
        }
        total = cfg.max_inbound_peers + cfg.max_outbound_peers
        conn_cfg = ConnectionConfig(
            max_connections=total + 4,
            min_connections=0,
            low_watermark=total,
            high_watermark=total + 4,
            max_connections_per_peer=2,
            dial_timeout=cfg.dial_timeout,
            allow_list=list(self._gate_allow_list()),
        )
        host = new_host(
            key_pair=self._key_pair,
            sec_opt=sec_opt,
            muxer_preference="YAMUX",
            listen_addrs=[listen],
            enable_mDNS=False,
            enable_upnp=False,
            connection_config=conn_cfg,
        )
        # py-libp2p's auto-connector dials every peerstore entry up to the
        # watermark, ignoring our per-direction limits and backoff; our own
        # dialer (_maintain_connections) replaces it.
        swarm = host.get_network()
        use_half_window_yamux(swarm)
        auto = getattr(swarm, "auto_connector", None)
        if auto is not None:

            async def _no_auto_connect() -> None:
                return None

            auto.maybe_connect = _no_auto_connect
        return host

    def _build_pubsub(self, host: IHost) -> tuple[GatedGossipSub, ThreeWayPubsub]:
        cfg = self.config
        s = cfg.score
        params = score_params(
            first_delivery=(s.first_delivery_weight, s.first_delivery_cap, s.first_delivery_decay),
            invalid=(s.invalid_weight, s.invalid_cap, s.invalid_decay),
            behaviour=(s.behaviour_weight, s.behaviour_threshold, s.behaviour_decay),
            thresholds=(
                s.gossip_threshold,
                s.publish_threshold,
                s.graylist_threshold,
                s.accept_px_threshold,
            ),
        )
        scorer = RetainingScorer(
            params,
            topics=lambda: list(self._topics.values()),
            retain_seconds=s.retain_seconds,
            retain_max=s.retain_max_peers,
        )
        router = GatedGossipSub(
            protocols=[PROTOCOL_ID_V11],
            degree=cfg.mesh_degree,
            degree_low=cfg.mesh_degree_low,
            degree_high=cfg.mesh_degree_high,
            heartbeat_interval=cfg.heartbeat_interval,
            heartbeat_initial_delay=0.1,
            do_px=cfg.gossip_px,
            px_peers_count=cfg.peer_exchange_max_peers,
            score_params=params,
            # These py-libp2p extras would stretch the heartbeat to 30-60 s on a
            # "poor health" guess, penalise honest forwarders above 10 msg/s, and
            # graft by IP diversity (meaningless on loopback). Our own rate
            # limit and scoring replace them.
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            gate=self,
            counters=self._counters,
            graylisted=lambda peer: scorer.total(peer) < s.graylist_threshold,
        )
        router.scorer = scorer
        pubsub = ThreeWayPubsub(
            host,
            router,
            kinds_by_topic=self._kinds_by_topic,
            validate=self._validate,
            deliver=self._deliver,
            gate=self,
            counters=self._counters,
            scorer=scorer,
            graylist_threshold=s.graylist_threshold,
            max_message_size=cfg.max_message_size,
            rate_limiter=RateLimiter(
                cfg.peer_rate_per_second,
                cfg.peer_rate_burst,
                cfg.max_inbound_peers + cfg.max_outbound_peers,
            ),
            seen_cache=BoundedSeenCache(cfg.seen_ttl, cfg.seen_cache_size),
            allowed_topics=_TopicFilter(cfg.network),
            max_topics=cfg.max_kinds,
        )
        self._router, self._pubsub, self._scorer = router, pubsub, scorer
        return router, pubsub

    # -- publishing and delivery -----------------------------------------

    async def add_kinds(self, kinds: list[str] | tuple[str, ...]) -> list[str]:
        """Join the topics of ``kinds`` not joined yet; returns the kinds newly joined.

        :raises ValueError: a malformed kind name, or more than ``config.max_kinds`` in all.
        """
        self._require_running()
        assert self._pubsub is not None
        new = [check_kind(k) for k in dict.fromkeys(kinds) if k not in self._topics]
        if len(self._topics) + len(new) > self.config.max_kinds:
            raise ValueError(f"more than {self.config.max_kinds} kinds")
        for kind in new:
            topic = topic_for(self.config.network, kind)
            # The mapping first: pubsub hands us messages as soon as it subscribed.
            self._topics[kind] = topic
            self._kinds_by_topic[topic] = kind
            await self._pubsub.subscribe(topic)
        return new

    async def publish(self, kind: str, payload: bytes, *, validate: bool = True) -> None:
        """Publish ``payload`` to the kind's topic, validating it first unless told not to.

        ``validate=False`` is for callers that decided the payload themselves (the
        transport plugin: the core's gate already accepted it, and asking it again
        would answer IGNORE for a document it has just recorded).

        :raises PublishRefusedError: unknown kind, payload over the size cap,
            or the validator did not ACCEPT it (peers would drop it too).
        """
        self._require_running()
        assert self._pubsub is not None
        topic = self._topics.get(kind)
        if topic is None:
            raise PublishRefusedError(f"unknown kind {kind!r}")
        if len(payload) > self.config.max_message_size:
            raise PublishRefusedError(
                f"payload of {len(payload)} bytes exceeds {self.config.max_message_size}"
            )
        if validate:
            verdict = self._validate(kind, payload, self.peer_id)
            if verdict is not Verdict.ACCEPT:
                raise PublishRefusedError(
                    f"own {kind} payload not accepted: {verdict.value}", verdict
                )
        await self._pubsub.publish(topic, payload)
        self._counters.messages_published += 1

    async def flush(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109 - see wait_for_mesh
        """Wait until every queued outbound RPC was handed to its stream (False on timeout).

        For one-shot callers that publish and then stop the host at once.
        """
        if self._pubsub is None:
            return True
        queues = self._pubsub.peer_queues
        with trio.move_on_after(timeout):
            while any(len(q) for q in list(queues.values())):  # noqa: ASYNC110
                await trio.sleep(0.02)
            await trio.sleep(0.05)  # the writer task's last write
            return True
        return False

    def _deliver(self, kind: str, msg: rpc_pb2.Message, forwarder: ID) -> None:
        item = InboundMessage(
            kind, bytes(msg.data), forwarder.to_base58(), ID(msg.from_id).to_base58()
        )
        if self._on_message is not None:
            try:
                self._on_message(item)
            except Exception:
                logger.exception("on_message raised")  # a caller's bug must not stop the host
            return
        try:
            self._msg_send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._counters.messages_dropped_queue_full += 1

    async def wait_for_peers(
        self,
        min_peers: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - the bound must live on the trio side
        *,
        hello_only: bool = True,
    ) -> bool:
        """Wait until ``min_peers`` peers are admitted (those that spoke hello, by default:
        the ones that answer queries); False on timeout."""
        self._require_running()

        def count() -> int:
            return sum(
                1
                for s in self._peers.values()
                if s.admitted and not (hello_only and s.without_hello)
            )

        with trio.move_on_after(timeout):
            while count() < min_peers:  # noqa: ASYNC110
                await trio.sleep(0.05)
            return True
        return False

    async def wait_for_mesh(
        self,
        kind: str,
        *,
        min_peers: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - the bound must live on the trio side
    ) -> bool:
        """Wait until the kind's mesh has ``min_peers`` peers; False on timeout.

        For one-shot callers ("publish then exit"): publishing before any mesh
        peer exists would reach nobody. The timeout is a parameter (not left to
        the caller's cancel scope) because asyncio callers reach this through
        the bridge, and an asyncio cancellation does not cross into trio.
        """
        self._require_running()
        with trio.move_on_after(timeout):
            # py-libp2p has no "mesh changed" event for a whole topic: poll.
            while len(self.mesh_peers(kind)) < min_peers:  # noqa: ASYNC110
                await trio.sleep(0.05)
            return True
        return False

    # -- admission (PeerGate for pubsub) -----------------------------------

    def is_admitted(self, peer: ID) -> bool:
        state = self._peers.get(peer)
        return state is not None and state.admitted

    async def wait_admitted(self, peer: ID) -> bool:
        """Wait for the hello exchange with ``peer`` to be decided."""
        with trio.move_on_after(self.config.hello_timeout + 1.0):
            while True:
                state = self._peers.get(peer)
                if state is None:
                    # The connection event may not have reached us yet.
                    await trio.sleep(0.05)
                    continue
                await state.decided.wait()
                return state.admitted
        return False

    def _on_connected(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if self._nursery is None:
            if not self._stop.is_set() and len(self._early_conns) < self.config.max_inbound_peers:
                self._early_conns.append(conn)
            return
        direction = (
            Direction.OUTBOUND
            if getattr(conn, "direction", None) == Direction.OUTBOUND
            else Direction.INBOUND
        )
        known = self._peers.get(peer)
        if known is not None:
            if (
                direction == Direction.OUTBOUND
                and known.direction == Direction.INBOUND
                and not known.decided.is_set()
            ):
                # Both sides dialled at once and each saw the other's connection first: each
                # would wait for the other's hello until both refused. The dialler speaks.
                self._nursery.start_soon(self._hello_initiate, peer)
            return
        same_way = sum(1 for s in self._peers.values() if s.direction == direction)
        limit = (
            self.config.max_outbound_peers
            if direction == Direction.OUTBOUND
            else self.config.max_inbound_peers
        )
        if same_way >= limit:
            self._counters.peers_refused += 1
            self._nursery.start_soon(self._disconnect, peer)
            return
        self._peers[peer] = _PeerState(direction)
        if direction == Direction.OUTBOUND:
            self._nursery.start_soon(self._hello_initiate, peer)
        else:
            self._nursery.start_soon(self._hello_deadline, peer)

    def _on_disconnected(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if self._host is None:
            return
        remaining = [
            c
            for c in self._host.get_network().get_connections(peer)
            if c is not conn and not getattr(c.muxed_conn, "is_closed", False)
        ]
        if remaining:
            return
        state = self._peers.pop(peer, None)
        if state is not None and not state.decided.is_set():
            state.decided.set()
        self._query_rate.forget(peer)
        self._wake.set()

    def _admits(self, peer: ID, hello: bytes | None) -> bool:
        """Whether to keep ``peer``; ``hello`` None: the peer speaks no hello (only the
        graylist applies then; :meth:`_admits_without_hello` decides the rest)."""
        if (
            self._scorer is not None
            and self._scorer.total(peer) < self.config.score.graylist_threshold
        ):
            return False  # still graylisted from an earlier connection
        if hello is None:
            return True
        if self._admit is None:
            return hello == self.config.hello
        try:
            return bool(self._admit(peer.to_base58(), hello))
        except Exception:
            logger.exception("admit() raised; refusing peer %s", peer)
            return False

    def _decide(self, peer: ID, ok: bool) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        if state.decided.is_set():
            if state.admitted and not ok:
                state.admitted = False
                self._refuse(peer)
            return
        state.admitted = ok
        state.decided.set()
        if ok:
            if self._scorer is not None:
                self._scorer.reconnected(peer)
            self._wake.set()
        else:
            self._refuse(peer)

    def _refuse(self, peer: ID) -> None:
        self._counters.peers_refused += 1
        if self._nursery is not None:
            self._nursery.start_soon(self._disconnect, peer)

    async def _disconnect(self, peer: ID) -> None:
        if self._host is None:
            return
        try:
            await self._host.disconnect(peer)
        except _PEER_IO_ERRORS as exc:
            logger.debug("disconnecting %s: %s", peer, exc)

    async def _open_stream(self, peer: ID, protocol: str) -> INetStream:
        """Open a stream, retrying briefly: right after a connection is announced
        its muxer may not accept streams yet (callers bound this with a timeout)."""
        assert self._host is not None
        delay = 0.05
        while True:
            try:
                return await self._host.new_stream(peer, [TProtocol(protocol)])
            except BaseLibp2pError as exc:
                if _not_supported(exc):
                    raise _PeerSpeaksNoHello(protocol) from exc
                if not self._host.get_network().get_connections(peer):
                    raise
                await trio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _hello_initiate(self, peer: ID) -> None:
        ok = False
        try:
            with trio.fail_after(self.config.hello_timeout):
                stream = await self._open_stream(peer, HELLO_PROTOCOL)
                try:
                    await write_frame(stream, self.config.hello)
                    theirs = await read_frame(stream, self.config.hello_max_size)
                finally:
                    await stream.close()
            ok = self._admits(peer, theirs)
        except _PeerSpeaksNoHello:
            ok = self._admits_without_hello(peer)
        except _PEER_IO_ERRORS as exc:
            logger.debug("hello with %s failed: %s", peer, exc)
        self._decide(peer, ok)

    def _admits_without_hello(self, peer: ID) -> bool:
        """A peer that does not speak hello at all: admitted only when configured to."""
        if not self.config.admit_without_hello or not self._admits(peer, None):
            return False
        state = self._peers.get(peer)
        if state is not None:
            state.without_hello = True
        return True

    async def _hello_deadline(self, peer: ID) -> None:
        """An inbound peer that never says hello is refused -- or, with
        ``admit_without_hello``, asked for ours: a peer that does not speak the
        protocol at all (Kubo) is then admitted, one that does gets the usual exchange."""
        cfg = self.config
        wait = min(1.0, cfg.hello_timeout) if cfg.admit_without_hello else cfg.hello_timeout
        await trio.sleep(wait)
        state = self._peers.get(peer)
        if state is None or state.decided.is_set():
            return
        if cfg.admit_without_hello:
            await self._hello_initiate(peer)
            return
        self._decide(peer, False)

    async def _handle_hello(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        ok = False
        try:
            with trio.fail_after(self.config.hello_timeout):
                theirs = await read_frame(stream, self.config.hello_max_size)
                ok = self._admits(peer, theirs)
                if ok:
                    await write_frame(stream, self.config.hello)
                    await stream.close()
                else:
                    await stream.reset()
        except _PEER_IO_ERRORS as exc:
            logger.debug("hello from %s failed: %s", peer, exc)
            ok = False
        self._decide(peer, ok)

    # -- catch-up queries -------------------------------------------------------

    async def query(self, kind: str, *, max_peers: int | None = None) -> list[QueryAnswer]:
        """Ask up to ``max_peers`` admitted peers for their newest ``kind`` documents.

        Returns one :class:`QueryAnswer` per peer that sent anything within
        ``config.query_timeout`` (peers are asked concurrently, so that is also
        the bound of the whole call). The payloads are unverified: validate
        each before use.
        """
        self._require_running()
        check_kind(kind)
        peers = [p for p, s in self._peers.items() if s.admitted and not s.without_hello]
        random.shuffle(peers)
        peers = peers[: max_peers or self.config.query_max_peers]
        limit = self.config.query_timeout
        answers: list[QueryAnswer] = []

        async def ask(peer: ID) -> None:
            got: list[bytes] = []
            with trio.move_on_after(limit):
                try:
                    stream = await self._open_stream(peer, self.config.query_protocol)
                    try:
                        await write_frame(stream, kind.encode())
                        await read_list(
                            stream,
                            max_items=self.config.query_max_items,
                            max_item_size=self.config.max_message_size,
                            into=got,
                        )
                    finally:
                        await stream.close()
                except _PEER_IO_ERRORS as exc:
                    logger.debug("query %s to %s failed: %s", kind, peer, exc)
            if got:
                answers.append(QueryAnswer(peer.to_base58(), tuple(got)))

        self._counters.queries_sent += 1
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
        return answers

    async def _handle_query(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if not self.is_admitted(peer) or not self._query_rate.allow(peer):
            await stream.reset()
            return
        cfg = self.config
        try:
            with trio.fail_after(cfg.query_timeout):
                kind = await read_query_request(stream)
                items: list[bytes] = []
                if _valid_kind(kind) and self._answer is not None:
                    try:
                        items = list(self._answer(kind))
                    except Exception:
                        logger.exception("answer(%r) raised", kind)
                        items = []
                items = [bytes(i) for i in items if len(i) <= cfg.max_message_size]
                await write_list(stream, items[: cfg.query_max_items])
                await stream.close()
            self._counters.queries_answered += 1
        except _PEER_IO_ERRORS as exc:
            logger.debug("answering a query from %s failed: %s", peer, exc)
            await stream.reset()

    # -- peer exchange and dialling -------------------------------------------

    async def _handle_peers(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if not self.is_admitted(peer) or not self._query_rate.allow(peer) or self._host is None:
            await stream.reset()
            return
        store = self._host.get_peerstore()
        records: list[bytes] = []
        others = [p for p, s in self._peers.items() if s.admitted and p != peer]
        random.shuffle(others)
        for other in others[: self.config.peer_exchange_max_peers]:
            addrs = [self._policy.transport_part(a) for a in store.addrs(other)]
            addrs = [a for a in addrs if self._policy.allows(a)][: self.config.max_addrs_per_peer]
            if addrs:
                records.append(encode_peer_record(other, addrs))
        try:
            with trio.fail_after(self.config.query_timeout):
                await write_list(stream, records)
                await stream.close()
        except _PEER_IO_ERRORS as exc:
            logger.debug("peer exchange to %s failed: %s", peer, exc)
            await stream.reset()

    async def _exchange_peers(self, peer: ID) -> int:
        """Ask one peer for others; returns how many usable records were learnt."""
        got: list[bytes] = []
        with trio.move_on_after(self.config.query_timeout):
            try:
                stream = await self._open_stream(peer, self.config.peers_protocol)
                try:
                    await read_list(
                        stream,
                        max_items=self.config.peer_exchange_max_peers,
                        max_item_size=1024,
                        into=got,
                    )
                finally:
                    await stream.close()
            except _PEER_IO_ERRORS as exc:
                logger.debug("peer exchange with %s failed: %s", peer, exc)
        learnt = 0
        for record in got:
            try:
                other, addrs = decode_peer_record(record, self.config.max_addrs_per_peer)
            except ValueError:
                continue
            learnt += self._book.add(other, addrs)
        return learnt

    async def _dial(self, peer: ID, addrs: tuple[Multiaddr, ...]) -> None:
        assert self._host is not None
        self._counters.dials_attempted += 1
        # The swarm refuses to re-dial a peer for 60 s after a failure; our
        # own per-peer backoff decides instead.
        negative = getattr(self._host.get_network(), "_negative_peer_cache", None)
        if negative is not None:
            negative.evict(str(peer))
        ok = False
        try:
            with trio.fail_after(self.config.dial_timeout):
                await self._host.connect(PeerInfo(peer, list(addrs)))
            ok = await self.wait_admitted(peer)
        except _PEER_IO_ERRORS as exc:
            logger.debug("dial %s failed: %s", peer, exc)
        if not ok:
            self._counters.dials_failed += 1
        self._book.record(peer, ok, trio.current_time())

    async def _maintain_connections(self) -> None:
        """Keep ``target_outbound_peers`` outbound peers; learn peers by exchange.

        Runs every second or when a peer comes or goes. Candidates come from
        the peer book (bootstrap + exchange), each with its own backoff.
        """
        cfg = self.config
        last_exchange = -float("inf")
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            outbound = sum(1 for s in self._peers.values() if s.direction == Direction.OUTBOUND)
            want = cfg.target_outbound_peers - outbound
            if want > 0:
                due = self._book.due(now, exclude=set(self._peers), limit=want)
                if due:
                    async with trio.open_nursery() as nursery:
                        for peer, addrs in due:
                            nursery.start_soon(self._dial, peer, addrs)
            admitted = [p for p, s in self._peers.items() if s.admitted and not s.without_hello]
            interval = (
                cfg.peer_exchange_interval if want <= 0 else min(2.0, cfg.peer_exchange_interval)
            )
            if admitted and trio.current_time() - last_exchange >= interval:
                last_exchange = trio.current_time()
                await self._exchange_peers(random.choice(admitted))
            with trio.move_on_after(1.0):
                await self._wake.wait()


@asynccontextmanager
async def open_gossip_host(
    config: GossipConfig,
    *,
    validate: ValidateFn,
    answer: AnswerFn | None = None,
    admit: AdmitFn | None = None,
) -> AsyncIterator[GossipHost]:
    """Run a :class:`GossipHost` for the duration of an ``async with`` block."""
    host = GossipHost(config, validate=validate, answer=answer, admit=admit)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        try:
            yield host
        finally:
            host.stop()
