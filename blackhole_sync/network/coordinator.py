"""The node's coordination runtime: consensus, rollout and halts, persisted between processes.

:class:`Coordinator` ties the pure pieces to one node: its verified coordination documents
(:class:`~blackhole_sync.network.governance.CoordinationDocs`), a
:class:`~blackhole_sync.network.consensus.ProposalTracker` per proposal, a
:class:`~blackhole_sync.network.rollout.PhasedRollout` per plan, and the
:class:`~blackhole_sync.network.health.NetworkView`. What must outlive a process is kept in the
node's state database: received votes (the ``votes`` table, with their signed bytes), adopted
certificates, each tracker's decisions (evaluated, locked in by what, failed, activated at
which height), halts learnt from peers, this node's own votes, the network view's summary.
So ``node vote``, ``node status`` and ``network status`` (other processes) see what the agent
(``node run``) decided, and a restarted agent carries on where it stopped.

The agent feeds it accepted peer messages (:meth:`Coordinator.on_message`) and calls
:meth:`Coordinator.tick` about once a second: at the end of a signalling window it runs one
catch-up round, evaluates, and spreads the certificate of a lock-in by its own tally; it marks
activation when the height (the ``blackhole_sync_chain_height`` hook) or the time is reached.
The update manager asks :meth:`Coordinator.release_gate` before it installs a release: a
release a proposal names waits for its activation (skipped once the proposal failed), and on a
network with a validator set a protocol release no proposal names waits for one; a release
under a rollout plan waits for this node's phase and is never installed once halted.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from attrs import frozen

from ..documents import (
    Envelope,
    HealthReport,
    LockInCertificate,
    NodeStatusDoc,
    PrivateKey,
    Root,
    Vote,
    coordination_relpath,
    format_time,
    parse_time,
)
from .compat import CompatibilityManager, ProtocolTranslator, deprecation_warnings
from .consensus import ProposalState, ProposalTracker, certificate_bytes, make_vote
from .governance import CoordinationDocs
from .health import NetworkView
from .rollout import PhasedRollout

__all__ = ["CoordinationStore", "Coordinator", "Gate"]

log = logging.getLogger(__name__)

#: Catch-up rounds of an undecided proposal after its window ended, at most one per this many
#: seconds.
CATCH_UP_EVERY = 5.0
#: Own votes are spread again, re-signed with a new seq (gossip drops a copy it has seen, and
#: a peer that did not know the proposal yet ignored the first one), after 5, 10, 20 ...
#: seconds, at most every REVOTE_MAX seconds, until the signalling window ends.
REVOTE_FIRST = 5.0
REVOTE_MAX = 300.0

_PREFIX = "coordination:"
_PROPOSALS_DIR = coordination_relpath("proposal", "x")[: -len("x.json")]


class CoordinationStore(Protocol):
    """Where the coordinator persists (the node's :class:`~blackhole_sync.node.StateDB`)."""

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str | None) -> None: ...

    def put_vote(
        self,
        proposal: str,
        node_id: str,
        seq: int,
        support: bool,
        release_digest: str | None = None,
        document: bytes | None = None,
    ) -> None: ...

    def get_votes(self, proposal: str) -> list[dict[str, Any]]: ...


@frozen
class Gate:
    """The coordination's answer on installing a release now."""

    action: str  # "wait" | "skip"
    reason: str
    not_before: _dt.datetime | None = None


Publish = Callable[[str, bytes], Awaitable[Any]]
CatchUp = Callable[[str], Awaitable[list[Any]]]


