"""What long commands show while they run: a release build's steps on stderr.

A live display (``rich``) when stderr is a terminal, plain ``blackhole-sync: ...`` lines when
it is not (a CI log), nothing with ``--json``. Only the standard library is imported until a
display is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..release import ProgressStep

__all__ = ["PROGRESS_MIN_BYTES", "BuildReporter", "human_size", "terminate_as_interrupt"]


#: Steps reading fewer bytes than this are not shown (they take well under a second); steps
#: of unknown size (packing a directory, a sandbox command) always are.
PROGRESS_MIN_BYTES = 4 * 1024 * 1024


def human_size(n: int) -> str:
    """``n`` bytes for people: ``512 B``, ``4.8 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class BuildReporter:
    """A build's long steps on stderr: rich on a terminal, plain lines otherwise, or nothing.

    A context manager: the live display ends with it.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "rich", "plain" or "quiet"
        self._progress: Any = None
        self._tasks: dict[ProgressStep, Any] = {}

    @classmethod
    def for_args(cls, args: argparse.Namespace) -> BuildReporter:
        if getattr(args, "json", False):
            return cls("quiet")
        return cls("rich" if sys.stderr.isatty() else "plain")

    @staticmethod
    def _label(step: ProgressStep) -> str:
        size = f" ({human_size(step.size)})" if step.size is not None else ""
        return f"{step.action} {step.subject}{size}"

    def _shown(self, step: ProgressStep) -> bool:
        return self.mode != "quiet" and (step.size is None or step.size >= PROGRESS_MIN_BYTES)

    def start(self, step: ProgressStep) -> None:
        if not self._shown(step):
            return
        if self.mode == "plain":
            sys.stderr.write(f"blackhole-sync: {self._label(step)} ...\n")
            sys.stderr.flush()
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
        self._tasks[step] = self._progress.add_task(self._label(step), total=None)

    def finish(self, step: ProgressStep, seconds: float, ok: bool) -> None:
        if not self._shown(step):
            return
        outcome = f"done in {seconds:.1f} s" if ok else f"failed after {seconds:.1f} s"
        if self.mode == "plain":
            sys.stderr.write(f"blackhole-sync: {self._label(step)}: {outcome}\n")
            sys.stderr.flush()
            return
        task = self._tasks.pop(step, None)
        if task is not None and self._progress is not None:
            self._progress.update(
                task, total=1, completed=1, description=f"{self._label(step)}: {outcome}"
            )

    def __enter__(self) -> BuildReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM during a build interrupts it like Ctrl-C, so its scratch files are removed."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("terminated")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
