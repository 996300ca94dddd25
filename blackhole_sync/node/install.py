"""The install transaction (ARCHITECTURE.md section 4's install order), journaled step by step.

:class:`InstallTransaction` installs one staged tree as one release:

1. verify: the staged tree is checked against the signed manifest, every file hashed and
   fsynced in the same pass (:func:`~blackhole_sync.node.tree.check_tree`) -- the last check of
   the bytes before the switch; everything after works on the verified tree;
2. place: the manifest's bytes go to ``trust/manifests/``, the tree is renamed into
   ``versions/<v>/`` and the directory fsynced;
3. back up: ``hooks.create_rollback_point`` (journaled by id and path); skipped when the
   caller says ``backup=False`` and the install leaves ``data/`` alone (no schema migration,
   no configuration change: ``backup_before_update = false``);
4. self-test: ``hooks.self_test`` on the installed, not yet current, tree;
5. migrate: schema migrations and configuration changes run on copies in
   ``data/.migrate-<id>/``, then the copies are renamed over the originals;
6. switch ``current``; ``hooks.restart``; ``hooks.health`` -- both within ``max_downtime``
   seconds of the switch when given; commit.

A failure before the switch undoes the install (``data/`` restored through
``hooks.restore_state`` when the copies had been swapped in); a failed restart or health check
after it (or one that takes longer than ``max_downtime``) rolls back to the previous version
and marks this one bad. The previous version's tree is re-hashed against its signed manifest
before it goes live again; a damaged one is re-fetched when the hooks can
(``hooks.repair_tree``, optional), else the node stays on the failed version (marked bad, the
error says why). A crash anywhere is finished or undone at the next open (see journal.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
from attrs import frozen

from .._fsutil import checkpoint, copy_file, fsync_dir, remove_tree, replace
from ..clock import utcnow
from ..documents import Artifact, ConfigChange, Migration, ReleaseManifest
from ..errors import (
    BlackholeSyncError,
    FormatError,
    HealthCheckError,
    InstallError,
    LengthOrHashMismatchError,
    MigrationError,
    SandboxError,
)
from .hooks import InstallHooks
from .journal import DATA_TOUCHED, Journal
from .migrations import ConfigResult, SchemaMigrator, apply_config_changes, config_sidecars
from .rollback import RollbackPoint
from .tree import check_tree
from .truststore import SignedManifest

__all__ = ["InstallResult"]

#: Errors that may end an undo early; the journal row stays active and recovery finishes it.
_UNDO_LATER = (OSError, sqlite3.Error, BlackholeSyncError)


@frozen
class InstallResult:
    version: str
    previous_version: str | None
    changed: bool
    method: str
    bytes_fetched: int
    duration_s: float
    rollback_point: int | None = None
    schema_version: int | None = None
    config: ConfigResult | None = None


@contextlib.contextmanager
def _downtime_limit(version: str, seconds: float | None) -> Iterator[None]:
    """Restart plus health checks within ``seconds`` of the switch (None or 0: no limit)."""
    if not seconds:
        yield
        return
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError as exc:
        raise HealthCheckError(
            f"{version} was not healthy within max_downtime ({seconds:g}s) of the switch"
        ) from exc


@frozen
class InstallTransaction:
    """One node's install transaction (the store builds it; see the module docstring)."""

    journal: Journal
    app_db_path: Path
    network_config_path: Path
    #: Re-hashes an installed tree against its stored manifest (the store's verify_installed).
    verify_installed: Callable[[str], list[str]]

    async def run(
        self,
        release: SignedManifest,
        tree: Path,
        *,
        previous: str | None,
        preexisting: bool,
        hooks: InstallHooks,
        platform: str,
        arch: str,
        method: str,
        bytes_fetched: int,
        extra_migrations: Sequence[Migration],
        extra_config_changes: Sequence[ConfigChange],
        region: str | None,
        node_type: str | None,
        now: _dt.datetime | None,
        max_downtime: float | None = None,
        backup: bool = True,
    ) -> InstallResult:
        """Install ``tree`` as ``release`` (see :meth:`NodeStore.install` for the errors)."""
        state = self.journal.state
        manifest = release.manifest
        version = manifest.version
        started = time.monotonic()
        jid = state.begin(
            "install",
            version,
            previous,
            preexisting=int(preexisting),
            method=method,
            bytes_fetched=bytes_fetched,
            platform=platform,
            arch=arch,
            update_type=manifest.type,
            action="install",
        )
        checkpoint("install.begin")
        switched = False
        point: RollbackPoint | None = None
        try:
            await hooks.progress("verify")
            artifacts = manifest.artifacts_for(platform, arch)
            await anyio.to_thread.run_sync(
                self._verify_and_place, jid, release, tree, artifacts, preexisting
            )
            await hooks.progress("backup")
            changes = (*extra_config_changes, *manifest.config_changes)
            if backup or self._changes_data(manifest, extra_migrations, changes):
                point = await hooks.create_rollback_point(previous, version)
                self.journal.record_point(jid, point)
            else:
                state.set_step(jid, "backed_up")
            checkpoint("install.backed_up")
            await hooks.progress("sandbox")
            await hooks.self_test(self.journal.layout.version_dir(version), self.data_dir, manifest)
            state.set_step(jid, "sandboxed")
            checkpoint("install.sandboxed")
            await hooks.progress("migrate")
            when = now or utcnow()
            schema, config = await anyio.to_thread.run_sync(
                lambda: self._migrate(
                    jid, manifest, extra_migrations, changes, region, node_type, when
                )
            )
            await hooks.progress("switch")
            state.set_step(jid, "switching")
            self.journal.switch(version, "install")
            switched = True
            state.set_step(jid, "switched")
            checkpoint("install.switched")
            try:
                with _downtime_limit(version, max_downtime):
                    await hooks.progress("restart")
                    try:
                        await hooks.restart(version)
                    except HealthCheckError:
                        raise
                    except Exception as exc:
                        raise HealthCheckError(f"restart of {version} failed: {exc}") from exc
                    state.set_step(jid, "restarted")
                    checkpoint("install.restarted")
                    await hooks.progress("health")
                    await hooks.health(version, manifest)
                state.set_step(jid, "healthy")
                checkpoint("install.health_checked")
            except HealthCheckError as exc:
                await self._roll_back(jid, str(exc), point, hooks)
                raise
            except BaseException:
                await self._roll_back(
                    jid, "interrupted before the health check passed", point, hooks
                )
                raise
            duration = time.monotonic() - started
            self.journal.commit_install(jid, duration)
            checkpoint("install.committed")
            await hooks.progress("done")
            return InstallResult(
                version,
                previous,
                True,
                method,
                bytes_fetched,
                duration,
                None if point is None else point.id,
                schema,
                config,
            )
        except SandboxError as exc:
            await self._undo(jid, f"sandbox: {exc}", point, hooks, quiet=False)
            state.mark_bad(version, f"sandbox: {exc}")
            raise
        except (HealthCheckError, MigrationError, LengthOrHashMismatchError, FormatError):
            if not switched:
                await self._undo(jid, "refused", point, hooks)
            raise
        except OSError as exc:
            if not switched:
                await self._undo(jid, f"I/O error: {exc}", point, hooks)
            raise InstallError(f"install of {version} failed: {exc}") from exc
        except BaseException:
            if not switched:
                await self._undo(jid, "interrupted", point, hooks)
            raise

    @property
    def data_dir(self) -> Path:
        return self.journal.layout.data_dir

    # -- the way back -------------------------------------------------------------------------

    async def _undo(
        self,
        jid: int,
        error: str,
        point: RollbackPoint | None,
        hooks: InstallHooks,
        *,
        quiet: bool = True,
    ) -> None:
        """Undo before the switch; with ``quiet``, a failure leaves the rest to recovery."""
        with anyio.CancelScope(shield=True):
            try:
                restored = False
                if point is not None and self.journal.state.journal(jid)["step"] in DATA_TOUCHED:
                    await hooks.restore_state(point)
                    restored = True
                self.journal.undo_install(jid, error, data_restored=restored)
            except _UNDO_LATER:
                if not quiet:
                    raise

    async def _roll_back(
        self, jid: int, reason: str, point: RollbackPoint | None, hooks: InstallHooks
    ) -> None:
        """The new version failed after the switch: mark it bad, roll back (journaled).

        The previous version's tree is re-hashed first (and re-fetched through
        ``hooks.repair_tree`` when damaged and the hooks can); a tree that still does not
        match is not switched to: the install is closed on the failed version, marked bad,
        and :class:`HealthCheckError` says why.
        """
        with anyio.CancelScope(shield=True):
            target = self.journal.state.journal(jid)["from_version"]
            damage = await self._check_rollback_target(target, hooks)
            if damage is not None:
                self.journal.keep_after_refused_rollback(jid, f"{reason}; not rolled back: {damage}")
                raise HealthCheckError(f"{reason}; not rolled back: {damage}")
            self.journal.begin_failure_rollback(jid, reason)
            checkpoint("rollback.begin")
            if point is not None and self.journal.needs_restore(self.journal.state.journal(jid)):
                await hooks.restore_state(point)
                self.journal.data_restored(jid)
            await anyio.to_thread.run_sync(self.journal.finish_rollback, jid)

    async def _check_rollback_target(self, target: str | None, hooks: InstallHooks) -> str | None:
        """None when ``target``'s tree matches its manifest (after a repair, if one was
        needed and possible), else why it cannot go live."""
        if target is None:
            return None
        problems = await anyio.to_thread.run_sync(self.verify_installed, target)
        if not problems:
            return None
        repair = getattr(hooks, "repair_tree", None)
        if repair is not None:
            try:
                await repair(target)
            except (OSError, BlackholeSyncError) as exc:
                return (
                    f"installed tree of {target} does not match its signed manifest "
                    f"({problems[0]}) and could not be re-fetched: {exc}"
                )
            problems = await anyio.to_thread.run_sync(self.verify_installed, target)
            if not problems:
                return None
        return f"installed tree of {target} does not match its signed manifest: {problems[0]}"

    # -- steps --------------------------------------------------------------------------------

    def _changes_data(
        self,
        manifest: ReleaseManifest,
        extra: Sequence[Migration],
        changes: Sequence[ConfigChange],
    ) -> bool:
        """Whether the install writes ``data/``: a schema migration or configuration change
        (new or pending) runs. Such an install is always backed up first."""
        if changes or config_sidecars(self.network_config_path)[0].exists():
            return True
        return bool(SchemaMigrator(self.app_db_path, [*manifest.migrations, *extra]).plan())

    def _verify_and_place(
        self,
        jid: int,
        release: SignedManifest,
        tree: Path,
        artifacts: Sequence[Artifact],
        preexisting: bool,
    ) -> None:
        layout = self.journal.layout
        state = self.journal.state
        version = release.version
        state.set_step(jid, "verify")
        if not preexisting:
            # The hash pass of an install, and its last check before the switch: every staged
            # byte against the signed manifest, fsynced in the same read (tree.check_tree).
            problems = check_tree(tree, artifacts, fsync=True)
            if problems:
                remove_tree(tree)
                raise LengthOrHashMismatchError(
                    f"staged tree of {version} does not match its manifest: "
                    + "; ".join(problems[:5])
                )
        checkpoint("install.verified")
        dest = layout.version_dir(version)
        state.set_step(jid, "placing")
        self.journal.trust.save_manifest(version, release.raw)
        checkpoint("install.placing")
        if preexisting:
            remove_tree(tree)  # the installed tree (checked by the store) goes live again
        else:
            if os.path.lexists(dest):  # an uncommitted leftover
                self.journal.discard(dest)
            os.chmod(tree, 0o755)  # noqa: S103 - installed trees are world-readable
            os.rename(tree, dest)
            fsync_dir(layout.versions_dir)
        state.set_step(jid, "placed")
        checkpoint("install.placed")

    def _migrate(
        self,
        jid: int,
        manifest: ReleaseManifest,
        extra: Sequence[Migration],
        changes: Sequence[ConfigChange],
        region: str | None,
        node_type: str | None,
        now: _dt.datetime,
    ) -> tuple[int | None, ConfigResult | None]:
        state = self.journal.state
        state.set_step(jid, "migrating")
        work = self.journal.layout.migrate_dir(jid)
        remove_tree(work)
        os.mkdir(work, 0o700)
        migrator = SchemaMigrator(self.app_db_path, [*manifest.migrations, *extra])
        schema: int | None = None
        if migrator.plan():
            schema = migrator.migrate_copy(work / self.app_db_path.name)
        config: ConfigResult | None = None
        pending, _history = config_sidecars(self.network_config_path)
        if changes or pending.exists():
            for f in (self.network_config_path, *config_sidecars(self.network_config_path)):
                if f.exists():
                    copy_file(f, work / f.name, mode=stat.S_IMODE(f.stat().st_mode))
            config = apply_config_changes(
                work / self.network_config_path.name,
                changes,
                region=region,
                node_type=node_type,
                now=now,
                version=manifest.version,
            )
        fsync_dir(work)
        state.set_step(jid, "migrated")
        checkpoint("install.migrated")
        # Swap the migrated files in. From here until the switch, an undo restores data/ from
        # the rollback point; after the switch the new data stays.
        state.set_step(jid, "swapping")
        for i, name in enumerate(sorted(os.listdir(work))):
            target = self.data_dir / name
            if name == self.app_db_path.name:
                for side in ("-wal", "-shm", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{target}{side}")
            replace(work / name, target, sync=False)
            if i == 0:
                checkpoint("migrate.swapping")
        fsync_dir(self.data_dir)
        os.rmdir(work)
        state.set_step(jid, "swapped")
        checkpoint("migrate.swapped")
        return schema, config
