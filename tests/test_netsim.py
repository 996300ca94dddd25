"""Network coordination at scale, in the simulator: 1,000 nodes running the real gate, tallies
and rollouts over a simulated gossip network (virtual clock, measured latency, 1 % loss).

Each test is named after the behaviour or attack it stages. Salts: the phase tests pick the
plan salt with :func:`~blackhole_sync.testing.netsim.salt_for`, the first ``salt-<i>`` that
puts exactly the intended number of the simulated nodes in the first phase.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from blackhole_sync.documents import (
    Envelope,
    HealthReport,
    PrivateKey,
    Proposal,
    RolloutPhase,
    RolloutPlan,
    Vote,
)
from blackhole_sync.fetch import PeerMessage, Verdict
from blackhole_sync.network.consensus import ProposalState, certificate_bytes, make_vote
from blackhole_sync.network.rollout import node_phase, node_position
from blackhole_sync.testing.netsim import NetSim, SimConfig, salt_for

DIGEST = "ab" * 32
OTHER_DIGEST = "cd" * 32
VALIDATORS = 50


def proposal(sim: NetSim, *, threshold: int = 7500, height: int | None = 130) -> Proposal:
    return Proposal(
        "proto-2", "2.0.0", 2, threshold, sim.at(10), sim.at(70), sim.at(86_400),
        activation_delay=60, release_digest=DIGEST, grace=30, activation_height=height,
    )  # fmt: skip


def test_a_proposal_locks_in_and_activates_at_the_same_height_on_1000_nodes_also_one_that_missed_every_vote() -> (
    None
):
    sim = NetSim(SimConfig(nodes=1000, seed=7), validators=range(VALIDATORS))
    p = sim.propose(proposal(sim))
    for i in range(VALIDATORS):
        sim.vote(i, p, support=i < 45, at=10 + sim.rng.random() * 30)  # 90 % support
    absent = 777
    sim.set_offline(absent, 0, 72)  # misses every vote and the window's end
    sim.run(200)
    assert Counter(n.state(p.id) for n in sim.nodes) == {ProposalState.ACTIVE: 1000}
    assert {n.active_height[p.id] for n in sim.nodes} == {130}
    missed = sim.nodes[absent]
    assert missed.trackers[p.id].locked_in_by == "certificate"
    assert len(missed.trackers[p.id].votes) < VALIDATORS  # it never saw them all
    # every node locked in within the grace period, and activation fired once per node
    assert max(n.locked_in_at[p.id] for n in sim.nodes) < 100
    assert sum(1 for e in sim.events if e[2] == "protocol-activated") == 1000
    print("messages per node:", sim.messages_per_node())


def test_a_node_back_only_after_the_grace_period_asks_for_the_certificate_before_failing() -> None:
    sim = NetSim(SimConfig(nodes=200, seed=17), validators=range(20))
    p = sim.propose(proposal(sim))  # window ends at 70 s, grace 30 s, activation at 130
    for i in range(20):
        sim.vote(i, p, at=10 + sim.rng.random() * 30)
    sim.set_offline(150, 0, 110)  # away for the window and the whole grace period
    sim.run(200)
    back = sim.nodes[150]
    assert back.trackers[p.id].locked_in_by == "certificate"
    assert back.state(p.id) is ProposalState.ACTIVE and back.active_height[p.id] == 130
    assert p.id not in back.failed_at


def test_a_proposal_below_its_threshold_fails_at_the_timeout_on_every_node() -> None:
    sim = NetSim(SimConfig(nodes=1000, seed=8), validators=range(VALIDATORS))
    p = sim.propose(proposal(sim))
    for i in range(VALIDATORS):
        sim.vote(i, p, support=i < 37, at=10 + sim.rng.random() * 30)  # 74 % < 75 %
    sim.run(99)
    assert Counter(n.state(p.id) for n in sim.nodes) == {ProposalState.STARTED: 1000}
    sim.run(200)
    assert Counter(n.state(p.id) for n in sim.nodes) == {ProposalState.FAILED: 1000}
    assert not any(n.locked_in_at for n in sim.nodes)
    assert not any(n.newest.get("certificate") for n in sim.nodes)


def test_fifty_votes_from_unlisted_keys_and_fifty_from_one_listed_key_count_as_one() -> None:
    sim = NetSim(SimConfig(nodes=200, seed=9), validators=range(10))
    p = sim.propose(proposal(sim, threshold=1000))  # 10 %: one real validator is enough
    sybils = [PrivateKey.generate() for _ in range(50)]
    for i, key in enumerate(sybils):  # well-formed, signed votes by keys outside the set
        sim.schedule(11 + i * 0.01, sim.publish, 100 + i, "vote",
                     make_vote(key, p, "blackhole", 1))  # fmt: skip
    listed = sim.nodes[3]
    for seq in range(1, 51):  # one validator, fifty times (new seqs)
        payload = make_vote(listed.key, p, "blackhole", seq, support=True)
        sim.schedule(12 + seq * 0.01, sim.publish, 3, "vote", payload)
    sim.run(60)
    for node in sim.nodes:
        tracker = node.trackers[p.id]
        assert set(tracker.votes) <= {listed.node_id}
        assert tracker.support_weight <= 1
    assert sum(n.trackers[p.id].support_weight for n in sim.nodes) >= 190  # it did spread
    # a sybil vote is refused at every gate it reaches (and never forwarded)
    decided = sim.nodes[0].gate.decide(
        PeerMessage("vote", make_vote(sybils[0], p, "blackhole", 2), "x")
    )
    assert decided.verdict is Verdict.REJECT and "validator set" in decided.reason


def test_a_vote_replayed_for_another_release_or_another_network_is_refused() -> None:
    sim = NetSim(SimConfig(nodes=50, seed=10), validators=range(10))
    p = sim.propose(proposal(sim))
    voter = sim.nodes[1]
    node = sim.nodes[20]
    # the same validator's vote, bound to another release's digest
    other_release = Proposal(**{**_fields(p), "release_digest": OTHER_DIGEST})
    wrong_release = make_vote(voter.key, other_release, "blackhole", 5)
    decided = node.gate.decide(PeerMessage("vote", wrong_release, "x"))
    assert decided.verdict is Verdict.REJECT and "another release" in decided.reason
    # ... and one made for a test network
    wrong_network = make_vote(voter.key, p, "testnet", 6)
    decided = node.gate.decide(PeerMessage("vote", wrong_network, "x"))
    assert decided.verdict is Verdict.REJECT and "network" in decided.reason
    # ... and a genuine vote relabelled for the other release: its signature breaks
    genuine = Envelope.from_bytes(make_vote(voter.key, p, "blackhole", 7))
    relabelled = Envelope.of({**genuine.signed, "release_digest": OTHER_DIGEST}, genuine.signatures)
    assert node.gate(PeerMessage("vote", relabelled.raw, "x")) is Verdict.REJECT
    # none of them counted; the genuine one does, once
    assert node.trackers[p.id].votes == {}
    assert node.gate(PeerMessage("vote", genuine.raw, "x")) is Verdict.ACCEPT
    assert node.gate(PeerMessage("vote", genuine.raw, "y")) is Verdict.IGNORE


def test_a_certificate_below_the_threshold_or_with_a_forged_vote_is_rejected() -> None:
    sim = NetSim(SimConfig(nodes=50, seed=11), validators=range(10))
    p = sim.propose(proposal(sim))
    for i in range(8):
        sim.vote(i, p, at=11)
    sim.run(69)
    full = sim.nodes[30].trackers[p.id].make_certificate()
    assert full is not None and len(full.votes) == 8  # 75 % of 10: eight votes
    short = type(full)(full.network_id, full.proposal, full.release_digest, full.votes[:7])
    fresh = NetSim(SimConfig(nodes=50, seed=11), validators=range(10))
    fresh.propose(proposal(fresh))
    gate = fresh.nodes[5].gate
    decided = gate.decide(PeerMessage("certificate", certificate_bytes(short), "x"))
    assert decided.verdict is Verdict.REJECT and "threshold" in decided.reason
    forged_vote = full.votes[0].__class__(
        full.votes[0].node_id, full.votes[0].seq, full.votes[0].expires, "00" * 64
    )
    forged = type(full)(
        full.network_id, full.proposal, full.release_digest, (forged_vote, *full.votes[1:])
    )
    assert gate(PeerMessage("certificate", certificate_bytes(forged), "x")) is Verdict.REJECT
    assert gate(PeerMessage("certificate", certificate_bytes(full), "x")) is Verdict.ACCEPT
    assert gate(PeerMessage("certificate", certificate_bytes(full), "y")) is Verdict.IGNORE


def plan_for(sim: NetSim, count: int, *, halt_bp: int = 1000) -> RolloutPlan:
    ids = [n.node_id for n in sim.nodes]
    salt = salt_for(ids, DIGEST, 1000, count)  # exactly `count` nodes in the first phase
    return RolloutPlan(
        "2.0.0", 1, sim.at(86_400), sim.at(10),
        (RolloutPhase("canary", 1000, 60), RolloutPhase("half", 5000, 60),
         RolloutPhase("all", 10_000, 60)),
        salt, halt_bp,
    )  # fmt: skip


def test_a_phase_installs_on_exactly_the_nodes_whose_hash_falls_inside_it() -> None:
    sim = NetSim(SimConfig(nodes=1000, seed=12), validators=range(0, 1000, 20))
    plan = plan_for(sim, 100)
    sim.rollout(plan, DIGEST, healthy=None)
    sim.run(69)  # the canary phase only
    inside = {n.index for n in sim.nodes if node_position(n.node_id, DIGEST, plan.salt) < 1000}
    assert len(inside) == 100
    assert {n.index for n in sim.nodes if "2.0.0" in n.installed} == inside
    sim.run(130)  # the second phase: cumulative 50 %
    second = {n.index for n in sim.nodes if node_phase(plan, n.node_id, DIGEST) in (0, 1)}
    assert {n.index for n in sim.nodes if "2.0.0" in n.installed} == second
    sim.run(200)
    assert all("2.0.0" in n.installed for n in sim.nodes)


def test_failing_validator_health_reports_over_the_threshold_halt_the_rollout_and_no_further_node_installs() -> (
    None
):
    sim = NetSim(SimConfig(nodes=1000, seed=13), validators=range(VALIDATORS))
    plan = plan_for(sim, 100, halt_bp=1000)  # 10 % of the validator weight halts
    canaries = [n.index for n in sim.nodes if node_phase(plan, n.node_id, DIGEST) == 0]
    failing_validators = [i for i in canaries if i < VALIDATORS]
    assert len(failing_validators) >= 5, "the canary phase must hold 5 validators for this test"
    sim.rollout(plan, DIGEST, healthy=lambda i: False)  # the release is broken
    sim.run(250)
    installed = {n.index for n in sim.nodes if "2.0.0" in n.installed}
    assert installed == set(canaries)  # phase 2 and 3 never install
    halted = [n.halted.get("2.0.0") for n in sim.nodes]
    assert all(h is not None and h < 70 for h in halted)  # every node knew before phase 2


def test_the_same_failing_reports_from_keys_outside_the_validator_set_halt_nothing() -> None:
    sim = NetSim(SimConfig(nodes=1000, seed=13), validators=range(900, 950))
    plan = plan_for(sim, 100, halt_bp=1000)
    canaries = {n.index for n in sim.nodes if node_phase(plan, n.node_id, DIGEST) == 0}
    reporting = canaries - set(range(900, 950))
    assert len(reporting) >= 90
    # every canary outside the validator set reports failure
    sim.rollout(plan, DIGEST, healthy=lambda i: 900 <= i < 950)
    sim.run(69)
    failing = [r for r in sim.nodes[0].rollouts["2.0.0"].health.others.values() if not r.healthy]
    assert len(failing) >= 85  # the reports arrived (1 % of messages are lost)...
    assert not any(n.halted for n in sim.nodes)  # ... and halted nothing
    sim.run(74)  # the second phase opens and installs
    second = {n.index for n in sim.nodes if node_phase(plan, n.node_id, DIGEST) == 1}
    assert {n.index for n in sim.nodes if "2.0.0" in n.installed} == canaries | second


def test_a_governance_halt_stops_nodes_that_have_not_installed_and_rolls_back_those_configured_to() -> (
    None
):
    sim = NetSim(SimConfig(nodes=1000, seed=14), validators=range(VALIDATORS))
    plan = plan_for(sim, 100, halt_bp=0)
    for node in sim.nodes[::2]:
        node.rollback_on_halt = True
    sim.rollout(plan, DIGEST, healthy=None)
    sim.run(40)
    sim.halt(0, "2.0.0", "regression seen by operators")
    sim.run(250)
    canaries = {n.index for n in sim.nodes if node_phase(plan, n.node_id, DIGEST) == 0}
    assert all(n.halted.get("2.0.0") is not None for n in sim.nodes)
    for node in sim.nodes:
        if node.index in canaries and not node.rollback_on_halt:
            assert node.installed == {"2.0.0"}
        else:
            assert node.installed == set()
    assert {n.index for n in sim.nodes if n.rolled_back} == {
        i for i in canaries if sim.nodes[i].rollback_on_halt
    }


def _fields(p: Proposal) -> dict[str, object]:
    return {
        "id": p.id, "release": p.release, "protocol_version": p.protocol_version,
        "threshold_bp": p.threshold_bp, "start": p.start, "timeout": p.timeout,
        "expires": p.expires, "activation_delay": p.activation_delay,
        "release_digest": p.release_digest, "grace": p.grace,
        "activation_height": p.activation_height,
    }  # fmt: skip


def test_health_reports_and_votes_are_the_node_s_own() -> (
    None
):  # a report signed by one node for another is refused
    sim = NetSim(SimConfig(nodes=20, seed=15), validators=range(5))
    victim, attacker = sim.nodes[1], sim.nodes[2]
    report = HealthReport(
        victim.node_id, "blackhole", 1, sim.now + dt.timedelta(hours=1), "2.0.0", DIGEST, False
    )
    forged = Envelope.sign(report.to_dict(), [attacker.key]).raw
    assert sim.nodes[3].gate(PeerMessage("health", forged, "x")) is Verdict.REJECT
    vote = Vote(victim.node_id, "blackhole", 1, sim.at(86_400), "p", DIGEST, True)
    forged_vote = Envelope.sign(vote.to_dict(), [attacker.key]).raw
    assert sim.nodes[3].gate(PeerMessage("vote", forged_vote, "x")) is Verdict.REJECT


pytestmark = pytest.mark.timeout(300)
