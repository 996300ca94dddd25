"""The install hooks the node store calls back into the manager with during one install."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import (
    SandboxError,
)

if TYPE_CHECKING:
    from ..documents import ReleaseManifest
    from ..node import RollbackPoint


from .base import ManagerBase, _command_env

__all__ = ["ManagerInstallHooks"]

log = logging.getLogger("blackhole_sync.manager")


class ManagerInstallHooks:
    """The manager's answers to the install transaction (:class:`InstallHooks`).

    Rollback points and state restores go to the manager's RollbackManager (the host's when it
    gave one); the self-test runs the release's (or config's) command in the sandbox and every
    plugin self-test (``blackhole_sync_self_tests``); restart and health use the plugin hooks
    and the configured commands.
    """

    def __init__(self, manager: ManagerBase, manifest: ReleaseManifest) -> None:
        self.manager = manager
        self.manifest = manifest

    async def progress(self, step: str) -> None:
        sampler = self.manager.metrics.sampler
        if sampler is not None and sampler.running:
            sampler.sample()
        self.manager._emit("install-step", self.manifest.version, step=step)

    async def create_rollback_point(
        self, previous_version: str | None, version: str
    ) -> RollbackPoint:
        return await self.manager.rollbacks.create_rollback_point(previous_version, version)

    async def restore_state(self, point: RollbackPoint) -> None:
        await self.manager.rollbacks.restore_state(point)

    async def repair_tree(self, version: str) -> None:
        """Re-fetch a damaged rollback target (see :meth:`UpdateManager.repair_installed_tree`)."""
        await self.manager.repair_installed_tree(version)

    async def self_test(self, tree: Path, data_dir: Path, manifest: ReleaseManifest) -> None:
        from ..node import run_sandbox_test

        manager = self.manager
        command = manifest.self_test or manager.config.self_test_command()
        if command is not None:
            await run_sandbox_test(tree, data_dir, command)
        checks = [
            check
            for result in manager.plugins.hook.blackhole_sync_self_tests(
                node_dir=manager.node_dir, staged=tree, version=manifest.version
            )
            for check in result
        ]
        for check in checks:
            name = getattr(check, "name", type(check).__name__)
            try:
                reason = await check.check(manager.node_dir, manifest.version)
            except Exception as exc:  # noqa: BLE001 - a plugin's failure is the release's
                reason = f"{type(exc).__name__}: {exc}"
            if reason is not None:
                raise SandboxError(f"self-test {name!r} failed: {reason}")

    async def restart(self, version: str) -> None:
        manager = self.manager
        node_dir = manager.node_dir
        handled = manager.plugins.hook.blackhole_sync_restart_service(
            node_dir=node_dir, version=version
        )
        if handled:
            return
        argv = manager.config.restart_command()
        if argv:
            from ..node import run_restart_command

            await run_restart_command(
                list(argv),
                timeout=float(manager.config.commands.health_timeout),
                env=_command_env(manager.store, version),
            )

    async def health(self, version: str, manifest: ReleaseManifest) -> None:
        from ..node import require_healthy

        manager = self.manager
        node_dir = manager.node_dir
        command = manifest.health or manager.config.health_command()
        checks = [
            c
            for result in manager.plugins.hook.blackhole_sync_health_checks(node_dir=node_dir)
            for c in result
        ]
        if command is None and not checks:
            return
        await require_healthy(
            version,
            node_dir=node_dir,
            command=command,
            checks=checks,
            cwd=manager.store.version_dir(version),
            timeout=float(manager.config.commands.health_timeout),
            env=_command_env(manager.store, version),
        )
