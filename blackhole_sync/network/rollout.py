"""PhasedRollout: who may install a release when, and when a rollout halts.

The rules, so that any peer can check any other node's decision:

* A node's position in a release's rollout is ``sha256(node id || release digest || salt)``
  read as a fraction in basis points (:func:`node_position`): the node id and the release
  digest are raw bytes (32 each), the plan's salt its UTF-8 bytes. A restart never moves a node,
  and a new salt (a new plan version) reshuffles the network.
* Phases are cumulative: phase ``i`` admits every node whose position is below its
  ``percentage_bp``, and opens at the plan's ``start`` plus the durations of the phases before
  it (:func:`phase_windows`). A node installs once the first phase that admits it has opened.
* A halt stops the rollout: a governance-signed :class:`~blackhole_sync.documents.HaltDoc`, or
  automatically once validators holding ``halt_threshold_bp`` of the validator set's weight
  have reported the release unhealthy (:class:`HealthTally`; each key once, by weight -- the
  same reports from keys outside the set halt nothing). A halted release is not installed by
  a node that has not installed it; a node configured to (``[network] rollback_on_halt``)
  also rolls back from it.

Everything here is pure (times passed in). :class:`PhasedRollout` is the design's interface
over one plan: its phases, their metrics from health reports and statuses, and the halt.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import frozen

from .._fsutil import sha256
from ..documents import HaltDoc, HealthReport, RolloutPhase, RolloutPlan, ValidatorSet
from .consensus import reaches

__all__ = [
    "HealthTally",
    "PhaseMetrics",
    "PhaseWindow",
    "PhasedRollout",
    "RolloutDecision",
    "node_phase",
    "node_position",
    "phase_windows",
    "rollout_decision",
]


def node_position(node_id: str, release_digest: str, salt: str) -> int:
    """The node's place in a release's rollout, 0..9999 basis points (uniform, stable)."""
    digest = sha256(bytes.fromhex(node_id) + bytes.fromhex(release_digest) + salt.encode()).digest()
    return (int.from_bytes(digest[:8], "big") * 10_000) >> 64


def node_phase(plan: RolloutPlan, node_id: str, release_digest: str) -> int | None:
    """The index of the first phase that admits the node (None: no phase does)."""
    position = node_position(node_id, release_digest, plan.salt)
    for i, phase in enumerate(plan.phases):
        if position < phase.percentage_bp:
            return i
    return None


@frozen
class PhaseWindow:
    """Phase ``index`` of a plan: when it opens and when the next one may open."""

    index: int
    phase: RolloutPhase
    opens: _dt.datetime
    closes: _dt.datetime

    def to_dict(self) -> dict[str, Any]:
        from ..documents import format_time

        return {
            "index": self.index,
            "name": self.phase.name,
            "percentage_bp": self.phase.percentage_bp,
            "opens": format_time(self.opens),
            "closes": format_time(self.closes),
        }


def phase_windows(plan: RolloutPlan) -> list[PhaseWindow]:
    out = []
    opens = plan.start
    for i, phase in enumerate(plan.phases):
        closes = opens + _dt.timedelta(seconds=phase.duration)
        out.append(PhaseWindow(i, phase, opens, closes))
        opens = closes
    return out


def current_phase(plan: RolloutPlan, now: _dt.datetime) -> int | None:
    """The newest phase that has opened (None before the start)."""
    index = None
    for window in phase_windows(plan):
        if now >= window.opens:
            index = window.index
    return index


@frozen
class RolloutDecision:
    """May this node install the release now? Why (not), and from when."""

    may_install: bool
    reason: str
    phase: int | None
    opens: _dt.datetime | None
    halted: bool = False


def rollout_decision(
    plan: RolloutPlan,
    node_id: str,
    release_digest: str,
    now: _dt.datetime,
    *,
    halted: str | None = None,
) -> RolloutDecision:
    """The node's decision under ``plan`` at ``now``; ``halted`` is the halt's reason, if any."""
    phase = node_phase(plan, node_id, release_digest)
    if halted is not None:
        return RolloutDecision(False, f"rollout halted: {halted}", phase, None, True)
    if phase is None:
        return RolloutDecision(False, "no phase of the plan admits this node", None, None)
    window = phase_windows(plan)[phase]
    if now < window.opens:
        return RolloutDecision(
            False, f"waiting for phase {window.phase.name!r}", phase, window.opens
        )
    return RolloutDecision(True, f"phase {window.phase.name!r} is open", phase, window.opens)


class HealthTally:
    """Validators' newest health reports on one release (by node, newest seq), weighed.

    Reports from keys outside the validator set are kept apart (``others``): they feed the
    network view, never a halt.
    """

    def __init__(self, release: str, release_digest: str, validators: ValidatorSet) -> None:
        self.release = release
        self.release_digest = release_digest
        self.validators = validators
        self.reports: dict[str, HealthReport] = {}
        self.others: dict[str, HealthReport] = {}
        self.unhealthy_weight = 0
        self.healthy_weight = 0

    def add(self, report: HealthReport) -> bool:
        """Count a verified report; True when it changed the validator tally."""
        if report.release != self.release or report.release_digest != self.release_digest:
            return False
        weight = self.validators.weight(report.node_id)
        book = self.reports if weight else self.others
        old = book.get(report.node_id)
        if old is not None and old.seq >= report.seq:
            return False
        book[report.node_id] = report
        if not weight:
            return False
        if old is not None:
            if old.healthy:
                self.healthy_weight -= weight
            else:
                self.unhealthy_weight -= weight
        if report.healthy:
            self.healthy_weight += weight
        else:
            self.unhealthy_weight += weight
        return True

    def crosses(self, plan: RolloutPlan) -> bool:
        """Whether the unhealthy validator weight reaches the plan's halt threshold."""
        return bool(plan.halt_threshold_bp) and reaches(
            self.unhealthy_weight, self.validators.total_weight, plan.halt_threshold_bp
        )


