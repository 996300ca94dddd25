"""The journaled steps of installs, rollbacks and activations, and how each is finished or undone.

Every step of an operation is recorded in the state database's ``journal`` table before and
after it runs, and each has a named crash checkpoint (:data:`CHECKPOINTS`;
``BLACKHOLE_SYNC_CRASH_AT=<name>`` kills the process there). After a crash,
:meth:`Journal.finish_interrupted` looks at the one active row and:

- undoes an install interrupted before the switch: ``data/`` is restored from the journaled
  rollback point when the data had been touched, ``current`` is put back, the new tree and
  its manifest are removed;
- completes an install interrupted after the switch (its health is then the agent's to
  confirm, see :meth:`NodeStore.record_start_failure`);
- finishes an interrupted rollback or activation.

The ``current`` switch is a rename of a temporary symlink over ``current`` followed by an
fsync of the node directory: a reader sees the old or the new target, never neither.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path
from typing import Any, Final

from .._fsutil import checkpoint, fsync_dir, remove_tree, replace
from .layout import MIGRATE_PREFIX, NodeLayout
from .rollback import RollbackManager, RollbackPoint, StateBackup, restore_data_dir
from .state import StateDB
from .truststore import TrustStore

__all__ = ["CHECKPOINTS"]

#: Every crash checkpoint, in the order an install (then a rollback) passes them.
CHECKPOINTS: tuple[str, ...] = (
    "install.begin",
    "install.verified",
    "install.placing",
    "install.placed",
    "install.backed_up",
    "install.sandboxed",
    "migrate.copied",
    "migrate.schema_applied",
    "migrate.config_applied",
    "install.migrated",
    "migrate.swapping",
    "migrate.swapped",
    "install.switch_prepared",
    "install.switched",
    "install.restarted",
    "install.health_checked",
    "install.committed",
    "rollback.begin",
    "rollback.data_moved",
    "rollback.data_restored",
    "rollback.switch_prepared",
    "rollback.switched",
    "rollback.committed",
)

# Install steps, in order: recovery undoes those before the switch and completes the rest.
BEFORE_SWITCH: Final = (
    "begin",
    "verify",
    "placing",
    "placed",
    "backed_up",
    "sandboxed",
    "migrating",
    "migrated",
)
#: Steps at which ``data/`` holds migrated files: undoing restores the rollback point.
DATA_TOUCHED: Final = ("swapping", "swapped", "switching")
AFTER_SWITCH: Final = ("switched", "restarted", "healthy")


class Journal:
    """Journaled switching over one node: its layout, state, rollback points and trust store."""

    def __init__(
        self, layout: NodeLayout, state: StateDB, rollbacks: RollbackManager, trust: TrustStore
    ) -> None:
        self.layout = layout
        self.state = state
        self.rollbacks = rollbacks
        self.trust = trust

    # -- primitives ---------------------------------------------------------------------------

    def switch(self, version: str | None, tag: str) -> None:
        """Point ``current`` at ``versions/<version>`` (or remove it) atomically and durably."""
        root = self.layout.root
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.layout.current)
            fsync_dir(root)
            return
        tmp = self.layout.current_tmp(secrets.token_hex(6))
        os.symlink(self.layout.current_target(version), tmp)
        try:
            checkpoint(f"{tag}.switch_prepared")
            replace(tmp, self.layout.current, sync=False)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(root)

    def discard(self, path: Path) -> None:
        """Remove a tree: first renamed into staging (atomic), then deleted."""
        if not os.path.lexists(path):
            return
        trash = self.layout.staging_entry(f"trash-{secrets.token_hex(8)}")
        os.rename(path, trash)
        fsync_dir(path.parent)
        remove_tree(trash)

    def remove_migrate_leftovers(self) -> None:
        for entry in os.listdir(self.layout.data_dir):
            if entry.startswith(MIGRATE_PREFIX):
                remove_tree(self.layout.data_dir / entry)

    # -- rollback points in the journal -------------------------------------------------------

    def record_point(self, jid: int, point: RollbackPoint) -> None:
        """Install ``jid`` backed up the data into ``point`` (its id and path are journaled)."""
        self.state.set_step(
            jid,
            "backed_up",
            rollback_point=point.id,
            rollback_path=str(point.path),
            rollback_own=int(self.rollbacks.is_own(point)),
        )

    def restore_journaled(self, row: dict[str, Any]) -> str | None:
        """Restore ``data/`` from the point journaled in ``row`` with the store's own means.

        Returns None when done (or nothing to restore), else a note saying why it could not:
        a host's point that is not a :class:`StateBackup` directory.
        """
        point_id = row["rollback_point"]
        if point_id is None:
            return None
        if row["rollback_own"]:
            point = self.rollbacks.get_point(point_id)
            if point is not None:
                restore_data_dir(point.backup, self.layout.data_dir)
            return None
        path = Path(row["rollback_path"] or "")
        if row["rollback_path"] and (path / "files.json").is_file():
            restore_data_dir(StateBackup.load(path), self.layout.data_dir)
            return None
        return (
            f"data of rollback point {point_id} ({path}) not restored: not a state backup the"
            " store can read; restore it with the RollbackManager that made it"
        )

    # -- installs -----------------------------------------------------------------------------

    def commit_install(self, jid: int, duration: float, *, note: str | None = None) -> None:
        row = self.state.journal(jid)
        version = row["version"]
        with self.state.transaction():
            self.state.commit_version(
                version, update_type=row["update_type"], platform=row["platform"], arch=row["arch"]
            )
            self.state.end_operation(jid, "done", note)
            self.state.add_history(
                "install",
                row["from_version"],
                version,
                method=row["method"],
                bytes_fetched=row["bytes_fetched"],
                duration_s=duration,
                note=note,
            )

    def undo_install(self, jid: int, error: str, *, data_restored: bool = False) -> str | None:
        """Put the node back as it was before install ``jid`` (idempotent).

        ``data_restored``: the caller already restored ``data/`` (through its hooks). Returns
        the note of :meth:`restore_journaled` when the data could not be restored.
        """
        row = self.state.journal(jid)
        version = row["version"]
        previous = row["from_version"]
        note = None
        if not data_restored and row["step"] in DATA_TOUCHED:
            note = self.restore_journaled(row)
        if self.layout.current_version() != previous:
            self.switch(previous, "undo")
        self.remove_migrate_leftovers()
        if not row["preexisting"]:
            self.discard(self.layout.version_dir(version))
            self.trust.remove_manifest(version)
        own_point = row["rollback_point"] if row["rollback_own"] else None
        with self.state.transaction():
            self.state.end_operation(jid, "undone", error)
            if own_point is not None:
                self.state.delete_rollback_point(own_point)
            self.state.add_history(
                "failed",
                previous,
                version,
                method=row["method"],
                bytes_fetched=row["bytes_fetched"],
                duration_s=time.time() - row["started"],
                error=error if note is None else f"{error}; {note}",
            )
        if own_point is not None:
            remove_tree(self.layout.rollback_point(own_point))
        return note

    def begin_failure_rollback(self, jid: int, reason: str) -> None:
        """Install ``jid`` failed after its switch: mark the version bad and journal the way
        back in the same row (step ``rb.begin``)."""
        row = self.state.journal(jid)
        with self.state.transaction():
            self.state.mark_bad_in_transaction(
                row["version"], reason, details=(row["update_type"], row["platform"], row["arch"])
            )
            self.state.turn_into_rollback(jid, reason)

    def keep_after_refused_rollback(self, jid: int, reason: str) -> None:
        """Install ``jid`` failed after its switch but the way back is refused (the previous
        tree is damaged): close the install on the failed version, marked bad."""
        row = self.state.journal(jid)
        self.commit_install(jid, time.time() - row["started"], note=reason)
        self.state.mark_bad(
            row["version"], reason, details=(row["update_type"], row["platform"], row["arch"])
        )

    # -- rollbacks and activations ------------------------------------------------------------

    @staticmethod
    def needs_restore(row: dict[str, Any]) -> bool:
        """True when rollback ``row`` has yet to restore its point's data."""
        return bool(
            row["restore_data"]
            and row["rollback_point"] is not None
            and row["step"] in ("rb.begin", "begin")
        )

    def data_restored(self, jid: int) -> None:
        self.state.set_step(jid, "rb.data_restored")
        checkpoint("rollback.data_restored")

    def run_rollback(self, jid: int) -> None:
        """Carry journaled rollback ``jid`` to its end from whatever step it reached."""
        row = self.state.journal(jid)
        checkpoint("rollback.begin")
        note = None
        if self.needs_restore(row):
            note = self.restore_journaled(row)
            self.data_restored(jid)
        self.finish_rollback(jid, note=note)

    def finish_rollback(self, jid: int, *, note: str | None = None) -> None:
        """Switch to the rollback's target (data already restored) and commit it."""
        row = self.state.journal(jid)
        target = row["version"]
        if self.layout.current_version() != target:
            self.switch(target, "rollback")
        self.state.set_step(jid, "rb.switched")
        checkpoint("rollback.switched")
        failed = row["action"] == "failed"  # a health rollback: report what was tried
        error = row["error"] if failed else None
        # a remark, not an error: the operator chose to keep the data
        remark = (
            None if failed or row["restore_data"] or row["action"] == "activate" else "data kept"
        )
        if note is not None:  # the data could not be restored: that is an error
            error = note if error is None else f"{error}; {note}"
        with self.state.transaction():
            self.state.end_operation(jid, "done", row["error"])
            self.state.add_history(
                row["action"] or "rollback",
                target if failed else row["from_version"],
                row["from_version"] if failed else target,
                duration_s=time.time() - row["started"],
                error=error,
                note=remark,
                method=row["method"],
                bytes_fetched=row["bytes_fetched"] or 0,
            )
        checkpoint("rollback.committed")

    # -- recovery -----------------------------------------------------------------------------

    def finish_interrupted(self) -> list[str]:
        """Finish or undo the operation a crash interrupted (see the module docstring)."""
        row = self.state.active_operation()
        if row is None:
            return []
        jid, step, version = row["id"], row["step"], row["version"]
        if row["op"] == "rollback":
            self.run_rollback(jid)
            if row["action"] == "activate":
                return [f"finished the activation of {version}"]
            return [f"finished rollback to {version}"]
        if step in AFTER_SWITCH or (
            step == "switching" and self.layout.current_version() == version
        ):
            self.commit_install(
                jid,
                time.time() - row["started"],
                note=f"completed by recovery after {step}; health unconfirmed",
            )
            return [f"completed install of {version}"]
        note = self.undo_install(jid, f"interrupted at step {step}; undone by recovery")
        return [f"undid install of {version}", *([note] if note else [])]
