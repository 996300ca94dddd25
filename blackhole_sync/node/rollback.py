"""Rollback points: the previous version plus a consistent backup of the node's data.

A rollback point is made by every install before anything in ``data/`` changes. It lives in
``NODE/rollback/<id>/`` and holds ``point.json`` (previous version, version being installed,
time) and ``data/``, a mirror of ``NODE/data``: SQLite databases (``*.db``, ``*.sqlite``,
``*.sqlite3`` with an SQLite header) are copied with the online backup API, so a database in
use (WAL or not) is captured consistently; other files (configuration) are copied byte for
byte. A point is written under a temporary name and renamed into place, so it exists whole or
not at all.

Restoring rebuilds ``data/`` beside it (``NODE/.data-restore``) and swaps the directories with
two renames; :func:`recover_data_dir` repairs a crash between them. Rolling back (switching
``current`` and restoring data) is journaled by the store and idempotent, see
:meth:`NodeStore.rollback`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from attrs import frozen

from .._fsutil import checkpoint, copy_file, fsync_dir, fsync_file, remove_tree, write_atomic
from ..documents import format_time
from ..errors import InstallError, NoSuchVersionError

if TYPE_CHECKING:
    from .store import NodeStore

__all__ = [
    "RollbackManager",
    "RollbackPoint",
    "StateBackup",
    "backup_data_dir",
    "is_sqlite_file",
    "recover_data_dir",
    "restore_data_dir",
]

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SQLITE_SIDE = ("-wal", "-shm", "-journal")
_SQLITE_HEADER = b"SQLite format 3\x00"


@frozen
class StateBackup:
    """A consistent copy of a data directory: ``path/data`` plus ``path/files.json``."""

    path: Path
    files: tuple[str, ...]
    size: int

    @property
    def data(self) -> Path:
        return self.path / "data"

    @classmethod
    def load(cls, path: Path) -> StateBackup:
        try:
            info = json.loads((path / "files.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise InstallError(f"state backup {path} is unreadable: {exc}") from exc
        return cls(path, tuple(info["files"]), int(info["size"]))


@frozen
class RollbackPoint:
    id: int
    previous_version: str | None
    for_version: str
    created: str
    path: Path
    size: int

    @property
    def backup(self) -> StateBackup:
        return StateBackup.load(self.path)


def is_sqlite_file(path: Path) -> bool:
    if not path.name.endswith(SQLITE_SUFFIXES):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_HEADER
    except OSError:
        return False


def _skip(rel: str, names: set[str]) -> bool:
    base = os.path.basename(rel)
    if base.startswith((".migrate", ".restore")):
        return True
    for side in _SQLITE_SIDE:
        if rel.endswith(side) and rel[: -len(side)] in names:
            return True
    return False


def _sqlite_backup(src: Path, dst: Path) -> None:
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(dst)
        try:
            source.backup(out)
            out.execute("PRAGMA journal_mode=DELETE")
        finally:
            out.close()
    finally:
        source.close()
    os.chmod(dst, stat.S_IMODE(os.stat(src).st_mode))
    fsync_file(dst)


def backup_data_dir(data_dir: Path, dest: Path) -> StateBackup:
    """Back ``data_dir`` up into the new directory ``dest`` (fsynced; see the module doc)."""
    os.mkdir(dest, 0o700)
    mirror = dest / "data"
    os.mkdir(mirror, 0o700)
    files: list[str] = []
    size = 0
    if data_dir.is_dir():
        walked = list(os.walk(data_dir))
        names = {os.path.relpath(os.path.join(r, f), data_dir) for r, _d, fs in walked for f in fs}
        for root, dirs, filenames in walked:
            rel_root = os.path.relpath(root, data_dir)
            dirs[:] = sorted(d for d in dirs if not d.startswith((".migrate", ".restore")))
            target_root = mirror if rel_root == "." else mirror / rel_root
            for d in dirs:
                os.mkdir(target_root / d, 0o700)
            for name in sorted(filenames):
                rel = os.path.normpath(os.path.join(rel_root, name))
                if _skip(rel, names):
                    continue
                src = Path(root) / name
                st = os.lstat(src)
                if not stat.S_ISREG(st.st_mode):
                    continue  # sockets, symlinks: not state we restore
                if is_sqlite_file(src):
                    _sqlite_backup(src, target_root / name)
                else:
                    copy_file(src, target_root / name, mode=stat.S_IMODE(st.st_mode))
                size += os.stat(target_root / name).st_size
                files.append(rel)
            fsync_dir(target_root)
    write_atomic(dest / "files.json", json.dumps({"files": files, "size": size}).encode())
    fsync_dir(dest)
    return StateBackup(dest, tuple(files), size)


def _copy_tree(src: Path, dst: Path) -> None:
    os.mkdir(dst, 0o700)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            _copy_tree(Path(entry.path), target)
        elif entry.is_file(follow_symlinks=False):
            copy_file(Path(entry.path), target, mode=stat.S_IMODE(entry.stat().st_mode))
    fsync_dir(dst)


def restore_data_dir(backup: StateBackup, data_dir: Path) -> None:
    """Replace ``data_dir`` by the backup's contents (crash-safe, see :func:`recover_data_dir`)."""
    parent = data_dir.parent
    fresh = parent / ".data-restore"
    old = parent / ".data-old"
    remove_tree(fresh)
    remove_tree(old)
    _copy_tree(backup.data, fresh)
    os.chmod(fresh, 0o755)  # noqa: S103 - the data directory's usual mode
    if data_dir.exists():
        os.rename(data_dir, old)
        fsync_dir(parent)
    checkpoint("rollback.data_moved")
    os.rename(fresh, data_dir)
    fsync_dir(parent)
    remove_tree(old)


