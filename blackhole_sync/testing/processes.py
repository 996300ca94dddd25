"""Child processes in tests: every process and every pipe closed on every path.

``subprocess.run(..., timeout=...)`` kills only the child it started: a grandchild (the console
script's interpreter, a shell's background job) keeps the pipes open, and a test that timed out
leaves them for the garbage collector, whose ``ResourceWarning`` then fails whichever test runs
next (the suite runs with warnings as errors). :func:`run` and :func:`spawn` start each child
in a session of its own and, on a timeout, an error or an interrupt, kill the whole process
group, reap the child and close its pipes. Their timeouts are scaled by
``BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE`` (:mod:`.timeouts`): they stop hangs, not slowness.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .timeouts import scaled

__all__ = ["kill_group", "run", "spawn", "stop"]

#: Seconds a process gets to exit after SIGTERM before the group is killed.
STOP_GRACE = 15.0


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc``'s whole process group (it leads its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _close_pipes(proc: subprocess.Popen[Any]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    text: bool = True,
    check: bool = False,
    stderr: Any = subprocess.PIPE,
) -> subprocess.CompletedProcess[Any]:
    """Like ``subprocess.run(argv, capture_output=True, timeout=...)``, with stdin closed
    unless ``input`` is given, ``timeout`` scaled, and on a timeout (``TimeoutExpired``, with
    what was captured so far), an error or an interrupt the child's whole process group
    killed and its pipes closed. ``check`` raises ``CalledProcessError`` on a non-zero exit.
    ``stderr`` may name another destination (a terminal's fd, ``subprocess.STDOUT``)."""
    proc = subprocess.Popen(
        [os.fspath(a) for a in argv],
        stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=None if env is None else dict(env),
        cwd=cwd,
        text=text,
        start_new_session=True,
    )
    limit = scaled(timeout)
    try:
        out, err = proc.communicate(input, timeout=limit)
    except subprocess.TimeoutExpired as exc:
        kill_group(proc)
        # what it printed before the kill, for the failure message; the pipes close after
        with contextlib.suppress(Exception):
            exc.stdout, exc.stderr = proc.communicate(timeout=5)
        raise
    except BaseException:
        kill_group(proc)
        raise
    finally:
        if proc.returncode is None:
            kill_group(proc)
        _close_pipes(proc)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def stop(proc: subprocess.Popen[Any], *, grace: float = STOP_GRACE) -> int:
    """SIGTERM ``proc``, wait ``grace`` seconds (scaled), then kill its group; close its
    pipes. Returns the exit status (negative: killed by that signal)."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=scaled(grace))
            except subprocess.TimeoutExpired:
                kill_group(proc)
        # whatever it started is not left behind either
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        _close_pipes(proc)
    return proc.wait()


@contextlib.contextmanager
def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | Path | None = None,
    text: bool = True,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    grace: float = STOP_GRACE,
    **popen: Any,
) -> Iterator[subprocess.Popen[Any]]:
    """A background child in a session of its own; on exit (whatever happened) it gets
    SIGTERM, then SIGKILL to its group after ``grace`` seconds (scaled), and its pipes are
    closed. Read ``proc.returncode`` after the block for how it ended."""
    proc = subprocess.Popen(
        [os.fspath(a) for a in argv],
        stdin=popen.pop("stdin", subprocess.DEVNULL),
        stdout=stdout,
        stderr=stderr,
        env=None if env is None else dict(env),
        cwd=cwd,
        text=text,
        start_new_session=True,
        **popen,
    )
    try:
        yield proc
    finally:
        stop(proc, grace=grace)
