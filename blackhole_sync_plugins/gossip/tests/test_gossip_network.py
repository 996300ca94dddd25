"""Real hosts in separate processes on 127.0.0.1, each test named after what it stages.

Topology helpers: ``chain`` bootstraps node i to node i-1 (and i-2), so a
message must be relayed to reach the far end; the peer exchange fills in more
links over time.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
from netutil import (
    FORGER,
    Network,
    NodeProcess,
    addr_of,
    free_port,
    seed,
    signed,
    wait_until,
)

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(120)]

KIND = "announcement"


def mesh_of(
    net: Network, count: int, *, first: int = 0, links: int = 2, extra: dict[str, Any] | None = None
) -> list[NodeProcess]:
    """Start ``count`` nodes; node i bootstraps to the ``links`` nodes before it."""
    ports = [free_port() for _ in range(count)]
    seeds = [seed(first + i) for i in range(count)]
    settings = []
    for i in range(count):
        boot = [addr_of(ports[j], seeds[j]) for j in range(max(0, i - links), i)]
        settings.append({"seed": seeds[i], "port": ports[i], "bootstrap": boot, **(extra or {})})
    return net.start(*settings)


def wait_meshed(nodes: list[NodeProcess], timeout: float = 20.0) -> None:
    for node in nodes:
        assert node.call("wait_mesh", kind=KIND, within=timeout)["ok"], node.peer_id


def delivered_to(nodes: list[NodeProcess], payload: bytes, timeout: float) -> list[NodeProcess]:
    """Wait until every node has the payload (or the timeout); return those that have it."""
    wait_until(lambda: all(payload.hex() in n.received_payloads() for n in nodes), timeout, 0.2)
    return [n for n in nodes if payload.hex() in n.received_payloads()]


def test_a_message_reaches_every_node(net: Network) -> None:
    nodes = mesh_of(net, 8)
    wait_meshed(nodes)
    publisher, others = nodes[0], nodes[1:]
    payload = signed(1, "release 1.0")
    sent_at = publisher.call("publish", kind=KIND, payload=payload.hex())["t"]
    assert delivered_to(others, payload, 15) == others
    latencies = []
    for node in others:
        [msg] = [m for m in node.call("received")["messages"] if m["payload"] == payload.hex()]
        latencies.append(msg["t"] - sent_at)
        assert msg["origin"] == publisher.peer_id
    print(
        f"\ndelivery over 8 processes: median {statistics.median(latencies):.3f} s, "
        f"slowest {max(latencies):.3f} s"
    )


def test_forged_messages_are_not_delivered_nor_forwarded_and_the_forger_is_graylisted(
    net: Network,
) -> None:
    honest = mesh_of(net, 5)
    [forger] = net.start(
        {"seed": seed(50), "bootstrap": [honest[3].addr, honest[4].addr], "target_outbound": 2}
    )
    wait_meshed(honest)
    assert wait_until(lambda: len(forger.call("peers")["mesh"]) >= 2, 15)
    neighbours = [n for n in honest if n.peer_id in forger.call("peers")["peers"]]
    far = [n for n in honest if n not in neighbours]
    forged = [bytes(FORGER.sign((100 + i).to_bytes(8, "big") + b"evil")) for i in range(10)]
    forger.call("inject", kind=KIND, payloads=[p.hex() for p in forged])
    # Three REJECTs take the forger below the publish threshold (-40); the
    # rest of its forgeries are dropped unvalidated.
    assert wait_until(lambda: all(n.counters()["messages_rejected"] >= 3 for n in neighbours), 10)
    for node in neighbours:
        assert node.call("score", peer=forger.peer_id)["score"] < -40.0
    # Its next *valid* message (a genuine publisher-signed document) is dropped too.
    valid_from_forger = signed(200, "valid but from a graylisted peer")
    forger.call("inject", kind=KIND, payloads=[valid_from_forger.hex()])
    assert wait_until(lambda: all(n.counters()["messages_graylisted"] >= 8 for n in neighbours), 10)
    # Honest delivery stays at 100%.
    payload = signed(300, "honest")
    honest[0].call("publish", kind=KIND, payload=payload.hex())
    assert delivered_to(honest[1:], payload, 15) == honest[1:]
    for node in honest:
        received = node.received_payloads()
        assert not any(p.hex() in received for p in forged)
        assert valid_from_forger.hex() not in received
    # Nobody relayed the forgeries: nodes away from the forger never saw one.
    for node in far:
        assert node.counters()["messages_rejected"] == 0


def test_a_replayed_old_message_is_ignored_without_penalising_the_relay(net: Network) -> None:
    nodes = mesh_of(net, 4)
    wait_meshed(nodes)
    publisher, relay = nodes[0], nodes[3]
    new, old = signed(5, "index v5"), signed(3, "index v3")
    publisher.call("publish", kind=KIND, payload=new.hex())
    assert delivered_to(nodes[1:], new, 15) == nodes[1:]
    # The relay hands its neighbours a stale (but genuine) document, twice.
    to = set(relay.call("inject", kind=KIND, payloads=[old.hex()])["to"])
    to |= set(relay.call("inject", kind=KIND, payloads=[old.hex()])["to"])
    # The ones it wrote to (a peer that connected a moment ago may have no pubsub stream yet)
    neighbours = [n for n in nodes if n.peer_id in to]
    assert neighbours
    assert wait_until(lambda: all(n.counters()["messages_ignored"] >= 1 for n in neighbours), 10)
    for node in neighbours:
        assert node.counters()["messages_rejected"] == 0
        assert node.call("score", peer=relay.peer_id)["score"] >= 0.0
        assert old.hex() not in node.received_payloads()
    # The relay still relays: a new document reaches everyone.
    newer = signed(6, "index v6")
    publisher.call("publish", kind=KIND, payload=newer.hex())
    assert delivered_to(nodes[1:], newer, 15) == nodes[1:]


def test_a_flood_of_10000_invalid_messages_does_not_stop_an_honest_message(net: Network) -> None:
    honest = mesh_of(net, 6)
    [flooder] = net.start(
        {"seed": seed(60), "bootstrap": [honest[4].addr, honest[5].addr], "target_outbound": 2}
    )
    wait_meshed(honest)
    assert wait_until(lambda: len(flooder.call("peers")["mesh"]) >= 2, 15)
    neighbours = [n for n in honest if n.peer_id in flooder.call("peers")["peers"]]
    started = time.monotonic()
    flooder.call("flood", kind=KIND, count=10_000, timeout=90)
    payload = signed(7, "honest during a flood")
    honest[0].call("publish", kind=KIND, payload=payload.hex())
    assert delivered_to(honest[1:], payload, 20) == honest[1:]
    print(
        f"\nflood of 10,000 sent and honest message delivered in {time.monotonic() - started:.1f} s"
    )
    for node in neighbours:
        c = node.counters()
        assert c["messages_accepted"] >= 1
        assert c["messages_rejected"] >= 3
        assert c["messages_graylisted"] + c["messages_rate_limited"] > 1000
        assert node.call("score", peer=flooder.peer_id)["score"] < -40.0


def test_a_node_that_joins_late_catches_up_by_query(net: Network) -> None:
    nodes = mesh_of(net, 3)
    wait_meshed(nodes)
    for seq in (1, 2, 3):
        nodes[0].call("publish", kind=KIND, payload=signed(seq, f"v{seq}").hex())
    assert delivered_to(nodes[1:], signed(3, "v3"), 15) == nodes[1:]
    [late] = net.start({"seed": seed(70), "bootstrap": [nodes[2].addr]})
    assert wait_until(lambda: late.call("peers")["peers"], 15)
    answers = late.call("query", kind=KIND)["answers"]
    assert answers
    assert all(a["payloads"] == [signed(3, "v3").hex()] for a in answers)
    assert late.call("query", kind="vote")["answers"] == []


def test_a_node_whose_bootstrap_dials_fail_first_still_joins(net: Network) -> None:
    port_a, port_b = free_port(), free_port()
    seed_a, seed_b, seed_c = seed(80), seed(81), seed(82)
    [a] = net.start({"seed": seed_a, "port": port_a})
    # The joiner's bootstrap list: a wrong peer id at A's address (Noise refuses
    # it) and B, which is not running yet.
    joiner = net.spawn(
        {
            "seed": seed(83),
            "bootstrap": [addr_of(port_a, seed_c), addr_of(port_b, seed_b)],
            "backoff": 0.5,
            "backoff_max": 2.0,
            "px_interval": 1.0,
        }
    ).wait_ready()
    time.sleep(3.0)
    assert joiner.call("peers")["peers"] == []
    assert joiner.counters()["dials_failed"] >= 2
    # B appears (bootstrapped to A); the joiner reaches B, then learns A by peer exchange.
    [b] = net.start({"seed": seed_b, "port": port_b, "bootstrap": [a.addr]})
    assert wait_until(lambda: b.peer_id in joiner.call("peers")["peers"], 20)
    assert wait_until(lambda: a.peer_id in joiner.call("peers")["peers"], 20)
    assert joiner.call("wait_mesh", kind=KIND, within=10)["ok"]
    payload = signed(9, "after a rough start")
    a.call("publish", kind=KIND, payload=payload.hex())
    assert delivered_to([joiner], payload, 15) == [joiner]


def test_a_peer_with_a_wrong_hello_is_refused(net: Network) -> None:
    fork_a, fork_b = b"fork-A".hex(), b"fork-B".hex()
    nodes = mesh_of(net, 2, extra={"hello": fork_a})
    intruder = net.spawn(
        {
            "seed": seed(90),
            "hello": fork_b,
            "admit_hello": fork_a,
            "bootstrap": [nodes[0].addr, nodes[1].addr],
        }
    ).wait_ready()
    wait_meshed(nodes)
    assert wait_until(lambda: nodes[0].counters()["peers_refused"] >= 1, 15)
    payload = signed(11, "fork A only")
    nodes[0].call("publish", kind=KIND, payload=payload.hex())
    assert delivered_to(nodes[1:], payload, 15) == nodes[1:]
    time.sleep(1.0)
    assert intruder.call("peers")["peers"] == []
    assert payload.hex() not in intruder.received_payloads()
    for node in nodes:
        assert intruder.peer_id not in node.call("peers")["peers"]
