"""UpdateConsensus: BIP9-style agreement on activating a protocol release.

The rules (ARCHITECTURE.md section 3; issue 14's decisions), so every node computes the same:

* Only the validator set counts. A vote counts when its ``node_id`` is a key of the
  governance-signed :class:`~blackhole_sync.documents.ValidatorSet`, by that key's weight,
  once per key (a node's newest vote by seq replaces its older one). Votes from other keys
  count nothing, however many there are.
* A vote binds the proposal id, the release digest (the sha256 of the release manifest the
  index lists), the network id and the node's seq; a vote for another release or another
  network does not count, and one that expires before the end of the signalling window does
  not either.
* The signed proposal's ``threshold_bp`` decides: it is reached when the supporting weight is
  at least that share of the validator set's total weight. There is no node-local threshold.
* States: ``DEFINED`` before ``start``; ``STARTED`` during the signalling window and until the
  node decides; ``LOCKED_IN`` once the node evaluated at the end of the window (after a
  catch-up round) with the threshold reached, or adopted a verified lock-in certificate;
  ``ACTIVE`` once locked in and the activation point is reached (the chain height
  ``activation_height``, or the time ``timeout + activation_delay``: the same point on every
  node whenever it learnt of the lock-in); ``FAILED`` once ``timeout + grace`` has passed with
  no lock-in and the node has evaluated (a node that was away at the end of the window and
  evaluates only after that asks its peers for a certificate for a grace period of its own
  first). ``LOCKED_IN`` and ``FAILED`` are final.
* A node that locks in by its own tally builds a :class:`~blackhole_sync.documents.
  LockInCertificate` from the supporting votes (heaviest first, then by node id, just enough to
  reach the threshold: two nodes with the same votes build the same bytes) and spreads it.

:class:`ProposalTracker` is one proposal's state on one node: pure, no I/O, every time and
height passed in. :class:`UpdateConsensus` is the design's interface over the trackers of a
node, with a ``publish`` callable for what it signs (votes, certificates).
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from attrs import frozen

from ..documents import (
    CertifiedVote,
    Envelope,
    LockInCertificate,
    PrivateKey,
    Proposal,
    RolloutPlan,
    ValidatorSet,
    Vote,
)

__all__ = [
    "Activation",
    "ConsensusResult",
    "ProposalState",
    "ProposalTracker",
    "UpdateConsensus",
    "VotingStatus",
    "certificate_bytes",
    "certificate_problem",
    "certificate_weight",
    "make_vote",
    "reaches",
    "vote_problem",
    "votes_of",
]


class ProposalState(enum.Enum):
    """BIP9's deployment states."""

    DEFINED = "defined"
    STARTED = "started"
    LOCKED_IN = "locked_in"
    ACTIVE = "active"
    FAILED = "failed"


def reaches(weight: int, total: int, threshold_bp: int) -> bool:
    """Whether ``weight`` of ``total`` is at least ``threshold_bp`` basis points (integers
    only, so every node rounds alike)."""
    return total > 0 and weight * 10_000 >= threshold_bp * total


def certificate_weight(certificate: LockInCertificate, validators: ValidatorSet) -> int:
    """The validator weight behind a certificate's votes (each key once; others count 0)."""
    return sum(validators.weight(v.node_id) for v in certificate.votes)


def vote_problem(
    vote: Vote, proposal: Proposal, validators: ValidatorSet, network_id: str
) -> str | None:
    """Why a (signature-verified) ``vote`` cannot count for ``proposal`` (None: it can)."""
    if vote.proposal != proposal.id:
        return f"a vote on {vote.proposal!r}, not {proposal.id!r}"
    if vote.network_id != network_id:
        return f"a vote on network {vote.network_id!r}"
    if proposal.release_digest and vote.release_digest != proposal.release_digest:
        return "a vote for another release (its digest differs from the proposal's)"
    if validators.weight(vote.node_id) == 0:
        return "a vote by a key outside the validator set"
    if vote.expires <= proposal.timeout:
        return "the vote expires before the end of the signalling window"
    return None


