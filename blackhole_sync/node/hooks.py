"""InstallHooks: what the install transaction asks of its caller, as one small protocol.

:meth:`NodeStore.install <blackhole_sync.node.NodeStore.install>` calls these, in this order:

1. ``progress(step)`` before each step ("verify", "backup", "sandbox", "migrate", "switch",
   "restart", "health", "done");
2. ``create_rollback_point(previous_version, version)`` once the verified tree is in place and
   before the node's data changes. The store records the point's id and path in its journal;
3. ``self_test(tree, data_dir, manifest)`` on the installed (not yet current) tree; raises
   :class:`~blackhole_sync.errors.SandboxError` to refuse the release (it is marked bad);
4. ``restart(version)`` after ``current`` moved; any exception is a failed start;
5. ``health(version, manifest)``; raises :class:`~blackhole_sync.errors.HealthCheckError`
   to roll back (the version is marked bad);
6. ``restore_state(point)`` only when the install is undone after the data changed, or rolled
   back after a failed restart or health check: it must put ``data/`` back as ``point`` saved it.

Optional: ``async repair_tree(version)``, when the hooks have one, is asked to re-fetch the
previous version's tree when a failed health check would switch back to it and its re-hash
shows damage (the update manager's hooks re-stage it from the sources); without it, or when it
fails, the node stays on the failed version instead of going live on unverified bytes.
``create_rollback_point`` is not called when the caller asked for no backup
(``backup_before_update = false``) and the install changes nothing in ``data/``.

:class:`DefaultInstallHooks` implements it with the store's own
:class:`~blackhole_sync.node.RollbackManager` and no-ops; subclass it to override only some
methods. A host that keeps its own rollback points passes hooks whose
``create_rollback_point`` / ``restore_state`` are its RollbackManager's.

Crash recovery (at the next :meth:`NodeStore.open`) has no hooks: it restores a journaled
point's data itself, which works for the store's own points and for any point whose directory
holds a :class:`~blackhole_sync.node.StateBackup` (``files.json`` and ``data/``, as
:func:`~blackhole_sync.node.backup_data_dir` writes). For a host point in another format it
cannot restore ``data/``: it finishes the rest of the undo, and says so in the recovery notes
and in the history (``data of rollback point ... not restored``), for the host to restore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from ..documents import ReleaseManifest
from .rollback import RollbackManager, RollbackPoint

__all__ = ["DefaultInstallHooks", "InstallHooks"]


@runtime_checkable
class InstallHooks(Protocol):
    """The callbacks of one install (see the module docstring for when each runs)."""

    async def progress(self, step: str) -> None:
        """The install is about to run ``step``."""
        ...

    async def create_rollback_point(
        self, previous_version: str | None, version: str
    ) -> RollbackPoint:
        """Back up the node's state before ``version`` replaces ``previous_version``."""
        ...

    async def self_test(self, tree: Path, data_dir: Path, manifest: ReleaseManifest) -> None:
        """Test the installed tree before the switch; raise SandboxError to refuse it."""
        ...

    async def restart(self, version: str) -> None:
        """Restart the node's service on ``version`` (now current)."""
        ...

    async def health(self, version: str, manifest: ReleaseManifest) -> None:
        """Check ``version`` after the restart; raise HealthCheckError to roll back."""
        ...

    async def restore_state(self, point: RollbackPoint) -> None:
        """Put ``data/`` back as ``point`` (made by :meth:`create_rollback_point`) saved it."""
        ...


class DefaultInstallHooks:
    """:class:`InstallHooks` with the store's own rollback points and nothing else."""

    def __init__(self, rollbacks: RollbackManager) -> None:
        self.rollbacks = rollbacks

    async def progress(self, step: str) -> None:
        return None

    async def create_rollback_point(
        self, previous_version: str | None, version: str
    ) -> RollbackPoint:
        return await self.rollbacks.create_rollback_point(previous_version, version)

    async def self_test(self, tree: Path, data_dir: Path, manifest: ReleaseManifest) -> None:
        return None

    async def restart(self, version: str) -> None:
        return None

    async def health(self, version: str, manifest: ReleaseManifest) -> None:
        return None

    async def restore_state(self, point: RollbackPoint) -> None:
        await self.rollbacks.restore_state(point)
