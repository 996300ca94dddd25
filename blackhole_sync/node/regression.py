"""Regression detection on the live path: metric samples, the baseline and the thresholds.

A metric sample is a JSON object of numbers about the running version
(``{"latency_ms": 12.5, "errors_per_min": 0}``), printed by the operator's ``[commands]
metrics`` command or returned by the ``blackhole_sync_metrics`` hook. The **baseline** of a
version is the per-metric median of its last ``[regression] samples`` samples, kept in the
state database (:class:`MetricBaseline`, meta key ``metrics_baseline``) and taken on the last
good version only: the agent adds one per cycle while the current version is good, and an
install tops it up before the switch.

After a switch, :class:`~blackhole_sync.node.UpdateHealthMonitor` samples the new version
over the watch and :func:`find_regressions` compares the median of what it saw with the
baseline, per metric, against a threshold in basis points of change: positive where more is
worse (``latency_ms = 5000``: more than 50 % up), negative where less is worse
(``requests_per_s = -2000``: more than 20 % down). A metric the baseline has and the new
version no longer reports is a regression too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from attrs import frozen

from ..errors import HealthCheckError
from .commands import one_line, run_process

__all__ = [
    "MAX_METRICS",
    "MetricBaseline",
    "MetricRegression",
    "find_regressions",
    "median_sample",
    "parse_metrics",
    "run_metrics_command",
]

#: At most this many metrics in one sample; longer names are refused.
MAX_METRICS: Final = 256
_MAX_NAME: Final = 64
#: Bytes of a metrics command's output read (a sample is small).
_OUTPUT_LIMIT: Final = 64 * 1024


def parse_metrics(data: bytes | Mapping[str, Any], where: str = "metrics") -> dict[str, float]:
    """A sample from a command's output (one JSON object; the last line that is one, when the
    command also printed other lines) or a plugin's mapping: finite numbers by name.

    Raises :class:`HealthCheckError` naming what is wrong.
    """
    obj: Any = data
    if isinstance(data, bytes):
        text = data.decode("utf-8", "replace").strip()
        candidates = [text, *reversed([ln for ln in text.splitlines() if ln.strip()])]
        for candidate in candidates:
            try:
                obj = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(obj, dict):
                break
        else:
            raise HealthCheckError(f"{where}: the output is not a JSON object of numbers")
    if not isinstance(obj, Mapping):
        raise HealthCheckError(f"{where}: expected an object of numbers")
    if len(obj) > MAX_METRICS:
        raise HealthCheckError(f"{where}: more than {MAX_METRICS} metrics")
    sample: dict[str, float] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
            raise HealthCheckError(f"{where}: metric names are 1 to {_MAX_NAME} characters")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise HealthCheckError(f"{where}: {name} is not a number")
        if not math.isfinite(value):
            raise HealthCheckError(f"{where}: {name} is not a finite number")
        sample[name] = float(value)
    return sample


async def run_metrics_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    timeout: float,  # noqa: ASYNC109 - the command's own limit
) -> dict[str, float]:
    """Run ``[commands] metrics`` once; its sample. A failure raises :class:`HealthCheckError`."""
    try:
        outcome = await run_process(
            argv, cwd=cwd, env=env, timeout=timeout, output_limit=_OUTPUT_LIMIT
        )
    except OSError as exc:
        raise HealthCheckError(f"metrics: cannot start {argv[0]!r}: {exc}") from exc
    if outcome.timed_out:
        raise HealthCheckError(f"metrics: timed out after {timeout:g}s")
    if outcome.exit_code != 0:
        tail = outcome.output.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise HealthCheckError(
            one_line(f"metrics: exit status {outcome.exit_code}" + (f": {tail[0]}" if tail else ""))
        )
    return parse_metrics(outcome.output)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def median_sample(samples: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per metric, the median over the samples that report it."""
    values: dict[str, list[float]] = {}
    for sample in samples:
        for name, value in sample.items():
            values.setdefault(name, []).append(float(value))
    return {name: _median(v) for name, v in values.items()}


@frozen
class MetricRegression:
    """One metric that moved past its threshold (``observed`` None: no longer reported)."""

    name: str
    baseline: float
    observed: float | None
    threshold_bp: int

    @property
    def change_bp(self) -> float | None:
        if self.observed is None:
            return None
        return _change_bp(self.baseline, self.observed)

    def describe(self) -> str:
        if self.observed is None:
            return f"{self.name}: no longer reported (baseline {self.baseline:g})"
        change = self.change_bp
        shown = "any" if change is None or math.isinf(change) else f"{change:+.0f}"
        return (
            f"{self.name}: {self.baseline:g} -> {self.observed:g} "
            f"({shown} bp, threshold {self.threshold_bp:+d} bp)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.name,
            "baseline": self.baseline,
            "observed": self.observed,
            "threshold_bp": self.threshold_bp,
        }


def _change_bp(baseline: float, observed: float) -> float:
    if baseline == 0:
        if observed == 0:
            return 0.0
        return math.copysign(math.inf, observed)
    return (observed - baseline) * 10_000 / abs(baseline)


def find_regressions(
    baseline: Mapping[str, float],
    observed: Mapping[str, float],
    thresholds: Mapping[str, int],
) -> list[MetricRegression]:
    """The metrics with a threshold that moved past it (see the module docstring)."""
    found: list[MetricRegression] = []
    for name, bp in sorted(thresholds.items()):
        if name not in baseline:
            continue  # nothing to compare with
        before = baseline[name]
        if name not in observed:
            found.append(MetricRegression(name, before, None, bp))
            continue
        change = _change_bp(before, observed[name])
        if (bp > 0 and change > bp) or (bp < 0 and change < bp):
            found.append(MetricRegression(name, before, observed[name], bp))
    return found


class MetricBaseline:
    """The last good version's metric samples, kept in the state database's meta table.

    Holds the samples of one version (a sample of another version starts afresh), at most
    ``keep`` of them, newest last.
    """

    META_KEY: Final = "metrics_baseline"

    def __init__(
        self,
        get_meta: Callable[[str], str | None],
        set_meta: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self._get = get_meta
        self._set = set_meta

    def _load(self) -> tuple[str | None, list[dict[str, float]]]:
        raw = self._get(self.META_KEY)
        if raw is None:
            return None, []
        try:
            obj = json.loads(raw)
            samples = [parse_metrics(s) for s in obj["samples"]]
            return str(obj["version"]), samples
        except (ValueError, KeyError, TypeError, HealthCheckError):
            return None, []  # a damaged record is a missing one: it is rebuilt

    def samples(self, version: str) -> list[dict[str, float]]:
        """The kept samples of ``version`` (none when the record is of another version)."""
        kept_version, samples = self._load()
        return samples if kept_version == version else []

    def median(self, version: str) -> dict[str, float]:
        return median_sample(self.samples(version))

    def add(self, version: str, sample: Mapping[str, float], *, keep: int) -> int:
        """Keep one more sample of ``version``; the number now kept."""
        if self._set is None:
            raise RuntimeError("a read-only baseline")
        samples = [*self.samples(version), dict(sample)][-max(1, keep) :]
        self._set(
            self.META_KEY, json.dumps({"version": version, "samples": samples}, sort_keys=True)
        )
        return len(samples)

    def to_dict(self) -> dict[str, Any] | None:
        version, samples = self._load()
        if version is None:
            return None
        return {"version": version, "samples": len(samples), "median": median_sample(samples)}