def recover_data_dir(data_dir: Path) -> None:
    """Repair an interrupted :func:`restore_data_dir`: ``data_dir`` exists afterwards."""
    parent = data_dir.parent
    old = parent / ".data-old"
    if not data_dir.exists() and old.exists():
        os.rename(old, data_dir)
        fsync_dir(parent)
    remove_tree(parent / ".data-restore")
    remove_tree(old)
    if not data_dir.exists():
        os.mkdir(data_dir, 0o755)


class RollbackManager:
    """The design's RollbackManager over one node store (see :class:`NodeStore`)."""

    def __init__(self, store: NodeStore) -> None:
        self._store = store

    @property
    def root(self) -> Path:
        return self._store.path / "rollback"

    # -- versions ---------------------------------------------------------------------------

    def rollback_versions(self) -> list[str]:
        """Installed versions one can roll back to (not current, not marked bad), newest first."""
        current = self._store.current_version()
        infos = self._store.installed_versions()
        return [
            i.version
            for i in reversed(infos)
            if i.version != current and not self._store.is_bad(i.version)
        ]

    get_rollback_versions = rollback_versions

    def can_rollback(self) -> bool:
        try:
            self._store.rollback_target()
        except NoSuchVersionError:
            return False
        return True

    def perform_rollback(self, target: str | None = None, *, restore_data: bool = True) -> str:
        """Roll back to ``target`` (default: the previous version); the version now current."""
        return self._store.rollback(target, restore_data=restore_data)

    # -- points ------------------------------------------------------------------------------

    def create_rollback_point(
        self, previous_version: str | None, for_version: str
    ) -> RollbackPoint:
        """Back up ``data/`` and record it as the way back from ``for_version``."""
        conn = self._store.db
        created = format_time(_dt.datetime.now(_dt.UTC))
        tmp = self.root / f".tmp-{secrets.token_hex(8)}"
        backup = backup_data_dir(self._store.data_dir, tmp)
        with self._store.transaction():
            cur = conn.execute(
                "INSERT INTO rollback_points(previous_version, for_version, created, size, path)"
                " VALUES (?, ?, ?, ?, '')",
                (previous_version, for_version, created, backup.size),
            )
            point_id = int(cur.lastrowid or 0)
            final = self.root / str(point_id)
            conn.execute("UPDATE rollback_points SET path=? WHERE id=?", (final.name, point_id))
            os.rename(tmp, final)
            fsync_dir(self.root)
        return RollbackPoint(point_id, previous_version, for_version, created, final, backup.size)

    def rollback_points(self) -> list[RollbackPoint]:
        rows = self._store.db.execute(
            "SELECT id, previous_version, for_version, created, path, size FROM rollback_points"
            " ORDER BY id"
        ).fetchall()
        return [RollbackPoint(r[0], r[1], r[2], r[3], self.root / r[4], r[5]) for r in rows]

    def get_point(self, point_id: int) -> RollbackPoint | None:
        for p in self.rollback_points():
            if p.id == point_id:
                return p
        return None

    def point_for(
        self, target: str | None, *, from_version: str | None = None
    ) -> RollbackPoint | None:
        """The newest point whose backup was taken while ``target`` was current."""
        for p in reversed(self.rollback_points()):
            if p.previous_version == target and (
                from_version is None or p.for_version == from_version
            ):
                if p.path.is_dir():
                    return p
        return None

    def delete_point(self, point_id: int) -> None:
        point = self.get_point(point_id)
        with self._store.transaction():
            self._store.db.execute("DELETE FROM rollback_points WHERE id=?", (point_id,))
        if point is not None:
            remove_tree(point.path)

    def prune_old_rollback_points(self, keep: int, *, protect: set[int] | None = None) -> list[int]:
        """Keep the ``keep`` newest points and those in ``protect``; return the ids removed."""
        protect = protect or set()
        points = self.rollback_points()
        removed: list[int] = []
        for p in points[: max(0, len(points) - keep)]:
            if p.id in protect:
                continue
            self.delete_point(p.id)
            removed.append(p.id)
        return removed

    def cleanup_temporary(self) -> None:
        """Remove half-written points (``.tmp-*``) and rows whose directory is gone."""
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                if entry.name.startswith(".tmp-"):
                    remove_tree(Path(entry.path))
        for p in self.rollback_points():
            if not p.path.is_dir():
                with self._store.transaction():
                    self._store.db.execute("DELETE FROM rollback_points WHERE id=?", (p.id,))

    # -- state --------------------------------------------------------------------------------

    def backup_state(self, dest: Path | None = None) -> StateBackup:
        """A consistent backup of ``data/`` in ``dest`` (default: a new dir under rollback/)."""
        if dest is None:
            dest = self.root / f"manual-{secrets.token_hex(6)}"
        return backup_data_dir(self._store.data_dir, dest)

    def restore_state(self, backup: StateBackup | Path) -> None:
        """Replace ``data/`` by a backup made with :meth:`backup_state` or a rollback point."""
        if isinstance(backup, Path):
            backup = StateBackup.load(backup)
        restore_data_dir(backup, self._store.data_dir)
