"""Benchmark: the vote tally against bare pynacl, and network coordination in the simulator.

**Tally.** VOTES signed votes (500 validators, each voting on VOTES/500 proposals; each vote
a distinct signed document of about 400 bytes) go through what a node does with a vote a peer
sends: the peer-message gate (size cap, strict parse -- a vote in canonical form by the
one-step parser ``plain_vote_envelope``, which the property tests hold equal to the general
one --, the signature over the canonical bytes, the ``Vote`` model, the binding to a known
proposal, its release digest, the network and the validator set, expiry, the seq floor) and
the proposal's tally (each validator once, by weight). The baseline is the cryptography
alone: one bare ``nacl.signing.VerifyKey.verify`` per vote over pre-encoded bytes with
pre-built keys. Floors are kept in memory here (the tally's CPU work); ``tally_ratio_sqlite``
repeats it with the node's SQLite state database (one write per accepted vote), for
information. Target: ``tally_ratio`` at most 1.5. Method:
ROUNDS interleaved rounds, the median of the per-round ratios (bench_verify's method).

**Simulator** (``blackhole_sync.testing.netsim``: the real gate, tallies and rollouts of every
node over a simulated gossip network, measured latency, 1 % loss), at 1,000 and 10,000 nodes
with a validator set of 100: from the proposal (governance publishes it at virtual time 0;
the window ends at 70 s; activation at height 130, one block a second) to the last node
LOCKED_IN and to the last node ACTIVE, in virtual seconds; from a governance halt to the last
node stopping; from the first failing validator health report to the last node stopping (an
automatic halt); messages received per node (wire copies, duplicates included) and validated;
and the CPU seconds each run took.

Run: ``.venv/bin/python bench/bench_consensus.py [--votes N] [--rounds N] [--quick]``; the
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing

from blackhole_sync.documents import (
    Envelope,
    PrivateKey,
    Proposal,
    Role,
    RolloutPhase,
    RolloutPlan,
    Root,
    ValidatorSet,
)
from blackhole_sync.fetch import PeerMessage, Verdict
from blackhole_sync.network import PeerMessageGate, ProposalTracker, make_vote
from blackhole_sync.testing.netsim import NetSim, SimConfig, salt_for

TARGET_RATIO = 1.5
VALIDATORS = 500
SIM_VALIDATORS = 100
DIGEST = hashlib.sha256(b"release manifest").hexdigest()
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Floors(dict[tuple[str, str], int]):
    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        return self.get((kind, node_id))

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        self[(kind, node_id)] = seq


def tally_world(count: int) -> tuple[Root, ValidatorSet, dict[str, Proposal], list[bytes]]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    admin = PrivateKey.generate()
    root = Root(
        1, now + dt.timedelta(days=365), {admin.keyid: admin.public_key},
        {r: Role((admin.keyid,), 1) for r in ("root", "release", "index")},
    )  # fmt: skip
    keys = [PrivateKey.generate() for _ in range(VALIDATORS)]
    validators = ValidatorSet(1, now + dt.timedelta(days=1), {k.public_key.hex: 1 for k in keys})
    rounds = max(1, count // VALIDATORS)
    window, expires = now + dt.timedelta(hours=1), now + dt.timedelta(days=1)
    proposals = {
        f"p{i}": Proposal(f"p{i}", "2.0.0", 2, 7500, now, window, expires, 0, DIGEST)
        for i in range(rounds)
    }
    votes = [
        make_vote(key, proposal, "blackhole", seq)
        for seq, proposal in enumerate(proposals.values(), 1)
        for key in keys
    ][:count]
    return root, validators, proposals, votes


def interleaved(
    library: Callable[[], object], baseline: Callable[[], object], rounds: int, clock: Any
) -> list[float]:
    library()
    baseline()
    ratios = []
    for n in range(rounds):
        times = {}
        order = [("lib", library), ("base", baseline)]
        for name, fn in order if n % 2 == 0 else reversed(order):
            start = clock()
            fn()
            times[name] = clock() - start
        ratios.append(times["lib"] / times["base"])
    return ratios


def bench_tally(count: int, rounds: int, clock: Any) -> dict[str, Any]:
    root, validators, proposals, votes = tally_world(count)
    bare = []
    for raw in votes:
        env = Envelope.from_bytes(raw)
        key = nacl.signing.VerifyKey(bytes.fromhex(env.signed["node_id"]))
        bare.append((key, env.signed_bytes, bytes.fromhex(env.signatures[0].sig)))

    def make_tally(floors: Any) -> Callable[[], None]:
        def tally() -> None:
            gate = PeerMessageGate(
                lambda: root, floors(), validators=lambda: validators, proposal=proposals.get
            )
            trackers = {
                p: ProposalTracker(prop, validators, "blackhole") for p, prop in proposals.items()
            }
            for raw in votes:
                decided = gate.decide(PeerMessage("vote", raw, "peer"))
                if decided.verdict is not Verdict.ACCEPT:
                    raise AssertionError(decided.reason)
                vote = decided.document
                trackers[vote.proposal].add_vote(vote, decided.envelope.signatures[0].sig)
            assert all(t.reached for t in trackers.values())

        return tally

    def bare_tally() -> None:
        for key, message, sig in bare:
            key.verify(message, sig)

    ratios = interleaved(make_tally(Floors), bare_tally, rounds, clock)
    with tempfile.TemporaryDirectory() as tmp:
        from blackhole_sync.node import StateDB

        counter = iter(range(10**6))

        def sqlite_floors() -> Any:
            path = Path(tmp) / f"state-{next(counter)}.db"
            StateDB.initialise(path)
            return StateDB.open(path)

        sqlite_ratios = interleaved(make_tally(sqlite_floors), bare_tally, 1, clock)
    return {
        "votes": len(votes),
        "validators": VALIDATORS,
        "tally_ratio": round(statistics.median(ratios), 3),
        "tally_round_ratios": [round(r, 3) for r in ratios],
        "tally_ratio_sqlite": round(statistics.median(sqlite_ratios), 3),
    }


def bench_sim(nodes: int, seed: int = 1) -> dict[str, Any]:
    started = time.process_time()
    sim = NetSim(SimConfig(nodes=nodes, seed=seed), validators=range(SIM_VALIDATORS))
    proposal = Proposal(
        "proto-2", "2.0.0", 2, 7500, sim.at(1), sim.at(70), sim.at(86_400), 0, DIGEST, 30, 130
    )
    sim.propose(proposal)  # from the index at t=0
    for i in range(SIM_VALIDATORS):
        sim.vote(i, proposal, support=i < 90, at=2 + sim.rng.random() * 30)
    sim.run(200)
    locked = [n.locked_in_at.get("proto-2") for n in sim.nodes]
    active = [n.active_at.get("proto-2") for n in sim.nodes]
    heights = {n.active_height.get("proto-2") for n in sim.nodes}
    consensus_msgs = sim.messages_per_node()
    consensus_cpu = time.process_time() - started

    # a rollout: the canary phase (5 %) installs; governance halts it at t=260
    started = time.process_time()
    ids = [n.node_id for n in sim.nodes]
    salt = salt_for(ids, DIGEST, 500, nodes // 20)
    plan = RolloutPlan(
        "2.1.0", 1, sim.at(86_400), sim.at(210),
        (RolloutPhase("canary", 500, 120), RolloutPhase("all", 10_000, 120)), salt, 0,
    )  # fmt: skip
    sim.rollout(plan, DIGEST, healthy=None)
    sim.run(259)
    sim.halt(0, "2.1.0", "operators saw a regression")
    sim.run(330)
    halted = [n.halted.get("2.1.0") for n in sim.nodes]
    halt_cpu = time.process_time() - started

    # an automatic halt: validators of the canary phase report failure (threshold 2 %)
    started = time.process_time()
    plan2 = RolloutPlan(
        "2.2.0", 1, sim.at(86_400), sim.at(340),
        (RolloutPhase("canary", 2000, 120), RolloutPhase("all", 10_000, 120)), salt, 200,
    )  # fmt: skip
    sim.rollout(plan2, DIGEST, healthy=lambda _i: False, report_after=3.0)
    sim.run(460)
    auto = [n.halted.get("2.2.0") for n in sim.nodes]
    reports = [t for t, _i, e, d in sim.events if e == "installed" and d == "2.2.0"]
    first_report = min(reports) + 3.0 if reports else None
    installed_after = sum(1 for n in sim.nodes if "2.2.0" in n.installed)
    auto_cpu = time.process_time() - started
    return {
        "nodes": nodes,
        "validators": SIM_VALIDATORS,
        "proposal_to_all_locked_in_s": None if None in locked else round(max(locked), 2),
        "proposal_to_all_active_s": None if None in active else round(max(active), 2),
        "window_end_to_all_locked_in_s": None if None in locked else round(max(locked) - 70, 2),
        "activation_heights": sorted(h for h in heights if h is not None),
        "halt_to_last_stop_s": None if None in halted else round(max(halted) - 259, 2),
        "auto_halt_first_report_to_last_stop_s": (
            None if None in auto or first_report is None else round(max(auto) - first_report, 2)
        ),
        "auto_halt_installed": installed_after,
        "messages_per_node_consensus": consensus_msgs,
        "messages_per_node_total": sim.messages_per_node(),
        "cpu_s": {
            "consensus": round(consensus_cpu, 1),
            "halt": round(halt_cpu, 1),
            "auto_halt": round(auto_cpu, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--votes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--nodes", type=int, action="append", help="simulator sizes")
    parser.add_argument("--quick", action="store_true", help="2,000 votes; 1,000 nodes only")
    args = parser.parse_args()
    if args.quick:
        args.votes, args.rounds = 2000, 3
    sizes = args.nodes or ([1000] if args.quick else [1000, 10_000])
    tally = bench_tally(args.votes, args.rounds, CLOCKS[args.clock])
    print(
        f"tally of {tally['votes']} signed votes ({VALIDATORS} validators) / bare pynacl: "
        f"{tally['tally_ratio']}x (target <= {TARGET_RATIO}x; rounds "
        f"{tally['tally_round_ratios']}; with SQLite floors {tally['tally_ratio_sqlite']}x)"
    )
    sims = []
    for nodes in sizes:
        result = bench_sim(nodes)
        sims.append(result)
        print(
            f"simulator, {nodes} nodes: all LOCKED_IN {result['proposal_to_all_locked_in_s']} s "
            f"and all ACTIVE {result['proposal_to_all_active_s']} s after the proposal "
            f"(heights {result['activation_heights']}); halt -> last stop "
            f"{result['halt_to_last_stop_s']} s; failing reports -> last stop "
            f"{result['auto_halt_first_report_to_last_stop_s']} s; messages/node "
            f"{result['messages_per_node_total']}; cpu {result['cpu_s']}"
        )
    print(
        json.dumps(
            {
                "benchmark": "bench_consensus",
                "clock": args.clock,
                **tally,
                "target_tally_ratio": TARGET_RATIO,
                "ok": tally["tally_ratio"] <= TARGET_RATIO,
                "simulator": sims,
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