def certificate_problem(
    certificate: LockInCertificate, proposal: Proposal, validators: ValidatorSet, network_id: str
) -> str | None:
    """Why a certificate whose votes' signatures verified does not prove lock-in of
    ``proposal`` (None: it does): every vote by a validator, bound like a vote, unexpired at
    the end of the window, and their weight reaching the threshold."""
    if certificate.proposal != proposal.id:
        return f"a certificate for {certificate.proposal!r}, not {proposal.id!r}"
    if certificate.network_id != network_id:
        return f"a certificate for network {certificate.network_id!r}"
    if proposal.release_digest and certificate.release_digest != proposal.release_digest:
        return "a certificate for another release (its digest differs from the proposal's)"
    for entry in certificate.votes:
        if validators.weight(entry.node_id) == 0:
            return f"a certificate vote by {entry.node_id[:16]}..., outside the validator set"
        if entry.expires <= proposal.timeout:
            return "a certificate vote that expires before the end of the signalling window"
    weight = certificate_weight(certificate, validators)
    if not reaches(weight, validators.total_weight, proposal.threshold_bp):
        return f"certificate votes of weight {weight} do not reach the threshold"
    return None


@frozen
class Activation:
    """When a locked-in proposal activates: at a chain height, or else at a time."""

    proposal: str
    height: int | None
    time: _dt.datetime | None

    def due(self, now: _dt.datetime, height: int | None) -> bool:
        if self.height is not None:
            return height is not None and height >= self.height
        return self.time is not None and now >= self.time

    def to_dict(self) -> dict[str, Any]:
        from ..documents import format_time

        return {
            "proposal": self.proposal,
            "height": self.height,
            "time": None if self.time is None else format_time(self.time),
        }


@frozen
class VotingStatus:
    """Where a proposal's vote stands on this node."""

    proposal: str
    state: ProposalState
    support_weight: int
    oppose_weight: int
    total_weight: int
    threshold_bp: int
    voters: int
    reached: bool
    locked_in_by: str | None  # "tally" | "certificate" | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "proposal": self.proposal,
            "state": self.state.value,
            "support_weight": self.support_weight,
            "oppose_weight": self.oppose_weight,
            "total_weight": self.total_weight,
            "threshold_bp": self.threshold_bp,
            "voters": self.voters,
            "reached": self.reached,
            "locked_in_by": self.locked_in_by,
        }


@frozen
class ConsensusResult:
    """The outcome of :meth:`UpdateConsensus.check_consensus`."""

    proposal: str
    release: str
    state: ProposalState
    reached: bool
    activation: Activation


