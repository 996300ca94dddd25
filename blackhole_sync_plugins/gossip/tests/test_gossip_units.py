"""The engine's bounded parts and its configuration, without a network."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import blackhole_sync_gossip
import pytest
from blackhole_sync_gossip import GossipConfig, ScoreConfig, topic_for
from blackhole_sync_gossip._peers import AddressPolicy, PeerBook
from blackhole_sync_gossip._pubsub import BoundedSeenCache, RateLimiter
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from netutil import peer_id_of, seed


def test_every_export_exists_and_the_core_is_not_imported() -> None:
    for name in blackhole_sync_gossip.__all__:
        assert hasattr(blackhole_sync_gossip, name), name
    code = "import sys, blackhole_sync_gossip; print('blackhole_sync' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert out.stdout.strip() == "False"


def test_topics_and_protocols_are_per_network() -> None:
    cfg = GossipConfig(network="mainnet", identity_seed=b"\x01" * 32)
    assert topic_for("mainnet", "vote") == "/blackhole/mainnet/vote/1"
    assert cfg.topics["halt"] == "/blackhole/mainnet/halt/1"
    assert cfg.query_protocol == "/blackhole/mainnet/query/1"


@pytest.mark.parametrize(
    "bad",
    [
        {"network": "Main Net"},
        {"identity_seed": b"short"},
        {"kinds": ("vote", "vote")},
        {"target_outbound_peers": 9, "max_outbound_peers": 8},
        {"hello": b"x" * 300},
        {"max_message_size": 10},
    ],
)
def test_config_refuses_unsafe_values(bad: dict[str, object]) -> None:
    settings: dict[str, object] = {"network": "testnet", "identity_seed": b"\x01" * 32, **bad}
    with pytest.raises(ValueError):
        GossipConfig(**settings)  # type: ignore[arg-type]


def test_score_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        ScoreConfig(graylist_threshold=-10.0, publish_threshold=-40.0)


def test_seen_cache_is_bounded_by_entries_and_time() -> None:
    cache = BoundedSeenCache(ttl=0.2, max_entries=100)
    for i in range(1000):
        cache.add(i.to_bytes(4, "big"))
    assert cache.length() == 100
    assert cache.has((999).to_bytes(4, "big"))
    assert not cache.has((0).to_bytes(4, "big"))
    time.sleep(0.25)
    assert not cache.has((999).to_bytes(4, "big"))
    assert cache.length() == 0


def test_rate_limiter_allows_the_burst_then_the_rate_and_stays_bounded() -> None:
    limiter = RateLimiter(rate=10.0, burst=5, max_peers=3)
    peer = ID.from_base58(peer_id_of(seed(1)))
    assert sum(limiter.allow(peer) for _ in range(50)) == 5
    time.sleep(0.25)
    assert limiter.allow(peer)
    for n in range(2, 10):
        limiter.allow(ID.from_base58(peer_id_of(seed(n))))
    assert len(limiter._buckets) == 3


def test_loopback_policy_refuses_every_other_address() -> None:
    policy = AddressPolicy(loopback_only=True)
    assert policy.allows(Multiaddr("/ip4/127.0.0.1/tcp/4001"))
    assert policy.allows(Multiaddr("/ip6/::1/tcp/4001"))
    for text in (
        "/ip4/10.0.0.1/tcp/4001",
        "/ip4/192.0.2.1/tcp/4001",
        "/dns4/localhost/tcp/4001",
        "/ip4/0.0.0.0/tcp/4001",
        "/ip4/127.0.0.1/udp/4001/quic-v1",
    ):
        assert not policy.allows(Multiaddr(text)), text
    assert AddressPolicy(loopback_only=False).allows(Multiaddr("/ip4/192.0.2.1/tcp/4001"))


def test_peer_book_backs_off_exponentially_and_keeps_bootstrap_entries() -> None:
    me = ID.from_base58(peer_id_of(seed(1)))
    book = PeerBook(
        self_id=me,
        policy=AddressPolicy(loopback_only=True),
        max_peers=3,
        max_addrs=2,
        backoff_initial=1.0,
        backoff_max=8.0,
    )
    boot = ID.from_base58(peer_id_of(seed(2)))
    assert book.add(boot, [Multiaddr("/ip4/127.0.0.1/tcp/1")], bootstrap=True)
    assert not book.add(me, [Multiaddr("/ip4/127.0.0.1/tcp/2")])
    assert not book.add(ID.from_base58(peer_id_of(seed(3))), [Multiaddr("/ip4/10.0.0.1/tcp/1")])
    delays = []
    for _ in range(6):
        book.record(boot, ok=False, now=0.0)
        delays.append(book._entries[boot].next_attempt)
    assert delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and delays[-1] <= 8.0 * 1.2
    assert book.due(0.0, exclude=set(), limit=5) == []
    assert book.due(10.0, exclude=set(), limit=5)[0][0] == boot
    for n in range(4, 12):
        book.add(ID.from_base58(peer_id_of(seed(n))), [Multiaddr(f"/ip4/127.0.0.1/tcp/{n}")])
    assert len(book) == 3 and boot in book._entries
    book.record(boot, ok=True, now=20.0)
    assert book._entries[boot].failures == 0
