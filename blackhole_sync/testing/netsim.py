"""The network simulator: many nodes running the real coordination code, in one process.

Each simulated node has its own :class:`~blackhole_sync.network.PeerMessageGate` (its own seq
floors), its own :class:`~blackhole_sync.network.consensus.ProposalTracker` per proposal and
:class:`~blackhole_sync.network.rollout.PhasedRollout` per plan -- the code ``node run`` runs.
What is simulated is only what lies outside that code:

* **the transport**: announce / subscribe / query over a random graph of ``degree`` peers per
  node, as GossipSub's mesh does: a node validates a message once (the first copy to arrive;
  later copies are dropped unvalidated, as gossip's seen cache does, and counted as received
  wire messages), forwards what its gate accepted to its other peers, penalises nothing. A
  catch-up query asks ``query_peers`` peers for their newest ``query_items`` messages of a
  kind and runs each answer through the gate (the gossip plugin's limits).
* **time**: a virtual clock (an event queue; nothing sleeps) and a chain height that grows by
  one every ``block_interval`` virtual seconds (the ``blackhole_sync_chain_height`` hook's
  stand-in).
* **the wire**: a per-hop latency drawn from a log-normal distribution and a loss rate, taken
  from the gossip plugin's measurements (``test_a_message_reaches_every_node``: 8 processes
  on one machine, a median of 0.099 s over two to three hops and 0.418 s for the slowest): a
  median of 35 ms per hop, sigma 0.62 (about 150 ms at the 99th percentile), capped at 2 s,
  and 1 % of messages lost.

**One verification per distinct message.** Verifying a signed document -- the strict parse,
the signatures over the canonical bytes, the model -- is a pure function of the bytes and the
trusted root, which every simulated node shares. The gates therefore share one cache of those
results (the gate's ``shared`` mapping): the first node to see a payload verifies it, the
others reuse the result. What each gate decides from there -- expiry, the validator set, the
proposal binding, seq floors -- is its own. The outcome is the one each node would compute
alone; only the CPU time differs (that is what lets 1,000 nodes run in seconds and 10,000 in
the benchmark). Validator sets hold at most 500 keys here.

Governance documents that reach nodes through the index (the validator set, a proposal, a
rollout plan) are handed to every node at the start, verified once like any peer message;
halts, votes, health reports and certificates travel over the simulated gossip.
"""

from __future__ import annotations

import array
import datetime as _dt
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen

from .._fsutil import sha256_hex
from ..documents import (
    Envelope,
    HaltDoc,
    HealthReport,
    LockInCertificate,
    PrivateKey,
    Proposal,
    Role,
    RolloutPlan,
    Root,
    ValidatorSet,
    Vote,
)
from ..fetch import PeerMessage, Verdict
from ..network.consensus import ProposalState, ProposalTracker, certificate_bytes, make_vote
from ..network.messages import Decided, PeerMessageGate
from ..network.rollout import PhasedRollout

__all__ = [
    "EPOCH",
    "LatencyModel",
    "MAX_SIM_VALIDATORS",
    "NetSim",
    "SimConfig",
    "SimNode",
]

#: Virtual time 0.
EPOCH = _dt.datetime(2030, 1, 1, tzinfo=_dt.UTC)
#: Largest validator set the simulator builds.
MAX_SIM_VALIDATORS = 500


@frozen
class LatencyModel:
    """Per-hop delay (log-normal: ``median`` seconds, ``sigma``; capped) and loss (bp)."""

    median: float = 0.035
    sigma: float = 0.62
    cap: float = 2.0
    loss_bp: int = 100

    def sample(self, rng: random.Random) -> float | None:
        """A delay in seconds, or None when the message is lost."""
        if self.loss_bp and rng.random() * 10_000 < self.loss_bp:
            return None
        return min(self.cap, self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0)))

    def table(self, rng: random.Random, size: int = 1 << 16) -> list[float | None]:
        """``size`` samples drawn once (the simulator picks from them: same distribution,
        a fraction of the cost)."""
        return [self.sample(rng) for _ in range(size)]


