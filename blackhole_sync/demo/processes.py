"""The demo's processes: the origin (``blackhole-sync serve``), one agent per node (``python -m
blackhole_sync.demo.agent``: ``node run`` with the demo chain's height), and short commands
(``node vote``).

Each long-running process starts in its own session (its own process group), logs to a file
under ``WORK/logs``, and is stopped by its group: SIGTERM, then SIGKILL after a grace period.
:class:`Processes` stops every process it started when its block ends, whatever ended it
(an error, Ctrl-C, SIGTERM: :func:`signals_raise` turns SIGTERM and SIGHUP into
:class:`KeyboardInterrupt` while the demo runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType

__all__ = ["Proc", "Processes", "cli_args", "free_port", "python_args", "signals_raise"]

#: Seconds a process gets to stop after SIGTERM before SIGKILL.
STOP_GRACE = 15.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (also free for UDP, checked: BitTorrent uses both)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def cli_args(*args: str) -> list[str]:
    """The command line of a ``blackhole-sync`` command: the script beside this interpreter,
    else ``python -m blackhole_sync.cli.main``."""
    import shutil

    script = shutil.which("blackhole-sync", path=str(Path(sys.executable).parent))
    return [script, *args] if script else [sys.executable, "-m", "blackhole_sync.cli.main", *args]


def python_args(*args: str) -> list[str]:
    """This interpreter with ``args``."""
    return [sys.executable, *args]


class Proc:
    """A long-running process in its own process group, its output in ``log``."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            args, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM to the group, SIGKILL after ``grace`` seconds; the exit status."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait()
        # children the process left behind in its group
        self.signal_group(signal.SIGKILL)
        if not self._out.closed:
            self._out.close()
        return self.proc.returncode


class Processes:
    """Every process the demo started; ``with`` stops them all at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, Proc] = {}

    def start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(name, args, self.logs / f"{name}.log")
        self.procs[name] = proc
        return proc

    def run(
        self, name: str, args: list[str], timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        """A short command in its own group (killed with it on a timeout or interrupt)."""
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        (self.logs / f"{name}.log").write_bytes(out + err)
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def stop(self, name: str) -> int | None:
        proc = self.procs.pop(name, None)
        return None if proc is None else proc.stop()

    def stop_all(self) -> None:
        procs = list(self.procs.values())
        self.procs.clear()
        for proc in procs:  # SIGTERM to all first: they stop in parallel
            if proc.alive():
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in procs:
            proc.stop(grace=max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with signals_ignored():
            self.stop_all()


def wait_for_line(proc: Proc, predicate: Callable[[str], bool], timeout: float) -> str:
    """The first output line of ``proc`` that satisfies ``predicate``; RuntimeError when the
    process ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.lines():
            if predicate(line):
                return line
        if not proc.alive():
            tail = "\n".join(proc.lines()[-10:])
            raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}):\n{tail}")
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name}: nothing expected in its output within {timeout:.0f} s")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`KeyboardInterrupt` (like Ctrl-C) inside the block."""
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait while the block (the clean-up) runs."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
