"""Health checks after a switch, the post-update watch, regression detection, rollback triggers.

Two kinds of checks run after ``current`` points at a new version (how each runs is in
commands.py):

- the release's own health :class:`~blackhole_sync.documents.release.Command` (an argv, never a
  shell), in its own process group under its timeout; the whole group is killed afterwards;
- plugin checks (:class:`~blackhole_sync.fetch.hookspecs.HealthCheck` objects from the
  ``blackhole_sync_health_checks`` hook), each under its own timeout; an exception from a
  plugin check is a failure, cancellation is never swallowed.

:class:`UpdateHealthMonitor` (the design's name) watches a version over its health window,
compares simple metrics (per-check status and latency) with the previous version's baseline,
and turns what it saw into a :class:`RollbackDecision` the caller acts on. Given a metrics
source (``[commands] metrics``, the ``blackhole_sync_metrics`` hook), a baseline and per-metric
thresholds in basis points, it samples the metrics in every round of the watch too and counts
a metric that moved past its threshold as a regression (regression.py).
:class:`CrashLoopGuard` abandons a version that keeps failing to start, counting in the node's
state database. This module never switches versions: the store (or the update manager) wires
the rollback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
from attrs import field, frozen

from ..documents import Command
from ..errors import HealthCheckError
from ..fetch import HealthCheck
from .commands import CheckResult, one_line, run_command_check, run_plugin_check
from .regression import find_regressions, median_sample
from .state import StateDB

__all__ = [
    "CrashLoopGuard",
    "HealthMetrics",
    "HealthReportResult",
    "PerformanceComparison",
    "Regression",
    "RollbackDecision",
    "UpdateHealthMonitor",
    "WatchResult",
    "require_healthy",
    "run_health_checks",
]

#: Upper bound on checks run by one watch, whatever the window and interval.
_MAX_WATCH_ROUNDS = 10_000

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
#: Samples the running version's metrics (see regression.py); raises HealthCheckError.
MetricsSource = Callable[[str], Awaitable[Mapping[str, float]]]


@frozen
class HealthReportResult:
    """Every check run once against one version."""

    version: str
    results: tuple[CheckResult, ...]
    started_at: float = 0.0  # in a watch: seconds since it started; else the monitor's clock

    @property
    def healthy(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def reason(self) -> str | None:
        """One line naming every failed check, or None when healthy."""
        failed = self.failures
        if not failed:
            return None
        parts = [f"{r.name}: {r.reason}" for r in failed]
        return one_line(f"version {self.version} unhealthy: " + "; ".join(parts))


@frozen
class WatchResult:
    """What a watch over a health window saw."""

    version: str
    healthy: bool
    reports: tuple[HealthReportResult, ...]
    window: float
    elapsed: float
    first_failure: HealthReportResult | None = None

    @property
    def reason(self) -> str | None:
        if self.first_failure is None:
            return None
        return one_line(
            f"{self.first_failure.reason} "
            f"(after {self.first_failure.started_at:.1f}s of a {self.window:g}s window)"
        )


@frozen
class HealthMetrics:
    """Per-check status and latency of one version: what the baseline stores.

    Serialised as ``{"version": V, "checks": {NAME: {"ok": bool, "latency_ms": int}}}``
    (integers only, like every document of this project).
    """

    version: str
    checks: Mapping[str, tuple[bool, float]] = field(factory=dict)  # name -> (ok, latency s)

    @classmethod
    def from_reports(cls, version: str, reports: Sequence[HealthReportResult]) -> HealthMetrics:
        """Status = every run ok; latency = the median duration over the runs."""
        durations: dict[str, list[float]] = {}
        oks: dict[str, bool] = {}
        for report in reports:
            for r in report.results:
                durations.setdefault(r.name, []).append(r.duration)
                oks[r.name] = oks.get(r.name, True) and r.ok
        return cls(version, {n: (oks[n], _median(d)) for n, d in durations.items()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "checks": {
                n: {"ok": ok, "latency_ms": round(lat * 1000)}
                for n, (ok, lat) in sorted(self.checks.items())
            },
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> HealthMetrics:
        checks_obj = obj.get("checks", {})
        if not isinstance(checks_obj, Mapping):
            raise ValueError("baseline: 'checks' must be an object")
        checks: dict[str, tuple[bool, float]] = {}
        for name, entry in checks_obj.items():
            if not isinstance(entry, Mapping):
                raise ValueError(f"baseline: checks.{name} must be an object")
            checks[str(name)] = (
                bool(entry.get("ok", True)),
                int(entry.get("latency_ms", 0)) / 1000,
            )
        return cls(str(obj.get("version", "")), checks)


@frozen
class Regression:
    """One check that got worse than the baseline."""

    check: str
    #: "status" (was ok, now fails) | "latency" | "missing" (check no longer runs) |
    #: "metric" (a metric moved past its threshold; ``detail`` says how)
    kind: str
    before: float | bool | None
    after: float | bool | None
    detail: str = ""

    def describe(self) -> str:
        if self.kind == "metric":
            return self.detail or f"{self.check}: {self.before} -> {self.after}"
        if self.kind == "latency":
            return f"{self.check}: latency {self.before:.3f}s -> {self.after:.3f}s"
        if self.kind == "status":
            return f"{self.check}: was healthy, now failing"
        return f"{self.check}: no longer reported"


@frozen
class PerformanceComparison:
    before: HealthMetrics
    after: HealthMetrics
    regressions: tuple[Regression, ...]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)


@frozen
class RollbackDecision:
    """What the monitor recommends; the caller (store / manager) carries it out.

    ``mark_bad``: the version must not be retried automatically. ``mark_good``: its health
    window passed and it may be committed.
    """

    version: str
    rollback: bool
    reason: str | None = None
    mark_bad: bool = False
    mark_good: bool = False
    emergency: bool = False
    regressions: tuple[Regression, ...] = ()


# -- helpers -------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# -- running the checks ----------------------------------------------------------------------


async def run_health_checks(
    version: str,
    *,
    node_dir: Path,
    command: Command | None,
    checks: Sequence[HealthCheck],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,  # noqa: ASYNC109 - per plugin check, not a deadline for the call
) -> HealthReportResult:
    """Run the release's command (under its own timeout) and every plugin check (each under
    ``timeout`` seconds) concurrently, once. Returns the report; never raises for a failure."""
    slots: list[CheckResult | None] = [None] * (len(checks) + (command is not None))

    async def run_command(index: int, cmd: Command) -> None:
        slots[index] = await run_command_check(cmd, cwd=cwd, env=env)

    async def run_plugin(index: int, check: HealthCheck) -> None:
        slots[index] = await run_plugin_check(check, node_dir, version, timeout)

    async with anyio.create_task_group() as tg:
        offset = 0
        if command is not None:
            tg.start_soon(run_command, 0, command)
            offset = 1
        for i, check in enumerate(checks):
            tg.start_soon(run_plugin, offset + i, check)
    return HealthReportResult(version, tuple(r for r in slots if r is not None))


async def require_healthy(
    version: str,
    *,
    node_dir: Path,
    command: Command | None,
    checks: Sequence[HealthCheck],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,  # noqa: ASYNC109 - per plugin check, not a deadline for the call
) -> HealthReportResult:
    """Like :func:`run_health_checks`; raises :class:`HealthCheckError` (one line) on failure."""
    report = await run_health_checks(
        version,
        node_dir=node_dir,
        command=command,
        checks=checks,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    if not report.healthy:
        raise HealthCheckError(report.reason)
    return report


# -- the post-update monitor -----------------------------------------------------------------


class UpdateHealthMonitor:
    """Watches a freshly switched version: health checks, window, regressions, rollback triggers.

    ``baseline`` is the previous version's :class:`HealthMetrics` (or its ``to_dict()`` form,
    e.g. read from a small JSON file the caller keeps). ``clock`` and ``sleep`` are injectable
    so the window logic can be tested without waiting. ``on_rollback``, when given, is awaited
    by :meth:`initiate_emergency_rollback`; otherwise the caller acts on the returned decision.

    A latency regression is a check whose median latency grew by more than
    ``latency_factor`` times *and* by more than ``latency_slack`` seconds.

    ``metrics`` samples the version's metrics in every round (a failure to sample is a failed
    check named ``metrics``); ``metric_baseline`` is the last good version's median sample
    and ``thresholds`` the basis points each metric may move (regression.py). A metric past
    its threshold is a fatal regression.
    """

    def __init__(
        self,
        node_dir: Path,
        *,
        command: Command | None = None,
        checks: Sequence[HealthCheck] = (),
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        check_timeout: float = 60,
        baseline: HealthMetrics | Mapping[str, Any] | None = None,
        latency_factor: float = 2.0,
        latency_slack: float = 0.5,
        rollback_on_latency_regression: bool = False,
        on_rollback: Callable[[RollbackDecision], Awaitable[None]] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        metrics: MetricsSource | None = None,
        metric_baseline: Mapping[str, float] | None = None,
        thresholds: Mapping[str, int] | None = None,
    ) -> None:
        self.node_dir = node_dir
        self.command = command
        self.checks = tuple(checks)
        self.cwd = cwd if cwd is not None else node_dir
        self.env = env
        self.check_timeout = check_timeout
        if baseline is not None and not isinstance(baseline, HealthMetrics):
            baseline = HealthMetrics.from_dict(baseline)
        self.baseline: HealthMetrics | None = baseline
        self.latency_factor = latency_factor
        self.latency_slack = latency_slack
        self.rollback_on_latency_regression = rollback_on_latency_regression
        self.on_rollback = on_rollback
        self._clock = clock
        self._sleep = sleep
        self._reports: list[HealthReportResult] = []
        self._version: str | None = None
        self.metrics = metrics
        self.metric_baseline = dict(metric_baseline or {})
        self.thresholds = dict(thresholds or {})
        self._samples: list[Mapping[str, float]] = []

    # health checks

    async def perform_health_check(self, version: str) -> HealthReportResult:
        """Run every check once; the report is kept for :meth:`current_metrics`."""
        started = self._clock()
        report = await run_health_checks(
            version,
            node_dir=self.node_dir,
            command=self.command,
            checks=self.checks,
            cwd=self.cwd,
            env=self.env,
            timeout=self.check_timeout,
        )
        if version != self._version:
            self._version, self._reports, self._samples = version, [], []
        results = report.results
        if self.metrics is not None:
            began = self._clock()
            try:
                self._samples.append(await self.metrics(version))
                del self._samples[:-1000]
            except HealthCheckError as exc:
                failed = CheckResult("metrics", False, one_line(str(exc)))
                results = (*results, attrs.evolve(failed, duration=self._clock() - began))
        report = HealthReportResult(report.version, results, started)
        self._reports.append(report)
        del self._reports[:-1000]  # bounded memory on long watches
        return report

    async def watch(
        self,
        version: str,
        window_s: float | None = None,
        interval_s: float = 10.0,
        *,
        stop_on_failure: bool = True,
    ) -> WatchResult:
        """Run the checks every ``interval_s`` seconds until ``window_s`` (default: the
        command's ``window``, else 0: one round) has passed; the last round runs at the end of
        the window. Any failure makes the result unhealthy (and, by default, ends the watch)."""
        if window_s is None:
            window_s = float(self.command.window or 0) if self.command is not None else 0.0
        if window_s < 0 or interval_s <= 0:
            raise ValueError("window_s must be >= 0 and interval_s > 0")
        start = self._clock()
        deadline = start + window_s
        rounds = min(_MAX_WATCH_ROUNDS, math.ceil(window_s / interval_s) + 1)
        reports: list[HealthReportResult] = []
        first_failure: HealthReportResult | None = None
        for _ in range(rounds):
            report = await self.perform_health_check(version)
            report = HealthReportResult(version, report.results, report.started_at - start)
            reports.append(report)
            if not report.healthy and first_failure is None:
                first_failure = report
                if stop_on_failure:
                    break
            now = self._clock()
            if now >= deadline:
                break
            await self._sleep(min(interval_s, deadline - now))
        return WatchResult(
            version=version,
            healthy=first_failure is None,
            reports=tuple(reports),
            window=window_s,
            elapsed=self._clock() - start,
            first_failure=first_failure,
        )

    async def monitor_service_health(
        self, version: str, duration: float, interval_s: float = 10.0
    ) -> WatchResult:
        """The design's name for :meth:`watch`."""
        return await self.watch(version, duration, interval_s)

    # performance comparison

    def current_metric_values(self) -> dict[str, float]:
        """Per metric, the median of the samples taken of the version last checked."""
        return median_sample(self._samples)

    def current_metrics(self) -> HealthMetrics | None:
        """Metrics of the reports gathered for the version last checked."""
        if self._version is None:
            return None
        return HealthMetrics.from_reports(self._version, self._reports)

    def compare_performance(
        self, before: HealthMetrics, after: HealthMetrics
    ) -> PerformanceComparison:
        regressions: list[Regression] = []
        for name, (ok_before, lat_before) in sorted(before.checks.items()):
            if name not in after.checks:
                regressions.append(Regression(name, "missing", ok_before, None))
                continue
            ok_after, lat_after = after.checks[name]
            if ok_before and not ok_after:
                regressions.append(Regression(name, "status", True, False))
            elif (
                lat_after > lat_before * self.latency_factor
                and lat_after - lat_before > self.latency_slack
            ):
                regressions.append(Regression(name, "latency", lat_before, lat_after))
        return PerformanceComparison(before, after, tuple(regressions))

    async def detect_regressions(self) -> list[Regression]:
        """Regressions of the version last checked against the baseline (none without one)."""
        found: list[Regression] = []
        after = self.current_metrics()
        if self.baseline is not None and after is not None:
            found += self.compare_performance(self.baseline, after).regressions
        if self.metric_baseline and self.thresholds and self._samples:
            observed = self.current_metric_values()
            found += [
                Regression(r.name, "metric", r.baseline, r.observed, r.describe())
                for r in find_regressions(self.metric_baseline, observed, self.thresholds)
            ]
        return found

    # rollback triggers

    def should_trigger_rollback(
        self,
        health: HealthReportResult | WatchResult,
        regressions: Sequence[Regression] = (),
    ) -> bool:
        return not health.healthy or any(self._is_fatal(r) for r in regressions)

    def _is_fatal(self, regression: Regression) -> bool:
        return regression.kind != "latency" or self.rollback_on_latency_regression

    def decide(
        self, health: WatchResult | HealthReportResult, regressions: Sequence[Regression] = ()
    ) -> RollbackDecision:
        """Turn a watch (or one report) and its regressions into a decision.

        Unhealthy or a fatal regression: roll back and mark the version bad. A completed watch
        that stayed healthy: mark it good. A single healthy report: neither (keep watching).
        """
        version = health.version
        if self.should_trigger_rollback(health, regressions):
            reasons = [health.reason] if health.reason else []
            reasons += [r.describe() for r in regressions if self._is_fatal(r)]
            return RollbackDecision(
                version,
                True,
                one_line("; ".join(reasons) or "unhealthy"),
                mark_bad=True,
                regressions=tuple(regressions),
            )
        return RollbackDecision(
            version,
            False,
            None,
            mark_good=isinstance(health, WatchResult),
            regressions=tuple(regressions),
        )

    async def evaluate(
        self, version: str, window_s: float | None = None, interval_s: float = 10.0
    ) -> RollbackDecision:
        """Watch the window, detect regressions, decide. The usual post-switch call."""
        result = await self.watch(version, window_s, interval_s)
        regressions = await self.detect_regressions() if result.healthy else []
        decision = self.decide(result, regressions)
        if decision.rollback and self.on_rollback is not None:
            await self.on_rollback(decision)
        return decision

    async def initiate_emergency_rollback(self, version: str, reason: str) -> RollbackDecision:
        """Decide an immediate rollback of ``version``; awaits ``on_rollback`` when set."""
        decision = RollbackDecision(version, True, one_line(reason), mark_bad=True, emergency=True)
        if self.on_rollback is not None:
            await self.on_rollback(decision)
        return decision


# -- crash loops -----------------------------------------------------------------------------


class CrashLoopGuard:
    """Abandons a version after ``max_failures`` consecutive failed starts.

    The count is the node state database's start-failure counter
    (:meth:`~blackhole_sync.node.StateDB.record_start_failure`, the one the store and the
    update manager count with); a healthy start resets it. The caller rolls back and does not
    retry an abandoned version.
    """

    def __init__(self, state: StateDB, max_failures: int = 3) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be >= 1")
        self.state = state
        self.max_failures = max_failures

    def failures(self, version: str) -> int:
        return self.state.start_failures(version)

    def record_start_failure(self, version: str) -> bool:
        """Count one failed start; True when the version is now abandoned."""
        return self.state.record_start_failure(version) >= self.max_failures

    def record_healthy(self, version: str) -> None:
        self.state.reset_start_failures(version)

    def is_abandoned(self, version: str) -> bool:
        return self.failures(version) >= self.max_failures
