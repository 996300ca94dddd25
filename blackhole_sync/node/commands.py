"""Running commands and plugin checks for a node: bounded, killed as a group, never a shell.

A release's self-test and health commands and the operator's restart command are argv lists.
Each runs in a new session (its own process group) with its output bounded to
:data:`OUTPUT_LIMIT` bytes; on timeout (a cancel scope) the whole group is killed, and after a
health command exits any process it left behind is killed too (a restart command's service is
left running). A plugin check runs under its own timeout; its exception is a failed check, and
cancellation is never swallowed. health.py and sandbox.py build on these.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from attrs import frozen

from ..documents import Command
from ..errors import InstallError
from ..fetch import HealthCheck

__all__ = [
    "OUTPUT_LIMIT",
    "CheckResult",
    "restart_service",
    "run_command_check",
    "run_restart_command",
]

#: Bytes of a command's combined stdout/stderr kept in a result; the rest is read and dropped.
OUTPUT_LIMIT = 64 * 1024
#: After a command exits, how long to wait for its output pipe to reach end of file.
_DRAIN_GRACE = 1.0


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


def one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@frozen
class ProcessOutcome:
    exit_code: int | None
    timed_out: bool
    duration: float
    output: bytes
    truncated: bool
    pid: int


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    timeout: float,  # noqa: ASYNC109 - the command's own limit, enforced by a cancel scope
    kill_group_after_exit: bool = True,
    output_limit: int = OUTPUT_LIMIT,
) -> ProcessOutcome:
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
    return ProcessOutcome(
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
        outcome = await run_process(command.argv, cwd=cwd, env=env, timeout=command.timeout)
    except OSError as exc:
        return CheckResult(name, False, one_line(f"cannot start {command.argv[0]!r}: {exc}"))
    return result_from_outcome(name, outcome, command.timeout)


def result_from_outcome(name: str, outcome: ProcessOutcome, timeout: float) -> CheckResult:
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
        reason=None if reason is None else one_line(reason),
        exit_code=outcome.exit_code,
        timed_out=outcome.timed_out,
        duration=outcome.duration,
        output=outcome.output,
        output_truncated=outcome.truncated,
    )


async def run_plugin_check(
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
        reason=None if reason is None else one_line(reason),
        timed_out=timed_out,
        duration=time.monotonic() - started,
    )


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
        outcome = await run_process(
            argv,
            cwd=cwd if cwd is not None else Path.cwd(),
            env=env,
            timeout=timeout,
            kill_group_after_exit=False,
        )
    except OSError as exc:
        return CheckResult(name, False, one_line(f"cannot start {argv[0]!r}: {exc}"))
    return result_from_outcome(name, outcome, timeout)


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
        raise InstallError(one_line(f"restart plugin failed: {type(exc).__name__}: {exc}")) from exc
    if handled:
        return "plugin"
    if not restart_argv:
        return "none"
    result = await run_restart_command(restart_argv, timeout=timeout, cwd=node_dir)
    if not result.ok:
        raise InstallError(one_line(f"restart command failed: {result.reason}"))
    return "command"
