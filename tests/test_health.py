"""Health checks: each test stages the failure it is named after, with real subprocesses."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

import anyio
import psutil
import pytest

from blackhole_sync.documents import Command
from blackhole_sync.errors import HealthCheckError, InstallError
from blackhole_sync.fetch.hookspecs import hookimpl
from blackhole_sync.fetch.plugins import make_plugin_manager
from blackhole_sync.node import NodeStore, StateDB
from blackhole_sync.node.commands import (
    OUTPUT_LIMIT,
    restart_service,
    run_command_check,
    run_restart_command,
)
from blackhole_sync.node.health import (
    CrashLoopGuard,
    HealthMetrics,
    UpdateHealthMonitor,
    require_healthy,
    run_health_checks,
)

pytestmark = pytest.mark.anyio

PY = sys.executable


def _marker(seconds: int) -> str:
    """A sleep duration no other test (or parametrization, maybe on another worker) uses, so
    :func:`_leftovers` finds this test's processes only."""
    return f"{seconds}.{secrets.randbelow(10**6):06d}"


def _leftovers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


class FailingCheck:
    name = "db-reachable"

    async def check(self, node_dir: Path, version: str) -> str | None:
        return "database not reachable"


class RaisingCheck:
    name = "buggy-plugin"

    async def check(self, node_dir: Path, version: str) -> str | None:
        raise KeyError("plugin bug")


class HangingCheck:
    name = "hangs"

    async def check(self, node_dir: Path, version: str) -> str | None:
        await anyio.sleep(60)
        return None


class OkCheck:
    name = "ok"

    async def check(self, node_dir: Path, version: str) -> str | None:
        return None


class FailsFromCall:
    """Healthy for the first ``n - 1`` calls, failing from call ``n`` on."""

    name = "late"

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    async def check(self, node_dir: Path, version: str) -> str | None:
        self.calls += 1
        return "crashed" if self.calls >= self.n else None