@frozen
class PhaseMetrics:
    """What the network reports about one phase: nodes in it, installed, healthy, failing."""

    phase: int
    name: str
    nodes: int
    installed: int
    healthy: int
    unhealthy: int
    success_threshold_bp: int

    @property
    def success_bp(self) -> int | None:
        reported = self.healthy + self.unhealthy
        return None if reported == 0 else self.healthy * 10_000 // reported

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "name": self.name,
            "nodes": self.nodes,
            "installed": self.installed,
            "healthy": self.healthy,
            "unhealthy": self.unhealthy,
            "success_bp": self.success_bp,
            "success_threshold_bp": self.success_threshold_bp,
        }


class PhasedRollout:
    """The design's PhasedRollout over one signed plan (pure: times and reports passed in).

    ``release_digest`` is the sha256 of the release manifest the index lists; ``validators``
    the verified validator set (halts); ``halt`` a verified governance halt, if any.
    """

    def __init__(
        self,
        plan: RolloutPlan,
        release_digest: str,
        validators: ValidatorSet,
        *,
        halt: HaltDoc | None = None,
    ) -> None:
        self.plan = plan
        self.release_digest = release_digest
        self.health = HealthTally(plan.release, release_digest, validators)
        self.halt = halt
        self.aborted: str | None = None
        self._started: set[int] = set()

    @property
    def phases(self) -> tuple[RolloutPhase, ...]:
        return self.plan.phases

    def windows(self) -> list[PhaseWindow]:
        return phase_windows(self.plan)

    def halted(self) -> str | None:
        """The halt's reason (governance, automatic or aborted), None while it runs."""
        if self.halt is not None and self.halt.release == self.plan.release:
            return self.halt.reason or "halted by governance"
        if self.health.crosses(self.plan):
            return (
                f"validators of weight {self.health.unhealthy_weight} of "
                f"{self.health.validators.total_weight} report {self.plan.release} unhealthy"
            )
        return self.aborted

    def decide(self, node_id: str, now: _dt.datetime) -> RolloutDecision:
        return rollout_decision(self.plan, node_id, self.release_digest, now, halted=self.halted())

    def start_phase(self, phase: RolloutPhase | int, now: _dt.datetime) -> PhaseWindow:
        """Note that ``phase`` has begun (it must have opened by ``now``); its window."""
        index = phase if isinstance(phase, int) else self.plan.phases.index(phase)
        window = self.windows()[index]
        if now < window.opens:
            raise ValueError(f"phase {window.phase.name!r} opens at {window.opens}")
        self._started.add(index)
        return window

    def monitor_phase(
        self,
        phase: RolloutPhase | int,
        nodes: Iterable[str],
        installed: Mapping[str, str | None],
    ) -> PhaseMetrics:
        """Metrics of ``phase`` among ``nodes`` (their ids): how many it admits, how many
        run the release (``installed``: node id -> current version, from status documents),
        and their health reports (validators' and others')."""
        index = phase if isinstance(phase, int) else self.plan.phases.index(phase)
        members = [n for n in nodes if node_phase(self.plan, n, self.release_digest) == index]
        reports = {**self.health.others, **self.health.reports}
        on = sum(1 for n in members if installed.get(n) == self.plan.release)
        healthy = sum(1 for n in members if n in reports and reports[n].healthy)
        unhealthy = sum(1 for n in members if n in reports and not reports[n].healthy)
        spec = self.plan.phases[index]
        return PhaseMetrics(
            index, spec.name, len(members), on, healthy, unhealthy, spec.success_threshold_bp
        )

    def evaluate_phase_success(self, metrics: PhaseMetrics) -> bool:
        """Healthy reports reach the phase's success threshold (no reports yet: not yet)."""
        success = metrics.success_bp
        return success is not None and success >= metrics.success_threshold_bp

    def proceed_to_next_phase(self, now: _dt.datetime) -> PhaseWindow | None:
        """The next phase's window once it may open (None: the last phase already runs).
        Raises :class:`RuntimeError` when the rollout is halted."""
        reason = self.halted()
        if reason is not None:
            raise RuntimeError(f"the rollout of {self.plan.release} is halted: {reason}")
        index = current_phase(self.plan, now)
        following = 0 if index is None else index + 1
        windows = self.windows()
        return windows[following] if following < len(windows) else None

    def abort_rollout(self, reason: str, *, version: int = 1, expires: _dt.datetime) -> HaltDoc:
        """Stop here, and the (unsigned) halt for governance to sign and publish."""
        self.aborted = reason
        return HaltDoc(self.plan.release, reason, version, expires)