class ProposalTracker:
    """One proposal's votes and BIP9 state on one node (pure; see the module docstring).

    ``add_vote`` and ``adopt`` take documents the peer-message gate verified (signatures);
    the tracker checks what binds them to this proposal, network and validator set.
    """

    def __init__(self, proposal: Proposal, validators: ValidatorSet, network_id: str) -> None:
        self.proposal = proposal
        self.validators = validators
        self.network_id = network_id
        #: node id -> (seq, support, expires, signature hex) of its newest counted vote
        self.votes: dict[str, tuple[int, bool, _dt.datetime, str]] = {}
        self.support_weight = 0
        self.oppose_weight = 0
        self.locked_in_by: str | None = None
        self.failed = False
        self.evaluated = False
        #: when this node may conclude FAILED: ``timeout + grace``, or a grace period after
        #: its first evaluation when it first evaluated later than that (it was away)
        self.fail_after: _dt.datetime | None = None
        self.certificate: LockInCertificate | None = None

    # -- votes ---------------------------------------------------------------------------

    def vote_problem(self, vote: Vote) -> str | None:
        """Why ``vote`` cannot count for this proposal (None: it can)."""
        return vote_problem(vote, self.proposal, self.validators, self.network_id)

    def add_vote(self, vote: Vote, sig: str) -> bool:
        """Count ``vote`` (signature ``sig``, verified by the caller); True when it changed
        the tally. A node's older seq never replaces its newer vote."""
        if self.vote_problem(vote) is not None:
            return False
        old = self.votes.get(vote.node_id)
        if old is not None and old[0] >= vote.seq:
            return False
        weight = self.validators.weight(vote.node_id)
        if old is not None:
            if old[1]:
                self.support_weight -= weight
            else:
                self.oppose_weight -= weight
        if vote.support:
            self.support_weight += weight
        else:
            self.oppose_weight += weight
        self.votes[vote.node_id] = (vote.seq, vote.support, vote.expires, sig)
        return True

    @property
    def reached(self) -> bool:
        return reaches(
            self.support_weight, self.validators.total_weight, self.proposal.threshold_bp
        )

    # -- lock-in -------------------------------------------------------------------------

    def certificate_problem(self, certificate: LockInCertificate) -> str | None:
        """Why a (signature-verified) certificate does not prove lock-in here (None: it does)."""
        return certificate_problem(certificate, self.proposal, self.validators, self.network_id)

    def adopt(self, certificate: LockInCertificate, now: _dt.datetime) -> bool:
        """Lock in on a verified certificate; True when this changed the state. A proposal
        already FAILED here stays failed (it was decided after the grace period)."""
        if self.locked_in_by is not None or self._failed(now):
            return False
        if self.certificate_problem(certificate) is not None:
            return False
        self.locked_in_by = "certificate"
        self.certificate = certificate
        return True

    def evaluate(self, now: _dt.datetime) -> ProposalState:
        """The decision at the end of the signalling window (call after a catch-up round):
        LOCKED_IN when the tally reaches the threshold; until ``timeout + grace`` it may be
        called again as votes arrive."""
        if now >= self.proposal.timeout:
            if self.fail_after is None:
                late = now + _dt.timedelta(seconds=self.proposal.grace)
                self.fail_after = max(self.proposal.deadline, late)
            self.evaluated = True
            if self.locked_in_by is None and not self._failed(now) and self.reached:
                self.locked_in_by = "tally"
        return self.state(now, None)

    def make_certificate(self) -> LockInCertificate | None:
        """The certificate of this node's lock-in: supporting votes, heaviest first then by
        node id, just enough to reach the threshold (None when they do not)."""
        if self.certificate is not None:
            return self.certificate
        support = [(node, v) for node, v in self.votes.items() if v[1]]
        support.sort(key=lambda item: (-self.validators.weight(item[0]), item[0]))
        total = self.validators.total_weight
        chosen: list[CertifiedVote] = []
        weight = 0
        for node, (seq, _support, expires, sig) in support:
            chosen.append(CertifiedVote(node, seq, expires, sig))
            weight += self.validators.weight(node)
            if reaches(weight, total, self.proposal.threshold_bp):
                chosen.sort(key=lambda c: c.node_id)
                return LockInCertificate(
                    self.network_id,
                    self.proposal.id,
                    self.proposal.release_digest,
                    tuple(chosen),
                )
        return None

    # -- state ---------------------------------------------------------------------------

    def _failed(self, now: _dt.datetime) -> bool:
        """FAILED: past ``timeout + grace``, not locked in, and this node has evaluated (run
        its catch-up round) -- a node that was not there at the end of the window asks its
        peers for a certificate before it concludes anything."""
        if (
            not self.failed
            and self.evaluated
            and self.locked_in_by is None
            and now >= (self.fail_after or self.proposal.deadline)
        ):
            self.failed = True
        return self.failed

    @property
    def activation(self) -> Activation:
        p = self.proposal
        if p.activation_height is not None:
            return Activation(p.id, p.activation_height, None)
        return Activation(p.id, None, p.activation_time)

    def state(self, now: _dt.datetime, height: int | None) -> ProposalState:
        if self.locked_in_by is not None:
            if self.activation.due(now, height):
                return ProposalState.ACTIVE
            return ProposalState.LOCKED_IN
        if self._failed(now):
            return ProposalState.FAILED
        if now < self.proposal.start:
            return ProposalState.DEFINED
        return ProposalState.STARTED

    def status(self, now: _dt.datetime, height: int | None = None) -> VotingStatus:
        return VotingStatus(
            self.proposal.id,
            self.state(now, height),
            self.support_weight,
            self.oppose_weight,
            self.validators.total_weight,
            self.proposal.threshold_bp,
            len(self.votes),
            self.reached,
            self.locked_in_by,
        )


def make_vote(
    key: PrivateKey,
    proposal: Proposal,
    network_id: str,
    seq: int,
    *,
    support: bool = True,
    expires: _dt.datetime | None = None,
) -> bytes:
    """A signed vote on ``proposal`` by ``key``: bound to its release digest, the network, the
    seq; it expires with the proposal unless told otherwise."""
    vote = Vote(
        key.public_key.hex,
        network_id,
        seq,
        expires or proposal.expires,
        proposal.id,
        proposal.release_digest,
        support,
    )
    return Envelope.sign(vote.to_dict(), [key]).raw


Publish = Callable[[str, bytes], Awaitable[Any]]