class FakeTime:
    """A clock whose sleep advances time instantly: deterministic window tests."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


# -- commands --------------------------------------------------------------------------------


async def test_passing_command_check(tmp_path: Path) -> None:
    result = await run_command_check(Command((PY, "-c", "print('fine')")), cwd=tmp_path)
    assert result.ok and result.exit_code == 0 and result.output.strip() == b"fine"


async def test_failing_health_command_is_a_failure(tmp_path: Path) -> None:
    cmd = Command((PY, "-c", "import sys; print('port closed'); sys.exit(3)"), timeout=10)
    result = await run_command_check(cmd, cwd=tmp_path)
    assert not result.ok and result.exit_code == 3 and not result.timed_out
    assert "exit status 3" in (result.reason or "") and "port closed" in (result.reason or "")
    with pytest.raises(HealthCheckError, match="exit status 3"):
        await require_healthy("1.0.0", node_dir=tmp_path, command=cmd, checks=(), cwd=tmp_path)


async def test_hanging_health_command_killed_with_its_process_group(tmp_path: Path) -> None:
    marker = _marker(60)
    # The check forks a grandchild: killing only the direct child would leave it running.
    cmd = Command(("sh", "-c", f"sleep {marker} & sleep {marker}; wait"), timeout=1)
    started = time.monotonic()
    with pytest.raises(HealthCheckError, match="timed out after 1s"):
        await require_healthy("1.0.0", node_dir=tmp_path, command=cmd, checks=(), cwd=tmp_path)
    assert time.monotonic() - started < 5
    assert _leftovers(marker) == []


async def test_plain_sleep_60_with_timeout_1(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await run_command_check(Command(("sleep", "60"), timeout=1), cwd=tmp_path)
    assert result.timed_out and not result.ok and result.exit_code is None
    assert time.monotonic() - started < 5


async def test_background_process_left_by_check_is_killed(tmp_path: Path) -> None:
    marker = _marker(61)
    cmd = Command(("sh", "-c", f"sleep {marker} >/dev/null 2>&1 & exit 0"), timeout=10)
    result = await run_command_check(cmd, cwd=tmp_path)
    assert result.ok
    assert _leftovers(marker) == []


async def test_missing_program_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    result = await run_command_check(Command(("/nonexistent/health",)), cwd=tmp_path)
    assert not result.ok and "cannot start" in (result.reason or "")


async def test_flooding_output_is_bounded(tmp_path: Path) -> None:
    cmd = Command((PY, "-c", "import sys; sys.stdout.write('x' * 1_000_000)"), timeout=20)
    result = await run_command_check(cmd, cwd=tmp_path)
    assert result.ok and len(result.output) == OUTPUT_LIMIT and result.output_truncated


async def test_no_shell_interpretation(tmp_path: Path) -> None:
    cmd = Command(("echo", "$(touch pwned)", ";", "touch", "pwned2"))
    result = await run_command_check(cmd, cwd=tmp_path)
    assert result.ok and not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


async def test_cancelling_the_caller_kills_the_check(tmp_path: Path) -> None:
    marker = _marker(62)
    with anyio.move_on_after(0.5):
        await run_command_check(Command(("sleep", marker), timeout=60), cwd=tmp_path)
    assert _leftovers(marker) == []


# -- plugin checks ---------------------------------------------------------------------------


async def test_plugin_check_raising_is_a_failure(tmp_path: Path) -> None:
    report = await run_health_checks(
        "1.0.0", node_dir=tmp_path, command=None, checks=[OkCheck(), RaisingCheck()], cwd=tmp_path
    )
    assert not report.healthy
    (failure,) = report.failures
    assert failure.name == "buggy-plugin" and "KeyError" in (failure.reason or "")


async def test_plugin_check_returning_a_reason_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(HealthCheckError, match="database not reachable"):
        await require_healthy(
            "1.0.0", node_dir=tmp_path, command=None, checks=[FailingCheck()], cwd=tmp_path
        )


async def test_hanging_plugin_check_times_out(tmp_path: Path) -> None:
    started = time.monotonic()
    report = await run_health_checks(
        "1.0.0",
        node_dir=tmp_path,
        command=Command((PY, "-c", "pass")),
        checks=[HangingCheck()],
        cwd=tmp_path,
        timeout=0.5,
    )
    assert time.monotonic() - started < 5
    assert [r.ok for r in report.results] == [True, False]
    assert report.results[1].timed_out
    assert "\n" not in (report.reason or "")


# -- the window ------------------------------------------------------------------------------


async def test_watch_catches_a_late_failure(tmp_path: Path) -> None:
    fake = FakeTime()
    late = FailsFromCall(4)
    monitor = UpdateHealthMonitor(tmp_path, checks=[late], clock=fake.clock, sleep=fake.sleep)
    result = await monitor.watch("2.0.0", window_s=60, interval_s=10)
    assert not result.healthy and late.calls == 4
    assert result.first_failure is not None and result.first_failure.started_at == 30
    decision = monitor.decide(result)
    assert decision.rollback and decision.mark_bad and not decision.mark_good
    assert "late: crashed" in (decision.reason or "")


async def test_watch_that_stays_healthy_marks_good(tmp_path: Path) -> None:
    fake = FakeTime()
    ok = FailsFromCall(100)
    monitor = UpdateHealthMonitor(tmp_path, checks=[ok], clock=fake.clock, sleep=fake.sleep)
    result = await monitor.watch("2.0.0", window_s=25, interval_s=10)
    assert result.healthy and ok.calls == 4  # t = 0, 10, 20, 25
    assert fake.sleeps == [10, 10, 5] and result.elapsed == 25
    decision = monitor.decide(result)
    assert decision.mark_good and not decision.rollback


async def test_watch_uses_the_commands_window_with_real_subprocesses(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    cmd = Command(
        (PY, "-c", f"import os,sys; sys.exit(os.path.exists({str(marker)!r}))"),
        timeout=10,
        window=30,
    )
    fake = FakeTime()

    async def sleep(seconds: float) -> None:
        await fake.sleep(seconds)
        if fake.now - 1000 >= 20:
            marker.touch()  # the service dies 20 s into the window

    monitor = UpdateHealthMonitor(tmp_path, command=cmd, clock=fake.clock, sleep=sleep)
    result = await monitor.watch("2.0.0", interval_s=10)
    assert not result.healthy and result.window == 30
    assert len(result.reports) == 3 and result.reports[-1].results[0].exit_code == 1


async def test_watch_in_real_time(tmp_path: Path) -> None:
    flag = tmp_path / "down"
    cmd = Command((PY, "-c", f"import os,sys; sys.exit(os.path.exists({str(flag)!r}))"))
    monitor = UpdateHealthMonitor(tmp_path, command=cmd)
    async with anyio.create_task_group() as tg:

        async def fail_later() -> None:
            await anyio.sleep(0.6)
            flag.touch()

        tg.start_soon(fail_later)
        started = time.monotonic()
        result = await monitor.watch("2.0.0", window_s=10, interval_s=0.2)
    assert not result.healthy and time.monotonic() - started < 8


async def test_emergency_rollback_calls_the_callers_hook(tmp_path: Path) -> None:
    seen = []

    async def on_rollback(decision: object) -> None:
        seen.append(decision)

    monitor = UpdateHealthMonitor(tmp_path, checks=[FailingCheck()], on_rollback=on_rollback)
    decision = await monitor.evaluate("2.0.0", window_s=0)
    assert decision.rollback and seen == [decision]
    emergency = await monitor.initiate_emergency_rollback("2.0.0", "operator\nrequest")
    assert emergency.emergency and emergency.reason == "operator request" and len(seen) == 2


# -- regressions -----------------------------------------------------------------------------


async def test_latency_regression_against_baseline(tmp_path: Path) -> None:
    baseline = {"version": "1.0.0", "checks": {"slow": {"ok": True, "latency_ms": 10}}}
    cmd = Command((PY, "-c", "import time; time.sleep(0.8)"), extra={"name": "slow"})
    monitor = UpdateHealthMonitor(tmp_path, command=cmd, baseline=baseline, latency_slack=0.3)
    decision = await monitor.evaluate("2.0.0", window_s=0)
    (regression,) = await monitor.detect_regressions()
    assert regression.kind == "latency" and regression.check == "slow"
    assert not decision.rollback and decision.regressions == (regression,)
    strict = UpdateHealthMonitor(
        tmp_path,
        command=cmd,
        baseline=baseline,
        latency_slack=0.3,
        rollback_on_latency_regression=True,
    )
    assert (await strict.evaluate("2.0.0", window_s=0)).rollback


async def test_status_regression_and_baseline_round_trip(tmp_path: Path) -> None:
    monitor = UpdateHealthMonitor(tmp_path, checks=[OkCheck()])
    await monitor.perform_health_check("1.0.0")
    metrics = monitor.current_metrics()
    assert metrics is not None
    restored = HealthMetrics.from_dict(metrics.to_dict())
    assert restored.checks.keys() == {"ok"}

    class NowFailing(FailingCheck):
        name = "ok"

    after = UpdateHealthMonitor(tmp_path, checks=[NowFailing()], baseline=restored)
    await after.perform_health_check("2.0.0")
    (regression,) = await after.detect_regressions()
    assert regression.kind == "status"
    gone = UpdateHealthMonitor(tmp_path, checks=[], baseline=restored)
    await gone.perform_health_check("2.0.0")
    assert [r.kind for r in await gone.detect_regressions()] == ["missing"]


# -- crash loops and restart -----------------------------------------------------------------


def test_version_failing_on_start_three_times_is_abandoned(tmp_path: Path) -> None:
    StateDB.initialise(tmp_path / "state.db")
    state = StateDB.open(tmp_path / "state.db")
    try:
        guard = CrashLoopGuard(state, max_failures=3)
        assert not guard.record_start_failure("2.0.0")
        assert not guard.record_start_failure("2.0.0")
        assert guard.record_start_failure("2.0.0") and guard.is_abandoned("2.0.0")
        guard.record_healthy("2.0.0")
        assert guard.failures("2.0.0") == 0 and not guard.is_abandoned("2.0.0")
    finally:
        state.close()


def test_the_guard_and_the_store_count_the_same_failures(tmp_path: Path) -> None:
    with NodeStore.create(tmp_path / "node", root_bytes=b"{}", config_text="") as store:
        guard = CrashLoopGuard(store.state, max_failures=2)
        assert store.record_start_failure("2.0.0") == 1
        assert guard.failures("2.0.0") == 1
        assert guard.record_start_failure("2.0.0")  # the second failure, whoever counts it
        store.mark_good("2.0.0")
        assert guard.failures("2.0.0") == 0
    with pytest.raises(ValueError):
        CrashLoopGuard(store.state, max_failures=0)


async def test_restart_command_leaves_the_service_running(tmp_path: Path) -> None:
    marker = _marker(63)
    result = await run_restart_command(
        ["sh", "-c", f"sleep {marker} >/dev/null 2>&1 </dev/null & echo restarted"],
        timeout=10,
        cwd=tmp_path,
    )
    try:
        assert result.ok and b"restarted" in result.output
        assert len(_leftovers(marker)) == 1
    finally:
        for proc in _leftovers(marker):
            proc.kill()


async def test_hanging_restart_command_times_out(tmp_path: Path) -> None:
    result = await run_restart_command(["sleep", "64.4242"], timeout=0.5, cwd=tmp_path)
    assert result.timed_out and not result.ok and _leftovers("64.4242") == []


class RestartPlugin:
    def __init__(self, answer: bool | None) -> None:
        self.answer = answer
        self.calls: list[str] = []

    @hookimpl
    def blackhole_sync_restart_service(self, node_dir: Path, version: str) -> bool | None:
        self.calls.append(version)
        return self.answer


async def test_restart_prefers_the_plugin_then_the_command(tmp_path: Path) -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    plugin = RestartPlugin(True)
    pm.register(plugin)
    how = await restart_service(pm, tmp_path, "2.0.0", restart_argv=["false"])
    assert how == "plugin" and plugin.calls == ["2.0.0"]
    pm.unregister(plugin)
    pm.register(RestartPlugin(None))
    with pytest.raises(InstallError, match="restart command failed"):
        await restart_service(pm, tmp_path, "2.0.0", restart_argv=["false"])
    assert await restart_service(pm, tmp_path, "2.0.0", restart_argv=["true"]) == "command"
    assert await restart_service(pm, tmp_path, "2.0.0", restart_argv=None) == "none"