@frozen
class SimConfig:
    nodes: int = 1000
    degree: int = 6
    latency: LatencyModel = LatencyModel()
    seed: int = 1
    block_interval: float = 1.0
    query_peers: int = 4
    query_items: int = 16
    #: seconds between catch-up rounds of a node that has not decided a proposal yet
    catch_up_every: float = 5.0
    #: spread of the nodes' evaluations after the window ends (their clocks and catch-up
    #: rounds differ); a node that adopts a certificate meanwhile does not build its own
    evaluate_jitter: float = 2.0
    network_id: str = "blackhole"


class _Floors(dict[tuple[str, str], int]):
    """In-memory seq floors (the node's ``state.db`` in a real node)."""

    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        return self.get((kind, node_id))

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        key = (kind, node_id)
        if self.get(key, -1) < seq:
            self[key] = seq


class SimNode:
    """One simulated node: its key, gate, trackers, rollouts, and what happened to it."""

    def __init__(self, sim: NetSim, index: int, key: PrivateKey) -> None:
        self.sim = sim
        self.index = index
        self.key = key
        self.node_id = key.public_key.hex
        self.online = True
        self.peers: list[int] = []
        self.floors = _Floors()
        self.proposals: dict[str, Proposal] = {}
        self.trackers: dict[str, ProposalTracker] = {}
        self.rollouts: dict[str, PhasedRollout] = {}
        self.installed: set[str] = set()
        self.rolled_back: set[str] = set()
        self.halted: dict[str, float] = {}  # release -> when this node learnt of the halt
        self.locked_in_at: dict[str, float] = {}
        self.failed_at: dict[str, float] = {}
        self.active_height: dict[str, int] = {}
        self.active_at: dict[str, float] = {}
        self.newest: dict[str, deque[bytes]] = {}
        self.received = 0  # wire messages (duplicates included)
        self.validated = 0
        self.sent = 0
        self.seq = 0
        self.rollback_on_halt = False
        self.gate = PeerMessageGate(
            lambda: sim.root,
            self.floors,
            clock=lambda: sim.now,
            validators=lambda: sim.validators,
            proposal=self.proposals.get,
            shared=sim.verified,
            recent=0,
        )

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def remember(self, kind: str, payload: bytes) -> None:
        box = self.newest.get(kind)
        if box is None:
            box = self.newest[kind] = deque(maxlen=self.sim.config.query_items)
        box.append(payload)

    def state(self, proposal: str) -> ProposalState:
        return self.trackers[proposal].state(self.sim.now, self.sim.height())


