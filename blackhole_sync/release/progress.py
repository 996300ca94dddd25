"""What a release build reports while it runs.

A build of a large artifact spends minutes in a few long steps: packing a directory, listing
an archive's members, compressing, encrypting, hashing, diffing against earlier releases,
running the release's self-test in a sandbox. The builder announces each step to a
:class:`BuildProgress` when it starts and when it ends; the command line shows them on stderr
(a live display on a terminal, plain lines otherwise, nothing with ``--json``). The library's
default, :data:`NULL_PROGRESS`, shows nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Protocol

from attrs import frozen

__all__ = ["NULL_PROGRESS", "BuildProgress", "ProgressStep", "report_step"]


@frozen
class ProgressStep:
    """One step of a build.

    ``action``: ``packing``, ``listing``, ``compressing``, ``encrypting``, ``hashing``,
    ``diffing``, ``self-test`` or ``health check``; ``subject``: the artifact (for a diff, the
    artifact and the version it is diffed against); ``size``: the bytes the step reads, when
    known (None for a directory being packed, or a command).
    """

    action: str
    subject: str
    size: int | None = None


class BuildProgress(Protocol):
    """Receives each step of a build as it starts and ends (from the building thread)."""

    def start(self, step: ProgressStep) -> None: ...

    def finish(self, step: ProgressStep, seconds: float, ok: bool) -> None:
        """``ok`` is False when the step raised (the build then fails)."""
        ...


class _NullProgress:
    def start(self, step: ProgressStep) -> None:
        pass

    def finish(self, step: ProgressStep, seconds: float, ok: bool) -> None:
        pass


#: Shows nothing: the builder's default.
NULL_PROGRESS: BuildProgress = _NullProgress()


@contextlib.contextmanager
def report_step(
    progress: BuildProgress, action: str, subject: str, size: int | None = None
) -> Iterator[None]:
    """Report the enclosed work as one step (its start, then its end and duration)."""
    step = ProgressStep(action, subject, size)
    progress.start(step)
    began = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        progress.finish(step, time.monotonic() - began, ok)
