"""The update manager's care of the installed tree: checks and repair before a switch back,
metric samples and the regression watch.
"""

from __future__ import annotations

import logging
import shutil
from typing import TYPE_CHECKING

from ..errors import (
    BlackholeSyncError,
    HealthCheckError,
    LengthOrHashMismatchError,
)

if TYPE_CHECKING:
    from ..node import RegressionWatch


from .base import ManagerBase, _command_env

__all__ = ["InstalledTreeSide"]

log = logging.getLogger("blackhole_sync.manager")


class InstalledTreeSide(ManagerBase):
    """The update manager's care of the installed tree: checks and repair before a switch back,"""

    async def check_installed_tree(self, version: str, *, repair: bool = True) -> None:
        """Re-hash ``versions/<version>`` against its stored signed manifest; a damaged tree
        is re-fetched (``repair``) when a source delivers it, else
        :class:`LengthOrHashMismatchError` names the first difference."""
        import anyio.to_thread

        problems = await anyio.to_thread.run_sync(self.store.verify_installed, version)
        if not problems:
            return
        damaged = LengthOrHashMismatchError(
            f"installed tree of {version} does not match its signed manifest: {problems[0]}"
        )
        if not repair:
            raise damaged
        await self._repair_or_refuse(version, damaged)

    async def _repair_or_refuse(self, version: str, damaged: LengthOrHashMismatchError) -> None:
        try:
            await self.repair_installed_tree(version)
        except (OSError, BlackholeSyncError) as exc:
            raise LengthOrHashMismatchError(
                f"{damaged}; re-fetching it failed ({exc}): the node stays where it is"
            ) from exc

    async def repair_installed_tree(self, version: str) -> None:
        """Re-fetch the installed, non-current ``version`` into a fresh tree (the normal
        staging path: reused from the current tree where identical, else downloaded and
        verified) and put it in place of the damaged one. Its manifest must still verify
        against the trusted metadata."""
        from ..node import ReleaseStager

        state = self._trusted()
        manifest = self._stored_manifest(state, version)
        if manifest is None:
            raise LengthOrHashMismatchError(
                f"the stored manifest of {version} no longer verifies: it cannot be re-fetched"
            )
        platform, arch = self.store.state.platform_arch(version) or (
            self.config.platform,
            self.config.arch,
        )
        stager = ReleaseStager(
            self.store,
            self._client(),
            platform=platform,
            arch=arch,
            codecs={},
            releases=list,
            identity_key=self.identity_key,
            delta_memory_budget=self.config.delta_memory_budget,
        )
        self._emit("repairing", version)
        staged = await stager.stage(manifest, self.store.current_version(), deltas=False)
        try:
            import anyio.to_thread

            await anyio.to_thread.run_sync(self.store.replace_installed_tree, version, staged.tree)
        finally:
            shutil.rmtree(staged.work, ignore_errors=True)
            shutil.rmtree(staged.tree, ignore_errors=True)
        self._emit("repaired", version, bytes=staged.bytes_fetched)

    async def sample_metrics(self, version: str) -> dict[str, float]:
        """One sample of the running ``version``'s metrics: the ``blackhole_sync_metrics``
        hook's answers and ``[commands] metrics`` merged (the first answer for a name wins);
        ``{}`` with no source. A source that fails raises :class:`HealthCheckError`."""
        from ..node import parse_metrics, run_metrics_command

        sample: dict[str, float] = {}
        try:
            answers = self.plugins.hook.blackhole_sync_metrics(
                node_dir=self.node_dir, version=version
            )
        except Exception as exc:  # a plugin's failure is a failed sample
            raise HealthCheckError(f"metrics hook failed: {type(exc).__name__}: {exc}") from exc
        for answer in answers:
            for name, value in parse_metrics(answer, "blackhole_sync_metrics").items():
                sample.setdefault(name, value)
        argv = self.config.commands.metrics
        if argv:
            tree = self.store.version_dir(version)
            measured = await run_metrics_command(
                argv,
                cwd=tree if tree.is_dir() else self.node_dir,
                env=_command_env(self.store, version),
                timeout=float(self.config.commands.health_timeout),
            )
            for name, value in measured.items():
                sample.setdefault(name, value)
        return sample

    def regression_watch(self) -> RegressionWatch:
        """The node's :class:`~blackhole_sync.node.RegressionWatch` (baseline in the state
        database, samples from :meth:`sample_metrics`)."""
        from ..node import MetricBaseline, RegressionWatch

        setter = None if self.read_only else self.store.set_meta
        baseline = MetricBaseline(self.store.get_meta, setter)
        return RegressionWatch(self.node_dir, self.config.regression, baseline, self.sample_metrics)

    async def record_baseline_sample(self) -> int:
        """Add one metric sample of the current version to its baseline when it is good
        (the agent calls this each cycle); the samples now kept (0: nothing recorded)."""
        current = self.store.current_version()
        if current is None or self.store.version_state(current) != "good":
            return 0
        return await self.regression_watch().record(current)

    async def watch_for_regressions(self, version: str, previous: str | None) -> None:
        """After a switch: watch ``version``'s metrics for ``[regression] watch_seconds``
        (:meth:`UpdateHealthMonitor.monitor_service_health`) against ``previous``'s baseline.

        On a regression, with ``[policy.critical] emergency_rollback`` on, roll back to
        ``previous`` (its tree re-hashed first), mark ``version`` bad and raise
        :class:`HealthCheckError`; with it off, record the regression and stay.
        """
        if previous is None:
            return
        decision = await self.regression_watch().watch(version, previous)
        if decision is None or not decision.rollback:
            return
        reason = f"regression after the switch to {version}: {decision.reason}"
        self._emit("regression", version, reason=reason)
        if not self.config.policy.critical.emergency_rollback:
            log.warning("%s (emergency_rollback = false: staying on it)", reason)
            self.store.add_history("regression", previous, version, error=reason)
            return
        target = await self.rollback(previous, hold=False)
        self.store.mark_bad(version, reason)
        await self._notify("rolled-back", version, reason=reason, to=target)
        raise HealthCheckError(f"{reason}; rolled back to {target}")
