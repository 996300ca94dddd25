"""The gossip plugin through the core, real hosts in separate processes on 127.0.0.1.

Each honest node is ``peer_node.py``: a real node directory's peer side opened as ``node run``
opens it (the gate over its trusted root and the seq floors in its state.db, config.toml's
``[network] loopback_only`` and ``[gossip]`` tables), half of them under asyncio (the host in
its own trio thread), half under trio. Attackers and relays are engine-level nodes
(``gossip_node.py``) that write libp2p-signed messages straight onto their pubsub streams.
One module-scoped network: six honest nodes, an attacker, a relay and a flooder (nine
processes); node 1 and node 5 are restarted by the last tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from corenet import PEER_NODE, World
from netutil import Network, NodeProcess, wait_until

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(240)]

KIND = "announcement"
HONEST = 6
#: Short enough that the replay test outlives it (the engine's default is 120 s).
SEEN_TTL = 3.0
#: How long a published message stays in its relays' gossipsub cache, with a margin.
MCACHE_S = 6.0
GOSSIP = {
    "dial_backoff_initial": 0.3,
    "dial_backoff_max": 2.0,
    "hello_timeout": 3.0,
    "peer_exchange_interval": 5.0,
    "seen_ttl": SEEN_TTL,
}


@dataclass
class Net:
    world: World
    procs: Network
    dirs: list[Path]
    ports: list[int]
    honest: list[NodeProcess]
    attacker: NodeProcess
    relay: NodeProcess
    flooder: NodeProcess
    versions: list[int] = field(default_factory=list)

    def start_honest(self, i: int) -> NodeProcess:
        backend = "asyncio" if i % 2 == 0 else "trio"
        node = self.procs.spawn({"node": str(self.dirs[i]), "backend": backend}, PEER_NODE)
        return node

    def restart(self, i: int) -> NodeProcess:
        self.honest[i].stop()
        self.honest[i] = self.start_honest(i).wait_ready()
        return self.honest[i]

    def engine_node(self, name: int, boot: list[int]) -> NodeProcess:
        return self.procs.spawn(
            {
                "seed": f"{name:02x}" * 32,
                "network": self.world.network_id,
                "hello": self.world.network_id.encode().hex(),
                "bootstrap": [self.world.addr(self.dirs[i], self.ports[i]) for i in boot],
                "target_outbound": len(boot),
                "backoff": 0.3,
                "backoff_max": 2.0,
                "foreign": "ignore",  # it cannot judge the nodes' documents: no penalties
            }
        )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    world = World(tmp_path_factory.mktemp("gossip-core"))
    dirs, ports = [], []
    for i in range(HONEST):
        path, port = world.node(f"n{i}", **GOSSIP)
        dirs.append(path)
        ports.append(port)
    for i in range(HONEST):  # node i bootstraps to the two before it: messages need relays
        boot = [world.addr(dirs[j], ports[j]) for j in range(max(0, i - 2), i)]
        World.configure(dirs[i], listen=f"/ip4/127.0.0.1/tcp/{ports[i]}", bootstrap=boot, **GOSSIP)
    procs = Network()
    try:
        net = Net(world, procs, dirs, ports, [], None, None, None)  # type: ignore[arg-type]
        spawned = [net.start_honest(i) for i in range(HONEST)]
        net.attacker = net.engine_node(0xA1, [4, 5])
        net.relay = net.engine_node(0xA2, [1, 2])
        net.flooder = net.engine_node(0xA3, [3, 4])
        net.honest = [n.wait_ready() for n in spawned]
        for node in (net.attacker, net.relay, net.flooder):
            node.wait_ready()
        # Connected along the chain (each node meshed with the ones it bootstraps to), so a
        # message published now reaches everyone: dials to nodes still starting are retried.
        for i, node in enumerate(net.honest):
            boot = {World.peer_id(dirs[j]) for j in range(max(0, i - 2), i)}
            assert wait_until(lambda b=boot, n=node: b <= set(n.call("peers")["mesh"]), 90), i
        yield net
    finally:
        procs.close()


def versions_of(node: NodeProcess, via: str | None = None) -> list[int]:
    return [
        m["index_version"]
        for m in node.call("received")["messages"]
        if m["kind"] == KIND and (via is None or m["via"] == via)
    ]


def announce(net: Net, publisher: int = 0) -> int:
    version, payload = net.world.announcement()
    reply = net.honest[publisher].call("announce", kind=KIND, payload=payload.hex())
    assert reply.get("told") == ["gossip"], reply
    net.versions.append(version)
    return version


def reached(nodes: list[NodeProcess], version: int, timeout: float = 20.0) -> list[NodeProcess]:
    wait_until(lambda: all(version in versions_of(n) for n in nodes), timeout, 0.2)
    return [n for n in nodes if version in versions_of(n)]


def neighbours_of(net: Net, node: NodeProcess) -> list[NodeProcess]:
    peers = node.call("peers")["peers"]
    return [n for n in net.honest if n.peer_id in peers]


def counters(node: NodeProcess) -> dict[str, int]:
    return node.call("counters")["counters"]


def test_an_index_announcement_reaches_every_node_through_the_gate(net: Net) -> None:
    version = announce(net)
    others = net.honest[1:]
    assert reached(others, version) == others
    for node in others:
        c = counters(node)
        assert c["gate_accept"] >= 1 and c["gate_reject"] == 0
    settings = net.honest[1].call("settings")["settings"]
    assert settings["backend"] == "trio" and settings["loopback_only"] is True
    assert net.honest[0].call("settings")["settings"]["thread"] == "own trio thread"


def test_forged_and_badly_signed_announcements_are_not_delivered_nor_forwarded_and_the_sender_is_graylisted(
    net: Net,
) -> None:
    attacker = net.attacker
    assert wait_until(lambda: len(attacker.call("peers")["mesh"]) >= 2, 20)
    neighbours = neighbours_of(net, attacker)
    far = [n for n in net.honest if n not in neighbours]
    rejected_before = {n.peer_id: counters(n)["gate_reject"] for n in net.honest}
    version, genuine = net.world.announcement()
    bad = [net.world.forged(genuine) for _ in range(3)] + [World.badly_signed(genuine)] * 1
    bad += [net.world.forged(genuine) for _ in range(6)]
    attacker.call("inject", kind=KIND, payloads=[p.hex() for p in bad])
    # Three REJECTs take it below the publish threshold (-40): the rest are dropped unread.
    assert wait_until(
        lambda: all(
            counters(n)["gate_reject"] - rejected_before[n.peer_id] >= 3 for n in neighbours
        ),
        15,
    )
    for node in neighbours:
        assert node.call("score", peer=attacker.peer_id)["score"] < -40.0
    # Its next message is genuine (a real index announcement): still not delivered.
    attacker.call("inject", kind=KIND, payloads=[genuine.hex()])
    assert wait_until(lambda: all(counters(n)["messages_graylisted"] >= 1 for n in neighbours), 15)
    time.sleep(1.0)
    for node in net.honest:
        assert version not in versions_of(node)
    # Nobody relayed any of it: nodes away from the attacker never had one to reject.
    for node in far:
        assert counters(node)["gate_reject"] == rejected_before[node.peer_id]
    # Honest delivery stays at 100%.
    honest_version = announce(net)
    assert reached(net.honest[1:], honest_version) == net.honest[1:]


def test_a_replayed_old_announcement_is_ignored_once_the_seen_cache_forgot_it_without_penalising_the_relay(
    net: Net,
) -> None:
    relay = net.relay
    assert wait_until(lambda: len(relay.call("peers")["mesh"]) >= 1, 20)
    neighbours = neighbours_of(net, relay)
    assert neighbours
    old_version, old = net.world.announcement()
    net.versions.append(old_version)
    net.honest[0].call("announce", kind=KIND, payload=old.hex())
    assert reached(net.honest[1:], old_version) == net.honest[1:]
    newer = announce(net)
    assert reached(net.honest[1:], newer) == net.honest[1:]
    time.sleep(SEEN_TTL + 1.0)  # the seen cache has forgotten the old one
    before = {n.peer_id: counters(n) for n in neighbours}
    delivered = {n.peer_id: versions_of(n).count(old_version) for n in neighbours}
    to = relay.call("inject", kind=KIND, payloads=[old.hex()])["to"]
    neighbours = [n for n in neighbours if n.peer_id in to]  # those with a pubsub stream
    assert neighbours
    assert wait_until(
        lambda: all(
            counters(n)["gate_ignore"] > before[n.peer_id]["gate_ignore"] for n in neighbours
        ),
        15,
    )
    for node in neighbours:
        c = counters(node)
        assert c["gate_reject"] == before[node.peer_id]["gate_reject"]
        assert node.call("score", peer=relay.peer_id)["score"] >= 0.0
        assert versions_of(node).count(old_version) == delivered[node.peer_id]  # not again


def test_a_flood_of_10000_invalid_messages_does_not_stop_an_honest_announcement(net: Net) -> None:
    flooder = net.flooder
    assert wait_until(lambda: len(flooder.call("peers")["mesh"]) >= 1, 20)
    neighbours = neighbours_of(net, flooder)
    before = {n.peer_id: counters(n) for n in neighbours}
    started = time.monotonic()
    flooder.call("flood", kind=KIND, count=10_000, timeout=120)
    version = announce(net)
    assert reached(net.honest[1:], version, 30) == net.honest[1:]
    print(
        f"\n10,000 invalid messages sent, honest one delivered in {time.monotonic() - started:.1f} s"
    )
    for node in neighbours:
        c, b = counters(node), before[node.peer_id]
        # A few were decided (and rejected) before its score crossed the threshold; the rest
        # were dropped unread, by the graylist or the per-peer rate limit.
        assert 3 <= c["gate_reject"] - b["gate_reject"] < 100
        dropped = c["messages_graylisted"] + c["messages_rate_limited"]
        assert dropped - b["messages_graylisted"] - b["messages_rate_limited"] > 1000


def test_an_offline_node_catches_up_on_return_by_query(net: Net) -> None:
    net.honest[5].stop()
    version = announce(net)
    assert reached(net.honest[1:5], version) == net.honest[1:5]
    # Past gossipsub's message cache (py-libp2p keeps 5 heartbeats of 1 s, offered in IHAVE
    # for 3): otherwise the returning node may fetch it by IWANT before its query is answered
    # -- caught up as well, but not by the path this test is about.
    time.sleep(MCACHE_S)
    back = net.restart(5)
    assert wait_until(lambda: version in versions_of(back), 20)
    assert versions_of(back) == [version]
    assert versions_of(back, via="catch_up") == [version]


def test_a_restarted_node_ignores_a_replay_its_state_db_remembers(net: Net) -> None:
    # Self-contained (xdist may run this module's tests on a fresh network): every honest node
    # accepts an old announcement, then a newer one, before node 1 restarts.
    old_version, old = net.world.announcement()
    net.versions.append(old_version)
    net.honest[0].call("announce", kind=KIND, payload=old.hex())
    assert reached(net.honest[1:], old_version) == net.honest[1:]
    newer = announce(net)
    assert reached(net.honest[1:], newer) == net.honest[1:]
    relay = net.relay
    # The restarted node dials the relay itself (its bootstrap list), so the replay reaches it.
    World.configure(
        net.dirs[1], listen=f"/ip4/127.0.0.1/tcp/{net.ports[1]}", bootstrap=[relay.addr], **GOSSIP
    )
    node = net.restart(1)
    assert wait_until(lambda: relay.peer_id in node.call("peers")["peers"], 60)
    assert wait_until(lambda: len(relay.call("peers")["mesh"]) >= 1, 20)
    before = counters(node)
    relay.call("inject", kind=KIND, payloads=[old.hex()])
    assert wait_until(lambda: counters(node)["gate_ignore"] > before["gate_ignore"], 15)
    c = counters(node)
    assert c["gate_accept"] == before["gate_accept"] and c["gate_reject"] == 0
    assert node.call("score", peer=relay.peer_id)["score"] >= 0.0
    assert versions_of(node) == []  # nothing delivered: not the replay, not the catch-up