class UpdateConsensus:
    """The design's UpdateConsensus for one node: its trackers, its votes, its certificates.

    ``key`` is the node's identity key (its votes), ``network_id`` the trusted root's,
    ``validators`` the verified validator set, ``publish(kind, payload)`` spreads a signed
    document (the peer network's ``announce``), ``clock`` and ``height`` give the reference
    time and the host's chain height (None when the host has none), ``next_seq()`` the node's
    next vote seq (persisted by the caller).
    """

    def __init__(
        self,
        key: PrivateKey,
        network_id: str,
        validators: ValidatorSet,
        *,
        publish: Publish,
        clock: Callable[[], _dt.datetime],
        height: Callable[[], int | None] = lambda: None,
        next_seq: Callable[[], int],
        plans: Mapping[str, RolloutPlan] | None = None,
    ) -> None:
        self.key = key
        self.network_id = network_id
        self.validators = validators
        self._publish = publish
        self._clock = clock
        self._height = height
        self._next_seq = next_seq
        self._plans = dict(plans or {})
        self.trackers: dict[str, ProposalTracker] = {}

    def track(self, proposal: Proposal) -> ProposalTracker:
        """The tracker of ``proposal`` (a newer version of the same id replaces it)."""
        tracker = self.trackers.get(proposal.id)
        if tracker is None or tracker.proposal.version < proposal.version:
            tracker = ProposalTracker(proposal, self.validators, self.network_id)
            self.trackers[proposal.id] = tracker
        return tracker

    def propose_update(
        self,
        proposal_id: str,
        release: str,
        release_digest: str,
        protocol_version: int,
        *,
        threshold_bp: int,
        start: _dt.datetime,
        timeout: _dt.datetime,
        grace: int = 0,
        activation_height: int | None = None,
        activation_delay: int = 0,
        expires: _dt.datetime | None = None,
    ) -> Proposal:
        """The (unsigned) proposal for governance to sign (``governance propose``)."""
        return Proposal(
            proposal_id,
            release,
            protocol_version,
            threshold_bp,
            start,
            timeout,
            expires or timeout + _dt.timedelta(seconds=grace + activation_delay + 86_400),
            activation_delay,
            release_digest,
            grace,
            activation_height,
        )

    async def vote_on_update(self, proposal: Proposal, support: bool = True) -> bytes:
        """Sign this node's vote, count it here and publish it; the signed bytes."""
        payload = make_vote(self.key, proposal, self.network_id, self._next_seq(), support=support)
        envelope = Envelope.from_bytes(payload, expected_type="vote")
        self.track(proposal).add_vote(envelope.parse(Vote.from_dict), envelope.signatures[0].sig)
        await self._publish("vote", payload)
        return payload

    def receive_vote(self, vote: Vote, sig: str) -> bool:
        tracker = self.trackers.get(vote.proposal)
        return tracker is not None and tracker.add_vote(vote, sig)

    def receive_certificate(self, certificate: LockInCertificate) -> bool:
        tracker = self.trackers.get(certificate.proposal)
        return tracker is not None and tracker.adopt(certificate, self._clock())

    async def evaluate(self, proposal_id: str) -> ProposalState:
        """Evaluate at the end of the window; on a lock-in by tally, publish the certificate."""
        tracker = self.trackers[proposal_id]
        before = tracker.locked_in_by
        state = tracker.evaluate(self._clock())
        if before is None and tracker.locked_in_by == "tally":
            certificate = tracker.make_certificate()
            if certificate is not None:
                await self._publish("certificate", certificate_bytes(certificate))
        return state

    def check_consensus(self, proposal: Proposal) -> ConsensusResult:
        tracker = self.track(proposal)
        return ConsensusResult(
            proposal.id,
            proposal.release,
            tracker.state(self._clock(), self._height()),
            tracker.reached,
            tracker.activation,
        )

    def get_voting_status(self, proposal: Proposal) -> VotingStatus:
        return self.track(proposal).status(self._clock(), self._height())

    def schedule_activation(self, proposal: Proposal, consensus: ConsensusResult) -> Activation:
        """When ``proposal`` switches ``current`` (it must be locked in)."""
        if consensus.state not in (ProposalState.LOCKED_IN, ProposalState.ACTIVE):
            raise ValueError(f"proposal {proposal.id} is {consensus.state.value}, not locked in")
        return self.track(proposal).activation

    def coordinate_rollout(self, proposal: Proposal) -> RolloutPlan | None:
        """The signed rollout plan of the proposal's release, when governance published one."""
        return self._plans.get(proposal.release)

    def states(self) -> dict[str, ProposalState]:
        now, height = self._clock(), self._height()
        return {pid: t.state(now, height) for pid, t in self.trackers.items()}


def certificate_bytes(certificate: LockInCertificate) -> bytes:
    """A certificate's wire form: an envelope with no signatures of its own (its votes carry
    theirs), so equal certificates are equal bytes."""
    return Envelope.of(certificate.to_dict(), ()).raw


def votes_of(envelopes: Iterable[Envelope]) -> list[tuple[Vote, str]]:
    """(vote, signature) pairs of verified vote envelopes (for seeding a tracker)."""
    return [(e.parse(Vote.from_dict), e.signatures[0].sig) for e in envelopes]
