"""Health checks after a switch, the post-update watch, regression detection, rollback triggers.

Two kinds of checks run after ``current`` points at a new version:

- the release's own health :class:`~blackhole_sync.documents.metadata.Command` (an argv, never a shell),
  run in its own process group with its timeout enforced by a cancel scope; on timeout the
  whole group is killed, and after a normal exit any process it left behind is killed too;
- plugin checks (:class:`~blackhole_sync.fetch.hookspecs.HealthCheck` objects from the
  ``blackhole_sync_health_checks`` hook), each under its own timeout; an exception from a
  plugin check is a failure, cancellation is never swallowed.

:class:`UpdateHealthMonitor` (the design's name) watches a version over its health window,
compares simple metrics (per-check status and latency) with the previous version's baseline,
and turns what it saw into a :class:`RollbackDecision` the caller acts on. This module never
touches the node store: the store (or the update manager) wires the rollback.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from attrs import field, frozen

from ..documents import Command
from ..errors import HealthCheckError, InstallError
from ..fetch import HealthCheck

__all__ = [
    "OUTPUT_LIMIT",
    "CheckResult",
    "CrashLoopGuard",
    "HealthMetrics",
    "HealthReportResult",
    "PerformanceComparison",
    "Regression",
    "RollbackDecision",
    "UpdateHealthMonitor",
    "WatchResult",
    "require_healthy",
    "restart_service",
    "run_command_check",
    "run_health_checks",
    "run_restart_command",
]

#: Bytes of a command's combined stdout/stderr kept in a result; the rest is read and dropped.
OUTPUT_LIMIT = 64 * 1024
#: After a command exits, how long to wait for its output pipe to reach end of file.
_DRAIN_GRACE = 1.0
#: Upper bound on checks run by one watch, whatever the window and interval.
_MAX_WATCH_ROUNDS = 10_000

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# -- results ---------------------------------------------------------------------------------


@frozen
class CheckResult:
    """The outcome of one check (a command or a plugin check)."""

    name: str
    ok: bool
    reason: str | None = None  # one line, set when not ok
    exit_code: int | None = None  # commands only; negative: killed by that signal
    timed_out: bool = False
    duration: float = 0.0  # seconds
    output: bytes = b""  # the first OUTPUT_LIMIT bytes of stdout and stderr
    output_truncated: bool = False


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
        return _one_line(f"version {self.version} unhealthy: " + "; ".join(parts))


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
        return _one_line(
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
    kind: str  # "status" (was ok, now fails) | "latency" | "missing" (check no longer runs)
    before: float | bool | None
    after: float | bool | None

    def describe(self) -> str:
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


# -- running a command -----------------------------------------------------------------------


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@frozen
class _Outcome:
    exit_code: int | None
    timed_out: bool
    duration: float
    output: bytes
    truncated: bool
    pid: int


async def _run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    timeout: float,  # noqa: ASYNC109 - the command's own limit, enforced by a cancel scope
    kill_group_after_exit: bool = True,
    output_limit: int = OUTPUT_LIMIT,
) -> _Outcome:
    """Run ``argv`` (no shell) in a new session; bounded output; killed as a group on timeout.

    Raises ``OSError`` when the program cannot be started.
    """
    if not argv:
        raise ValueError("empty argv")
    chunks: list[bytes] = []
    kept = 0
    truncated = False
    started = time.monotonic()
    process = await anyio.open_process(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pgid = process.pid  # start_new_session: the child leads its own group

    drained = anyio.Event()

    async def drain() -> None:
        nonlocal kept, truncated
        assert process.stdout is not None
        try:
            async for chunk in process.stdout:
                if kept < output_limit:
                    part = chunk[: output_limit - kept]
                    chunks.append(part)
                    kept += len(part)
                    truncated = truncated or len(part) < len(chunk)
                else:
                    truncated = True
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            drained.set()

    timed_out = False
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            with anyio.move_on_after(timeout) as scope:
                await process.wait()
            if scope.cancelled_caught:
                timed_out = True
                _kill_group(pgid)
                with anyio.CancelScope(shield=True):
                    await process.wait()
            elif kill_group_after_exit:
                _kill_group(pgid)  # nothing a check started may outlive it
            # The pipe may stay open in a daemonised grandchild: give it a moment, then stop.
            with anyio.move_on_after(_DRAIN_GRACE):
                await drained.wait()
            tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            _kill_group(pgid)
            with anyio.CancelScope(shield=True):
                await process.wait()
        elif timed_out or kill_group_after_exit:
            _kill_group(pgid)
        with anyio.CancelScope(shield=True):
            await process.aclose()
    return _Outcome(
        exit_code=None if timed_out else process.returncode,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        output=b"".join(chunks),
        truncated=truncated,
        pid=process.pid,
    )


def _command_name(command: Command) -> str:
    name = command.extra.get("name")
    return str(name) if isinstance(name, str) and name else os.path.basename(command.argv[0])


async def run_command_check(
    command: Command, *, cwd: Path, env: Mapping[str, str] | None = None
) -> CheckResult:
    """Run a release's health (or self-test) command once.

    A nonzero exit, a timeout (``command.timeout`` seconds; the process group is killed) or a
    program that cannot be started is a failure. Never raises for those; cancellation of the
    caller propagates after the process group has been killed.
    """
    name = _command_name(command)
    try:
        outcome = await _run_process(command.argv, cwd=cwd, env=env, timeout=command.timeout)
    except OSError as exc:
        return CheckResult(name, False, _one_line(f"cannot start {command.argv[0]!r}: {exc}"))
    return _result_from_outcome(name, outcome, command.timeout)


def _result_from_outcome(name: str, outcome: _Outcome, timeout: float) -> CheckResult:
    reason: str | None = None
    if outcome.timed_out:
        reason = f"timed out after {timeout:g}s (process group killed)"
    elif outcome.exit_code != 0:
        code = outcome.exit_code
        how = (
            f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        )
        tail = outcome.output.decode("utf-8", "replace").strip().splitlines()[-1:]
        reason = how + (f": {tail[0]}" if tail else "")
    return CheckResult(
        name=name,
        ok=reason is None,
        reason=None if reason is None else _one_line(reason),
        exit_code=outcome.exit_code,
        timed_out=outcome.timed_out,
        duration=outcome.duration,
        output=outcome.output,
        output_truncated=outcome.truncated,
    )


async def _run_plugin_check(
    check: HealthCheck,
    node_dir: Path,
    version: str,
    timeout: float,  # noqa: ASYNC109 - per-check limit
) -> CheckResult:
    name = str(getattr(check, "name", type(check).__name__))
    started = time.monotonic()
    reason: str | None = None
    timed_out = False
    with anyio.move_on_after(timeout) as scope:
        try:
            answer = await check.check(node_dir, version)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is a failed check
            reason = f"raised {type(exc).__name__}: {exc}"
        else:
            if answer is not None:
                reason = str(answer) or "unhealthy"
    if scope.cancelled_caught:
        timed_out = True
        reason = f"timed out after {timeout:g}s"
    return CheckResult(
        name=name,
        ok=reason is None,
        reason=None if reason is None else _one_line(reason),
        timed_out=timed_out,
        duration=time.monotonic() - started,
    )


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
        slots[index] = await _run_plugin_check(check, node_dir, version, timeout)

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
        report = HealthReportResult(report.version, report.results, started)
        if version != self._version:
            self._version, self._reports = version, []
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
        after = self.current_metrics()
        if self.baseline is None or after is None:
            return []
        return list(self.compare_performance(self.baseline, after).regressions)

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
                _one_line("; ".join(reasons) or "unhealthy"),
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
        decision = RollbackDecision(version, True, _one_line(reason), mark_bad=True, emergency=True)
        if self.on_rollback is not None:
            await self.on_rollback(decision)
        return decision


# -- crash loops -----------------------------------------------------------------------------


class CrashLoopGuard:
    """Counts consecutive failed starts per version in a small JSON file (atomic writes).

    A version that fails ``max_failures`` times in a row is abandoned: the caller rolls back
    and does not retry it. A healthy start resets the count.
    """

    def __init__(self, path: Path, max_failures: int = 3) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be >= 1")
        self.path = path
        self.max_failures = max_failures

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_bytes()[: 1 << 20])
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # a torn or foreign file: start counting again
        if not isinstance(data, dict):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}

    def _save(self, counts: Mapping[str, int]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(json.dumps(dict(counts), sort_keys=True).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def failures(self, version: str) -> int:
        return self._load().get(version, 0)

    def record_start_failure(self, version: str) -> bool:
        """Count one failed start; True when the version is now abandoned."""
        counts = self._load()
        counts[version] = counts.get(version, 0) + 1
        self._save(counts)
        return counts[version] >= self.max_failures

    def record_healthy(self, version: str) -> None:
        counts = self._load()
        if counts.pop(version, None) is not None:
            self._save(counts)

    def is_abandoned(self, version: str) -> bool:
        return self.failures(version) >= self.max_failures


# -- service restart -------------------------------------------------------------------------


async def run_restart_command(
    argv: Sequence[str],
    *,
    timeout: float,  # noqa: ASYNC109 - the command's limit; its process group is killed
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> CheckResult:
    """Run the operator's configured restart command (no shell) under ``timeout``.

    Unlike a health check, processes it leaves running (the restarted service) are not
    killed after it exits; on timeout its whole process group is. Such a service should not
    keep writing to the inherited stdout/stderr: the pipe is closed shortly after the command
    exits.
    """
    name = "restart"
    try:
        outcome = await _run_process(
            argv,
            cwd=cwd if cwd is not None else Path.cwd(),
            env=env,
            timeout=timeout,
            kill_group_after_exit=False,
        )
    except OSError as exc:
        return CheckResult(name, False, _one_line(f"cannot start {argv[0]!r}: {exc}"))
    return _result_from_outcome(name, outcome, timeout)


async def restart_service(
    plugin_manager: Any,
    node_dir: Path,
    version: str,
    *,
    restart_argv: Sequence[str] | None,
    timeout: float = 120,  # noqa: ASYNC109 - the restart command's limit
) -> str:
    """Restart the node's service after a switch: the ``blackhole_sync_restart_service`` hook
    first, then the configured command. Returns ``"plugin"``, ``"command"`` or ``"none"``;
    raises :class:`InstallError` (one line) when the restart failed (the caller rolls back)."""
    try:
        handled = plugin_manager.hook.blackhole_sync_restart_service(
            node_dir=node_dir, version=version
        )
    except Exception as exc:
        raise InstallError(
            _one_line(f"restart plugin failed: {type(exc).__name__}: {exc}")
        ) from exc
    if handled:
        return "plugin"
    if not restart_argv:
        return "none"
    result = await run_restart_command(restart_argv, timeout=timeout, cwd=node_dir)
    if not result.ok:
        raise InstallError(_one_line(f"restart command failed: {result.reason}"))
    return "command"