class NetSim:
    """The simulated network (see the module docstring).

    ``validators`` maps node indexes to weights (at most :data:`MAX_SIM_VALIDATORS`). The
    governance role has ``governance_keys`` keys and a threshold of 2 (or 1 with one key).
    """

    def __init__(
        self,
        config: SimConfig = SimConfig(),
        *,
        validators: Mapping[int, int] | Iterable[int] = (),
        governance_keys: int = 3,
    ) -> None:
        if config.degree < 1 or config.nodes < 2:
            raise ValueError("a network needs at least two nodes and one peer each")
        self.config = config
        self.rng = random.Random(config.seed)
        self.t = 0.0
        self._now = (0.0, EPOCH)
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._tie = itertools.count()
        self._arrival: dict[str, array.array[float]] = {}
        self.verified: dict[Any, Any] = {}
        self.lost = 0
        self.events: list[tuple[float, int, str, str]] = []
        self._delays = config.latency.table(self.rng)
        self._mask = len(self._delays) - 1
        self.governance = [_key(self.rng) for _ in range(governance_keys)]
        self.root = _root(self.governance, config.network_id, self.rng)
        self.nodes = [SimNode(self, i, _key(self.rng)) for i in range(config.nodes)]
        self._wire()
        weights = validators if isinstance(validators, Mapping) else dict.fromkeys(validators, 1)
        if len(weights) > MAX_SIM_VALIDATORS:
            raise ValueError(f"at most {MAX_SIM_VALIDATORS} validators")
        self.validators: ValidatorSet | None = None
        if weights:
            doc = ValidatorSet(
                1,
                self.now + _dt.timedelta(days=30),
                {self.nodes[i].node_id: w for i, w in weights.items()},
            )
            self.validators = self.distribute("validators", self.sign_governance(doc.to_dict()))

    # -- time ------------------------------------------------------------------------------

    @property
    def now(self) -> _dt.datetime:
        t, when = self._now
        if t != self.t:
            when = EPOCH + _dt.timedelta(seconds=self.t)
            self._now = (self.t, when)
        return when

    def delay(self) -> float | None:
        return self._delays[self.rng.getrandbits(16) & self._mask]

    def at(self, seconds: float) -> _dt.datetime:
        return EPOCH + _dt.timedelta(seconds=seconds)

    def height(self) -> int:
        return int(self.t // self.config.block_interval)

    def time_of_height(self, height: int) -> float:
        return height * self.config.block_interval

    def schedule(self, at: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (max(at, self.t), next(self._tie), fn, args))

    def run(self, until: float) -> None:
        """Process events up to virtual time ``until``."""
        queue = self._queue
        while queue and queue[0][0] <= until:
            t, _, fn, args = heapq.heappop(queue)
            self.t = t
            fn(*args)
        self.t = max(self.t, until)

    def log(self, node: SimNode, event: str, detail: str = "") -> None:
        self.events.append((self.t, node.index, event, detail))

    # -- the graph and the wire ------------------------------------------------------------

    def _wire(self) -> None:
        """Each node dials ``degree // 2`` random others (links are both ways), then a ring
        keeps the graph connected."""
        n, rng = self.config.nodes, self.rng
        links: list[set[int]] = [set() for _ in range(n)]
        for i in range(n):
            links[i].add((i + 1) % n)
            links[(i + 1) % n].add(i)
            while len(links[i]) < self.config.degree:
                j = rng.randrange(n)
                if j != i:
                    links[i].add(j)
                    links[j].add(i)
        for node, peers in zip(self.nodes, links, strict=True):
            node.peers = sorted(peers)

    def sign_governance(self, signed: Mapping[str, Any]) -> bytes:
        return Envelope.sign(signed, self.governance[:2]).raw

    def distribute(self, kind: str, payload: bytes) -> Any:
        """Hand a governance document to every node, as the index would (each gate decides)."""
        document = None
        for node in self.nodes:
            decided = node.gate.decide(PeerMessage(kind, payload, "index", "netsim"))
            if decided.verdict is not Verdict.ACCEPT:
                raise ValueError(f"node {node.index} refused the {kind}: {decided.reason}")
            document = decided.document
            self._act(node, decided, payload)
        return document

    def publish(self, index: int, kind: str, payload: bytes) -> Decided:
        """Node ``index`` spreads ``payload``: its own gate first (as PeerNetwork.announce)."""
        node = self.nodes[index]
        decided = node.gate.decide(PeerMessage(kind, payload, "self", "netsim"))
        if decided.verdict is Verdict.REJECT:
            return decided
        if decided.verdict is Verdict.ACCEPT:
            self._act(node, decided, payload)
        mid = sha256_hex(kind.encode() + b"\0" + payload)
        arrival = self._arrival.get(mid)
        if arrival is None:
            arrival = self._arrival[mid] = array.array("d", [math.inf]) * len(self.nodes)
        arrival[index] = self.t
        self._forward(node, kind, payload, mid, exclude=-1)
        return decided

    def _forward(self, node: SimNode, kind: str, payload: bytes, mid: str, exclude: int) -> None:
        arrival = self._arrival[mid]
        delays, bits, mask = self._delays, self.rng.getrandbits, self._mask
        for peer in node.peers:
            if peer == exclude:
                continue
            node.sent += 1
            delay = delays[bits(16) & mask]
            if delay is None:
                self.lost += 1
                continue
            when = self.t + delay
            if when >= arrival[peer]:  # a copy gets there first: this one is a duplicate
                self.nodes[peer].received += 1
                continue
            arrival[peer] = when
            self.schedule(when, self._deliver, peer, node.index, kind, payload, mid)

    def _deliver(self, index: int, sender: int, kind: str, payload: bytes, mid: str) -> None:
        node = self.nodes[index]
        arrival = self._arrival[mid]
        node.received += 1
        if arrival[index] < self.t:  # an earlier copy was delivered: seen cache
            return
        if not node.online:
            arrival[index] = math.inf  # it never saw it; a copy after it is back may arrive
            return
        node.validated += 1
        decided = node.gate.decide(PeerMessage(kind, payload, str(sender), "netsim"))
        if decided.verdict is Verdict.ACCEPT:
            self._act(node, decided, payload)
            self._forward(node, kind, payload, mid, exclude=sender)

    def query(self, index: int, kind: str) -> int:
        """A catch-up round: node ``index`` asks some peers for their newest ``kind``; each
        answer goes through its gate. Returns how many it accepted."""
        node = self.nodes[index]
        asked = self.rng.sample(node.peers, min(self.config.query_peers, len(node.peers)))
        accepted = 0
        for peer in asked:
            other = self.nodes[peer]
            if not other.online or self.delay() is None:
                continue
            for payload in list(other.newest.get(kind, ())):
                node.received += 1
                node.validated += 1
                decided = node.gate.decide(PeerMessage(kind, payload, str(peer), "netsim"))
                if decided.verdict is Verdict.ACCEPT:
                    accepted += 1
                    self._act(node, decided, payload)
        return accepted

    # -- what a node does with an accepted message (the agent's dispatch) ------------------

    def _act(self, node: SimNode, decided: Decided, payload: bytes) -> None:
        kind, document = decided.kind, decided.document
        node.remember(kind, payload)
        if kind == "proposal":
            self._track(node, document)
        elif kind == "vote":
            tracker = node.trackers.get(document.proposal)
            if tracker is not None and decided.envelope is not None:
                tracker.add_vote(document, decided.envelope.signatures[0].sig)
                if tracker.evaluated and tracker.locked_in_by is None:
                    self._evaluate(node.index, tracker.proposal.id)
        elif kind == "certificate":
            tracker = node.trackers.get(document.proposal)
            if tracker is not None and tracker.adopt(document, self.now):
                self._locked_in(node, tracker)
        elif kind == "halt":
            self._halt(node, document.release, f"halt: {document.reason}")
        elif kind == "health":
            rollout = node.rollouts.get(document.release)
            if rollout is not None and rollout.health.add(document):
                reason = rollout.halted()
                if reason is not None:
                    self._halt(node, document.release, reason)

    def _track(self, node: SimNode, proposal: Proposal) -> None:
        node.proposals[proposal.id] = proposal
        if proposal.id in node.trackers or self.validators is None:
            return
        tracker = ProposalTracker(proposal, self.validators, self.config.network_id)
        node.trackers[proposal.id] = tracker
        end = (proposal.timeout - EPOCH).total_seconds()
        # evaluate at the end of the window, after one catch-up round (query latency)
        self.schedule(end, self._window_end, node.index, proposal.id)
        deadline = (proposal.deadline - EPOCH).total_seconds()
        self.schedule(deadline, self._deadline, node.index, proposal.id)

    def _window_end(self, index: int, proposal_id: str) -> None:
        node = self.nodes[index]
        if not node.online:
            return  # it catches up when it comes back
        self.query(index, "certificate")
        self.query(index, "vote")
        wait = 2 * self.config.latency.median + self.rng.random() * self.config.evaluate_jitter
        self.schedule(self.t + wait, self._evaluate, index, proposal_id)

    def _evaluate(self, index: int, proposal_id: str) -> None:
        node = self.nodes[index]
        tracker = node.trackers[proposal_id]
        before = tracker.locked_in_by
        tracker.evaluate(self.now)
        if before is None and tracker.locked_in_by == "tally":
            self._locked_in(node, tracker)
            certificate = tracker.make_certificate()
            if certificate is not None:
                self.publish(index, "certificate", certificate_bytes(certificate))
        elif tracker.locked_in_by is None and self.t < _secs(tracker.proposal.deadline):
            self.schedule(self.t + self.config.catch_up_every, self._catch_up, index, proposal_id)

    def _catch_up(self, index: int, proposal_id: str) -> None:
        node = self.nodes[index]
        tracker = node.trackers[proposal_id]
        if tracker.locked_in_by is not None or tracker.failed or not node.online:
            return
        self.query(index, "certificate")
        self._evaluate(index, proposal_id)

    def _deadline(self, index: int, proposal_id: str) -> None:
        node = self.nodes[index]
        if node.online and node.state(proposal_id) is ProposalState.FAILED:
            node.failed_at[proposal_id] = self.t
            self.log(node, "failed", proposal_id)

    def _locked_in(self, node: SimNode, tracker: ProposalTracker) -> None:
        pid = tracker.proposal.id
        node.locked_in_at[pid] = self.t
        self.log(node, "locked_in", f"{pid} by {tracker.locked_in_by}")
        activation = tracker.activation
        if activation.height is not None:
            at = self.time_of_height(activation.height)
        else:
            assert activation.time is not None
            at = _secs(activation.time)
        self.schedule(at, self._activate, node.index, pid)

    def _activate(self, index: int, proposal_id: str) -> None:
        """The node's check on each new block: ACTIVE once the activation point is reached
        (scheduled at that block: the same as polling every block)."""
        node = self.nodes[index]
        if node.state(proposal_id) is ProposalState.ACTIVE and proposal_id not in node.active_at:
            node.active_at[proposal_id] = self.t
            node.active_height[proposal_id] = self.height()
            self.log(node, "protocol-activated", proposal_id)

    def _halt(self, node: SimNode, release: str, reason: str) -> None:
        if release in node.halted:
            return
        node.halted[release] = self.t
        self.log(node, "halted", reason)
        if node.rollback_on_halt and release in node.installed:
            node.installed.discard(release)
            node.rolled_back.add(release)

    # -- scenarios -------------------------------------------------------------------------

    def propose(self, proposal: Proposal, *, via: int | None = None) -> Proposal:
        """Governance signs ``proposal``; it reaches nodes from the index (``via`` None) or
        over gossip from node ``via``."""
        payload = self.sign_governance(proposal.to_dict())
        if via is None:
            self.distribute("proposal", payload)
        else:
            self.publish(via, "proposal", payload)
        return proposal

    def vote(self, index: int, proposal: Proposal, *, support: bool = True, at: float) -> None:
        def cast() -> None:
            node = self.nodes[index]
            if node.online:
                payload = make_vote(
                    node.key, proposal, self.config.network_id, node.next_seq(), support=support
                )
                self.publish(index, "vote", payload)

        self.schedule(at, cast)

    def set_offline(self, index: int, start: float, end: float) -> None:
        """Node ``index`` is unreachable from ``start`` to ``end``; back online it runs a
        catch-up round for each proposal it tracks and evaluates."""

        def down() -> None:
            self.nodes[index].online = False

        def up() -> None:
            node = self.nodes[index]
            node.online = True
            for pid, tracker in node.trackers.items():
                if tracker.locked_in_by is None and not tracker.failed:
                    self.query(index, "certificate")
                    self.query(index, "vote")
                    if self.t >= _secs(tracker.proposal.timeout):
                        self._evaluate(index, pid)
                if self.t >= _secs(tracker.proposal.deadline):
                    self._deadline(index, pid)

        self.schedule(start, down)
        self.schedule(end, up)

    def rollout(
        self,
        plan: RolloutPlan,
        release_digest: str,
        *,
        healthy: Callable[[int], bool] | None = lambda _i: True,
        report_after: float = 5.0,
        install_jitter: float = 2.0,
    ) -> None:
        """Start ``plan`` on every node: each installs when its phase opens (unless halted),
        then reports its health (``healthy(index)``; None: no reports) ``report_after``
        seconds later."""
        if self.validators is None:
            raise ValueError("a rollout needs a validator set")
        payload = self.sign_governance(plan.to_dict())
        self.distribute("rollout", payload)
        for node in self.nodes:
            rollout = PhasedRollout(plan, release_digest, self.validators)
            node.rollouts[plan.release] = rollout
            decision = rollout.decide(node.node_id, self.at(1e9))
            if decision.phase is None or decision.opens is None:
                continue
            at = _secs(decision.opens) + self.rng.random() * install_jitter
            self.schedule(at, self._install, node.index, plan.release, healthy, report_after)

    def _install(
        self,
        index: int,
        release: str,
        healthy: Callable[[int], bool] | None,
        report_after: float,
    ) -> None:
        node = self.nodes[index]
        rollout = node.rollouts[release]
        if not node.online or release in node.halted:
            return
        decision = rollout.decide(node.node_id, self.now)
        if not decision.may_install:
            if decision.halted:
                self._halt(node, release, decision.reason)
            return
        node.installed.add(release)
        self.log(node, "installed", release)
        if healthy is not None:
            self.schedule(self.t + report_after, self._report, index, release, healthy(index))

    def _report(self, index: int, release: str, ok: bool) -> None:
        node = self.nodes[index]
        rollout = node.rollouts[release]
        report = HealthReport(
            node.node_id,
            self.config.network_id,
            node.next_seq(),
            self.now + _dt.timedelta(hours=1),
            release,
            rollout.release_digest,
            ok,
        )
        self.publish(index, "health", Envelope.sign(report.to_dict(), [node.key]).raw)

    def halt(self, index: int, release: str, reason: str, *, version: int = 1) -> None:
        """Governance halts ``release``; node ``index`` relays the signed halt."""
        doc = HaltDoc(release, reason, version, self.now + _dt.timedelta(days=1))
        self.publish(index, "halt", self.sign_governance(doc.to_dict()))

    # -- figures ---------------------------------------------------------------------------

    def messages_per_node(self) -> dict[str, float]:
        received = [n.received for n in self.nodes]
        validated = [n.validated for n in self.nodes]
        sent = [n.sent for n in self.nodes]
        count = len(self.nodes)
        return {
            "received_mean": round(sum(received) / count, 1),
            "received_max": max(received),
            "validated_mean": round(sum(validated) / count, 1),
            "sent_mean": round(sum(sent) / count, 1),
            "lost": self.lost,
        }


def _secs(when: _dt.datetime) -> float:
    return (when - EPOCH).total_seconds()


def _key(rng: random.Random) -> PrivateKey:
    return PrivateKey(rng.randbytes(32))


def _root(governance: Sequence[PrivateKey], network_id: str, rng: random.Random) -> Root:
    """A root whose governance role is ``governance`` (threshold 2; 1 with one key)."""
    admin = _key(rng)
    keys = {k.keyid: k.public_key for k in (admin, *governance)}
    threshold = min(2, len(governance))
    roles = {
        "root": Role((admin.keyid,), 1),
        "release": Role((admin.keyid,), 1),
        "index": Role((admin.keyid,), 1),
        "governance": Role(tuple(k.keyid for k in governance), threshold),
    }
    return Root(1, EPOCH + _dt.timedelta(days=3650), keys, roles, network_id)


def salt_for(node_ids: Sequence[str], release_digest: str, percentage_bp: int, count: int) -> str:
    """A plan salt that puts exactly ``count`` of ``node_ids`` below ``percentage_bp`` (for
    tests and the demo, which say how they chose it)."""
    from ..network.rollout import node_position

    for i in range(100_000):
        salt = f"salt-{i}"
        inside = sum(1 for n in node_ids if node_position(n, release_digest, salt) < percentage_bp)
        if inside == count:
            return salt
    raise ValueError(f"no salt puts {count} nodes below {percentage_bp} bp")


def certificate_of(node: SimNode, proposal: str) -> LockInCertificate | None:
    """The certificate a node holds or would build for ``proposal``."""
    return node.trackers[proposal].make_certificate()


def vote_document(payload: bytes) -> Vote:
    return Envelope.from_bytes(payload, expected_type="vote").parse(Vote.from_dict)