class Coordinator:
    """One node's coordination state (see the module docstring).

    ``digests`` maps a release version to the sha256 of its manifest as the trusted index
    lists it; ``height()`` is the host's chain height (None without one); ``installed()`` the
    node's current version.
    """

    def __init__(
        self,
        store: CoordinationStore,
        key: PrivateKey,
        root: Root,
        docs: CoordinationDocs,
        *,
        digests: Mapping[str, str],
        clock: Callable[[], _dt.datetime],
        height: Callable[[], int | None] = lambda: None,
        protocol_versions: tuple[int, ...] = (),
        translators: Sequence[ProtocolTranslator] = (),
    ) -> None:
        self.store = store
        self.key = key
        self.node_id = key.public_key.hex
        self.root = root
        self.docs = docs
        self.digests = dict(digests)
        self.clock = clock
        self.height = height
        self.protocol_versions = protocol_versions
        self.translators = tuple(translators)
        self.view = NetworkView()
        self.trackers: dict[str, ProposalTracker] = {}
        self.rollouts: dict[str, PhasedRollout] = {}
        self._last_catch_up: dict[str, _dt.datetime] = {}
        self._last_vote: dict[str, tuple[_dt.datetime | None, float]] = {}
        self._build()

    # -- state ---------------------------------------------------------------------------

    def _meta(self, name: str) -> Any:
        raw = self.store.get_meta(_PREFIX + name)
        return None if raw is None else json.loads(raw)

    def _set_meta(self, name: str, value: Any) -> None:
        self.store.set_meta(
            _PREFIX + name, None if value is None else json.dumps(value, sort_keys=True)
        )

    def _build(self) -> None:
        validators = self.docs.validators
        for pid, proposal in self.docs.proposals.items():
            if validators is None:
                continue
            tracker = ProposalTracker(proposal, validators, self.root.network_id)
            for row in self.store.get_votes(pid):
                if row.get("document"):
                    env = Envelope.from_bytes(bytes(row["document"]), expected_type="vote")
                    tracker.add_vote(env.parse(Vote.from_dict), env.signatures[0].sig)
            saved = self._meta(f"tracker:{pid}:{proposal.version}") or {}
            cert = self._meta(f"certificate:{pid}")
            if cert is not None:
                certificate = Envelope.from_bytes(cert.encode(), expected_type="certificate")
                tracker.certificate = certificate.parse(LockInCertificate.from_dict)
            tracker.evaluated = bool(saved.get("evaluated"))
            tracker.locked_in_by = saved.get("locked_in_by")
            tracker.failed = bool(saved.get("failed"))
            if saved.get("fail_after"):
                tracker.fail_after = parse_time(saved["fail_after"])
            self.trackers[pid] = tracker
        for release, plan in self.docs.rollouts.items():
            digest = self.digests.get(release)
            if validators is None or digest is None:
                continue
            halt = self.docs.halts.get(release)
            self.rollouts[release] = PhasedRollout(plan, digest, validators, halt=halt)
        for release, reason in (self._meta("halts") or {}).items():
            if release in self.rollouts:
                self.rollouts[release].aborted = reason
        view = self._meta("view") or {}
        for node_id, peer in view.get("peers", {}).items():
            self.view.add_status(
                NodeStatusDoc(
                    node_id, self.root.network_id, peer["seq"], self.clock(),
                    peer.get("version"), peer.get("state", "?"),
                    parse_time(peer["since"]) if peer.get("since") else None,
                    tuple(peer.get("held", ())), peer.get("fork_id"),
                )
            )  # fmt: skip

    def _save_tracker(self, tracker: ProposalTracker) -> None:
        p = tracker.proposal
        saved = self._meta(f"tracker:{p.id}:{p.version}") or {}
        saved.update(
            evaluated=tracker.evaluated,
            locked_in_by=tracker.locked_in_by,
            failed=tracker.failed,
            fail_after=None if tracker.fail_after is None else format_time(tracker.fail_after),
        )
        self._set_meta(f"tracker:{p.id}:{p.version}", saved)

    def _tracker_meta(self, pid: str) -> dict[str, Any]:
        tracker = self.trackers[pid]
        return self._meta(f"tracker:{pid}:{tracker.proposal.version}") or {}

    # -- messages ------------------------------------------------------------------------

    def on_message(self, kind: str, document: Any, envelope: Envelope | None) -> list[str]:
        """Act on an accepted peer message; returns what happened (``"locked_in:<id>"``,
        ``"halted:<release>"``, ``"refresh"`` when the index should be checked)."""
        out: list[str] = []
        if kind == "vote" and envelope is not None:
            tracker = self.trackers.get(document.proposal)
            if tracker is not None and tracker.add_vote(document, envelope.signatures[0].sig):
                self.store.put_vote(
                    document.proposal, document.node_id, document.seq, document.support,
                    document.release_digest, envelope.raw,
                )  # fmt: skip
                if tracker.evaluated and tracker.locked_in_by is None:
                    tracker.evaluate(self.clock())
                    if tracker.locked_in_by is not None:
                        self._save_tracker(tracker)
                        out.append(f"locked_in:{tracker.proposal.id}")
        elif kind == "certificate":
            tracker = self.trackers.get(document.proposal)
            if tracker is not None and tracker.adopt(document, self.clock()):
                self._set_meta(f"certificate:{document.proposal}", _text(document))
                self._save_tracker(tracker)
                out.append(f"locked_in:{document.proposal}")
        elif kind == "health":
            self.view.add_health(document)
            rollout = self.rollouts.get(document.release)
            if rollout is not None and rollout.health.add(document):
                reason = rollout.halted()
                if reason is not None:
                    out.extend(self._halt(document.release, reason))
        elif kind == "halt":
            out.extend(self._halt(document.release, document.reason or "halted by governance"))
        elif kind == "status":
            if self.view.add_status(document):
                self._set_meta("view", {"peers": self.view.summary()["peers"]})
        elif kind in ("proposal", "rollout", "validators", "deprecation", "downgrade"):
            out.append("refresh")  # the index is the route; a gossiped copy says: look now
        return out

    def _halt(self, release: str, reason: str) -> list[str]:
        halts = self._meta("halts") or {}
        if release in halts:
            return []
        halts[release] = reason
        self._set_meta("halts", halts)
        if release in self.rollouts:
            self.rollouts[release].aborted = reason
        log.warning("rollout of %s halted: %s", release, reason)
        return [f"halted:{release}"]

    def halts(self) -> dict[str, str]:
        out = {v: h.reason or "halted by governance" for v, h in self.docs.halts.items()}
        out.update(self._meta("halts") or {})
        for release, rollout in self.rollouts.items():
            reason = rollout.halted()
            if reason is not None:
                out.setdefault(release, reason)
        return out

    # -- the agent's tick ----------------------------------------------------------------

    async def tick(self, publish: Publish | None, catch_up: CatchUp | None) -> list[str]:
        """Window ends, certificates, activation; returns what happened (``"locked_in:<id>"``,
        ``"activated:<id>"``, ``"failed:<id>"``)."""
        now, out = self.clock(), []
        for pid, tracker in self.trackers.items():
            p = tracker.proposal
            if publish is not None and now < p.timeout:
                await self._revote(pid, publish, now)
            if tracker.locked_in_by is None and not tracker.failed and now >= p.timeout:
                last = self._last_catch_up.get(pid)
                if catch_up is not None and (
                    last is None or (now - last).total_seconds() >= CATCH_UP_EVERY
                ):
                    self._last_catch_up[pid] = now
                    for kind in ("certificate", "vote"):
                        for decided in await catch_up(kind):
                            out.extend(self.on_message(kind, decided.document, decided.envelope))
                before = tracker.locked_in_by
                tracker.evaluate(now)
                self._save_tracker(tracker)
                if before is None and tracker.locked_in_by == "tally":
                    out.append(f"locked_in:{pid}")
                    certificate = tracker.make_certificate()
                    if certificate is not None:
                        self._set_meta(f"certificate:{pid}", _text(certificate))
                        if publish is not None:
                            await publish("certificate", certificate_bytes(certificate))
            out.extend(self._advance(pid, now))
        return out

    def _advance(self, pid: str, now: _dt.datetime) -> list[str]:
        tracker = self.trackers[pid]
        saved = self._tracker_meta(pid)
        state = tracker.state(now, self.height())
        if state is ProposalState.FAILED and not saved.get("failed_seen"):
            saved.update(failed=True, failed_seen=format_time(now))
            self._set_meta(f"tracker:{pid}:{tracker.proposal.version}", saved)
            return [f"failed:{pid}"]
        if state is ProposalState.ACTIVE and not saved.get("active_at"):
            saved.update(active_at=format_time(now), active_height=self.height())
            self._set_meta(f"tracker:{pid}:{tracker.proposal.version}", saved)
            return [f"activated:{pid}"]
        return []

    async def _revote(self, pid: str, publish: Publish, now: _dt.datetime) -> None:
        own = (self._meta("own_votes") or {}).get(pid)
        if own is None:
            return
        last, wait = self._last_vote.get(pid, (None, REVOTE_FIRST))
        if last is not None and (now - last).total_seconds() < wait:
            return
        if last is not None:  # again: a new seq, so peers take it as a new message
            support = json.loads(own)["signed"]["support"]
            own = self.vote(pid, support=bool(support)).decode()
        self._last_vote[pid] = (now, wait if last is None else min(2 * wait, REVOTE_MAX))
        env = Envelope.from_bytes(own.encode(), expected_type="vote")
        self.trackers[pid].add_vote(env.parse(Vote.from_dict), env.signatures[0].sig)
        try:
            await publish("vote", own.encode())
        except ValueError as exc:  # our own vote no longer passes our gate (a newer one does)
            log.info("own vote on %s not spread again: %s", pid, exc)

    # -- this node's own documents -------------------------------------------------------

    def vote(self, proposal_id: str, support: bool = True) -> bytes:
        """Sign this node's vote on ``proposal_id``, count and keep it (the agent spreads it)."""
        proposal = self.docs.proposals.get(proposal_id)
        if proposal is None:
            raise LookupError(f"no verified proposal {proposal_id!r} (run 'node check' first)")
        seq = int(self.store.get_meta(_PREFIX + "vote_seq") or "0") + 1
        self.store.set_meta(_PREFIX + "vote_seq", str(seq))
        payload = make_vote(self.key, proposal, self.root.network_id, seq, support=support)
        env = Envelope.from_bytes(payload, expected_type="vote")
        vote = env.parse(Vote.from_dict)
        tracker = self.trackers.get(proposal_id)
        if tracker is not None:
            tracker.add_vote(vote, env.signatures[0].sig)
        self.store.put_vote(proposal_id, vote.node_id, seq, support, vote.release_digest, payload)
        own = self._meta("own_votes") or {}
        own[proposal_id] = payload.decode()
        self._set_meta("own_votes", own)
        return payload

    def health_report(self, release: str, healthy: bool, detail: Mapping[str, Any]) -> bytes:
        """This node's signed health report on ``release`` (after installing it)."""
        digest = self.digests.get(release)
        if digest is None:
            raise LookupError(f"release {release} is not in the trusted index")
        seq = int(self.store.get_meta(_PREFIX + "health_seq") or "0") + 1
        self.store.set_meta(_PREFIX + "health_seq", str(seq))
        report = HealthReport(
            self.node_id, self.root.network_id, seq, self.clock() + _dt.timedelta(hours=6),
            release, digest, healthy, dict(detail),
        )  # fmt: skip
        return Envelope.sign(report.to_dict(), [self.key]).raw

    # -- what the manager asks -----------------------------------------------------------

    def proposal_for(self, version: str) -> ProposalTracker | None:
        for tracker in self.trackers.values():
            if tracker.proposal.release == version:
                return tracker
        return None

    def release_gate(self, version: str, update_type: str = "binary") -> Gate | None:
        """Why not install ``version`` now (None: coordination does not hold it back).

        On a network with a validator set, a protocol release (``update_type``) that no
        activation proposal names waits for one: the agent never switches protocols alone."""
        now = self.clock()
        unverified = self._unverified_gate(version)
        if unverified is not None:
            return unverified
        tracker = self.proposal_for(version)
        coordinated = self.docs.validators is not None or (
            "governance/validators.json" in self.docs.refused
        )  # the index lists a validator set (fetched or not)
        if tracker is None and update_type == "protocol" and coordinated:
            return Gate("wait", "a protocol release waits for its activation proposal")
        if tracker is not None:
            state = tracker.state(now, self.height())
            if state is ProposalState.FAILED:
                return Gate("skip", f"activation proposal {tracker.proposal.id} failed")
            if state is not ProposalState.ACTIVE:
                act = tracker.activation
                when = f"height {act.height}" if act.height is not None else (
                    format_time(act.time) if act.time else "?"
                )  # fmt: skip
                return Gate(
                    "wait",
                    f"protocol activation {tracker.proposal.id} is {state.value}; "
                    f"activates at {when}",
                    act.time if act.height is None and state is ProposalState.LOCKED_IN else None,
                )
        halted = self.halts().get(version)
        if halted is not None:
            return Gate("skip", f"rollout of {version} halted: {halted}")
        rollout = self.rollouts.get(version)
        if rollout is not None:
            decision = rollout.decide(self.node_id, now)
            if not decision.may_install:
                return Gate("wait", decision.reason, decision.opens)
        return None

    def _unverified_gate(self, version: str) -> Gate | None:
        """Fail closed on what the trusted index lists but this node could not verify yet
        (not fetched, wrong bytes, bad signatures, expired): the release's rollout plan or
        halt, or any activation proposal (it may name this release). The release waits; the
        next check fetches the document again."""
        refused = self.docs.refused
        for kind in ("rollout", "halt"):
            why = refused.get(coordination_relpath(kind, version))
            if why is not None:
                return Gate("wait", f"its {kind} document is listed but not verified: {why}")
        for relpath, why in sorted(refused.items()):
            if relpath.startswith(_PROPOSALS_DIR):
                return Gate("wait", f"proposal {relpath} is listed but not verified: {why}")
        return None

    def consensus_for(self, version: str) -> bool | None:
        """For ``wait_for_network_consensus``: True once the release's proposal is ACTIVE
        (or no proposal names it: nothing to agree on), False once it failed."""
        tracker = self.proposal_for(version)
        if tracker is None:
            return True
        state = tracker.state(self.clock(), self.height())
        if state is ProposalState.ACTIVE:
            return True
        return False if state is ProposalState.FAILED else None

    def compatibility(self) -> CompatibilityManager | None:
        if not self.protocol_versions:
            return None
        activations = []
        for pid, tracker in sorted(self.trackers.items()):
            saved = self._tracker_meta(pid)
            if saved.get("active_at"):
                act = tracker.activation
                point = f"h{act.height}" if act.height is not None else f"t{saved['active_at']}"
                activations.append((tracker.proposal.protocol_version, point))
        return CompatibilityManager(
            self.root.network_id,
            self.protocol_versions,
            activations=activations,
            translators=self.translators,
            deprecations=self.docs.deprecations.values(),
            releases=self.digests,
        )

    def status(self) -> dict[str, Any]:
        """The coordination part of ``node status`` and ``network status``."""
        now, height = self.clock(), self.height()
        proposals = {}
        pending = []
        for pid, tracker in sorted(self.trackers.items()):
            saved = self._tracker_meta(pid)
            state = tracker.state(now, height)
            entry = {
                **tracker.status(now, height).to_dict(),
                "release": tracker.proposal.release,
                "protocol_version": tracker.proposal.protocol_version,
                "activation": tracker.activation.to_dict(),
                "activated_at": saved.get("active_at"),
                "activated_height": saved.get("active_height"),
            }
            proposals[pid] = entry
            if state is ProposalState.LOCKED_IN:
                pending.append({"proposal": pid, "release": tracker.proposal.release,
                                **tracker.activation.to_dict()})  # fmt: skip
        rollouts = {}
        for release, rollout in sorted(self.rollouts.items()):
            decision = rollout.decide(self.node_id, now)
            rollouts[release] = {
                "phase": decision.phase,
                "may_install": decision.may_install,
                "reason": decision.reason,
                "phases": [w.to_dict() for w in rollout.windows()],
                "halted": rollout.halted(),
                "failing_by_phase": self.view.failing_by_phase(
                    rollout.plan, rollout.release_digest, rollout.health.validators.validators
                ),
            }
        compat = self.compatibility()
        return {
            "height": height,
            "proposals": proposals,
            "pending_activations": pending,
            "rollouts": rollouts,
            "halts": self.halts(),
            "deprecations": [
                w.to_dict()
                for w in deprecation_warnings(self.docs.deprecations.values(), self.digests)
            ],
            "fork_id": None if compat is None else compat.fork_id().hash,
            "coordination": self.docs.to_dict(),
        }  # fmt: skip


def _text(certificate: LockInCertificate) -> str:
    return certificate_bytes(certificate).decode()
