"""The regression watch of one node: its baseline kept, topped up, and a switch watched.

:class:`RegressionWatch` puts regression.py (samples, baseline, thresholds) and health.py's
:class:`~blackhole_sync.node.UpdateHealthMonitor` (``monitor_service_health``) together for the
update manager, which gives it the node's metric source and carries out what it decides:

- :meth:`RegressionWatch.record` -- one more sample of a good current version (the agent, each
  cycle);
- :meth:`RegressionWatch.top_up` -- before a switch, sample the running version until its
  baseline has ``samples`` samples;
- :meth:`RegressionWatch.watch` -- after a switch, sample the new version for
  ``watch_seconds`` and compare with the previous version's baseline: the
  :class:`~blackhole_sync.node.RollbackDecision` says whether it regressed (the caller rolls
  back when ``emergency_rollback`` is on).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio

from ..errors import HealthCheckError
from .config import RegressionSettings
from .health import RollbackDecision, UpdateHealthMonitor
from .regression import MetricBaseline

__all__ = ["RegressionWatch"]

log = logging.getLogger(__name__)

#: Samples the running ``version``'s metrics; ``{}`` with no source; HealthCheckError on failure.
Sampler = Callable[[str], Awaitable[Mapping[str, float]]]


class RegressionWatch:
    """Regression detection for one node (see the module docstring)."""

    def __init__(
        self,
        node_dir: Path,
        settings: RegressionSettings,
        baseline: MetricBaseline,
        sample: Sampler,
    ) -> None:
        self.node_dir = node_dir
        self.settings = settings
        self.baseline = baseline
        self.sample = sample

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    async def _one(self, version: str) -> Mapping[str, float] | None:
        try:
            sample = await self.sample(version)
        except HealthCheckError as exc:
            log.warning("metric sample of %s failed: %s", version, exc)
            return None
        return sample or None

    async def record(self, version: str) -> int:
        """Add one sample of the good ``version``; the samples now kept (0: none taken)."""
        if not self.enabled:
            return 0
        sample = await self._one(version)
        if sample is None:
            return 0
        return self.baseline.add(version, sample, keep=self.settings.samples)

    async def top_up(self, version: str) -> None:
        """Sample the running ``version`` (``interval`` seconds apart) until its baseline has
        ``samples`` samples; stops at the first failed or empty sample."""
        if not self.enabled:
            return
        missing = self.settings.samples - len(self.baseline.samples(version))
        for i in range(max(0, missing)):
            if i:
                await anyio.sleep(self.settings.interval)
            sample = await self._one(version)
            if sample is None:
                return
            self.baseline.add(version, sample, keep=self.settings.samples)

    async def watch(self, version: str, previous: str) -> RollbackDecision | None:
        """Watch the freshly switched ``version`` against ``previous``'s baseline; the
        monitor's decision, or None when nothing could be compared (no baseline)."""
        if not self.enabled:
            return None
        baseline = self.baseline.median(previous)
        if not baseline:
            log.info("no metric baseline of %s: regressions of %s not watched", previous, version)
            return None
        monitor = UpdateHealthMonitor(
            self.node_dir,
            metrics=self.sample,
            metric_baseline=baseline,
            thresholds=self.settings.thresholds,
        )
        return await monitor.evaluate(
            version, float(self.settings.watch_seconds), float(max(1, self.settings.interval))
        )
