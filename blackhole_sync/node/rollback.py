"""Rollback points: the previous version plus a consistent backup of the node's data.

A rollback point is made by every install before anything in ``data/`` changes. It lives in
``NODE/rollback/<id>/`` (its previous version, the version being installed and its time are a
row of the state database) and holds a :class:`StateBackup`: ``files.json`` (what was backed
up) and ``data/``, a mirror of ``NODE/data``. SQLite databases (``*.db``, ``*.sqlite``,
``*.sqlite3`` with an SQLite header) are copied with the online backup API, so a database in
use (WAL or not) is captured consistently; other files (configuration) are copied byte for
byte. A point is written under a temporary name and renamed into place, so it exists whole or
not at all.

Restoring rebuilds ``data/`` beside it (``NODE/.data-restore``) and swaps the directories with
two renames; :func:`recover_data_dir` repairs a crash between them. Rolling back (switching
``current`` and restoring data) is journaled by the store and idempotent, see
:meth:`NodeStore.rollback`.

:class:`RollbackManager` implements the design's RollbackManager protocol
(:class:`blackhole_sync.protocols.RollbackManager`: async ``create_rollback_point``,
``perform_rollback``, ``backup_state``, ``restore_state``, ``prune_old_rollback_points``; sync
``can_rollback``, ``get_rollback_versions``) over one node. The store's own transactions use
its synchronous helpers (:meth:`~RollbackManager.new_point`, :meth:`~RollbackManager.restore`,
:meth:`~RollbackManager.prune_points`, ...). It reaches the node through the small
:class:`RollbackHost` protocol, which :class:`~blackhole_sync.node.NodeStore` satisfies, so this
module never imports the store. A host's own RollbackManager keeps its points outside
``NODE/rollback/``: recovery removes the directories there that the store does not know.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
from pathlib import Path
from typing import Protocol

from attrs import frozen

from .._fsutil import checkpoint, copy_file, fsync_dir, fsync_file, remove_tree, write_atomic
from ..clock import utcnow
from ..documents import VersionInfo, format_time
from ..errors import InstallError, NoSuchVersionError
from .layout import NodeLayout
from .state import StateDB

__all__ = [
    "RollbackHost",
    "RollbackManager",
    "RollbackPoint",
    "RollbackResult",
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
    """A backup of ``data/`` taken while ``previous_version`` was current, before
    ``for_version`` was installed. ``path`` holds a :class:`StateBackup` (for the store's own
    points; a host's RollbackManager may use its own format there)."""

    id: int
    previous_version: str | None
    for_version: str
    created: str
    path: Path
    size: int

    @property
    def backup(self) -> StateBackup:
        return StateBackup.load(self.path)


@frozen
class RollbackResult:
    """What :meth:`RollbackManager.perform_rollback` did."""

    version: str  # now current
    previous: str | None  # current before the rollback
    restored_point: int | None  # the rollback point whose state was restored, if any


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
    fresh, old = NodeLayout.data_swap_dirs(data_dir)
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
    fresh, old = NodeLayout.data_swap_dirs(data_dir)
    if not data_dir.exists() and old.exists():
        os.rename(old, data_dir)
        fsync_dir(parent)
    remove_tree(fresh)
    remove_tree(old)
    if not data_dir.exists():
        os.mkdir(data_dir, 0o755)


class RollbackHost(Protocol):
    """What a :class:`RollbackManager` needs from its node (:class:`NodeStore` provides it)."""

    layout: NodeLayout
    state: StateDB

    def current_version(self) -> str | None: ...

    def installed_versions(self) -> list[VersionInfo]: ...

    def rollback_target(self) -> str: ...

    def rollback(self, to_version: str | None = None, *, restore_data: bool = True) -> str: ...


class RollbackManager:
    """The design's RollbackManager over one node (see the module docstring)."""

    def __init__(self, host: RollbackHost) -> None:
        self._host = host

    @property
    def root(self) -> Path:
        return self._host.layout.rollback_dir

    @property
    def _state(self) -> StateDB:
        return self._host.state

    # -- the protocol (async where it does I/O) -----------------------------------------------

    def can_rollback(self) -> bool:
        """True when the version current before this one is still installed."""
        try:
            self._host.rollback_target()
        except NoSuchVersionError:
            return False
        return True

    def get_rollback_versions(self) -> list[str]:
        """Installed versions one can roll back to (not current, not marked bad), newest first."""
        return self.rollback_versions()

    async def create_rollback_point(
        self, previous_version: str | None, for_version: str
    ) -> RollbackPoint:
        """Back up ``data/`` and record it as the way back from ``for_version``."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.new_point, previous_version, for_version)

    async def perform_rollback(
        self, target: str | None = None, *, restore_data: bool = True
    ) -> RollbackResult:
        """Make ``target`` (default: the previous version) current and restore the data saved
        while it was current (journaled by the store: a crash is finished at the next open)."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(lambda: self.rollback_to(target, restore_data))

    async def backup_state(self, dest: Path | None = None) -> StateBackup:
        """A consistent copy of ``data/`` (default: a new ``manual-*`` dir under rollback/)."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.backup, dest)

    async def restore_state(self, backup: StateBackup | RollbackPoint | Path) -> None:
        """Put a backup or a rollback point's data back in place of ``data/``."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.restore, backup)

    async def prune_old_rollback_points(self, keep: int) -> None:
        """Keep the ``keep`` newest rollback points."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.prune_points, keep)

    # -- versions (sync) ----------------------------------------------------------------------

    def rollback_versions(self) -> list[str]:
        """Installed versions one can roll back to (not current, not marked bad), newest first."""
        current = self._host.current_version()
        return [
            i.version
            for i in reversed(self._host.installed_versions())
            if i.version != current and not self._state.is_bad(i.version)
        ]

    def rollback_to(self, target: str | None = None, restore_data: bool = True) -> RollbackResult:
        """The synchronous :meth:`perform_rollback`."""
        previous = self._host.current_version()
        chosen = target or self._host.rollback_target()
        point = self.restore_point_for(chosen, previous) if restore_data else None
        version = self._host.rollback(chosen, restore_data=restore_data)
        changed = version != previous
        return RollbackResult(version, previous, point.id if point and changed else None)

    # -- points (sync: what the store's transactions use) -------------------------------------

    def new_point(self, previous_version: str | None, for_version: str) -> RollbackPoint:
        """Back up ``data/`` into a new point (written under a temporary name, then renamed)."""
        layout = self._host.layout
        created = format_time(utcnow())
        tmp = layout.rollback_point(f".tmp-{secrets.token_hex(8)}")
        backup = backup_data_dir(layout.data_dir, tmp)
        with self._state.transaction():
            point_id = self._state.add_rollback_point(
                previous_version, for_version, created, backup.size
            )
            final = layout.rollback_point(point_id)
            self._state.set_rollback_point_path(point_id, final.name)
            os.rename(tmp, final)
            fsync_dir(self.root)
        return RollbackPoint(point_id, previous_version, for_version, created, final, backup.size)

    def rollback_points(self) -> list[RollbackPoint]:
        """The store's own points, oldest first."""
        return [
            RollbackPoint(pid, prev, for_v, created, self.root / name, size)
            for pid, prev, for_v, created, name, size in self._state.rollback_point_rows()
        ]

    def get_point(self, point_id: int) -> RollbackPoint | None:
        for p in self.rollback_points():
            if p.id == point_id:
                return p
        return None

    def is_own(self, point: RollbackPoint) -> bool:
        """True when ``point`` is one of this store's points (not a host manager's)."""
        mine = self.get_point(point.id)
        return mine is not None and mine.path == point.path

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

    def restore_point_for(self, target: str, current: str | None) -> RollbackPoint | None:
        """The point a rollback from ``current`` to ``target`` restores: the one taken when
        ``current`` replaced ``target``, else the newest taken while ``target`` was current."""
        return self.point_for(target, from_version=current) or self.point_for(target)

    def delete_point(self, point_id: int) -> None:
        point = self.get_point(point_id)
        with self._state.transaction():
            self._state.delete_rollback_point(point_id)
        if point is not None:
            remove_tree(point.path)

    def prune_points(self, keep: int, *, protect: set[int] | None = None) -> list[int]:
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
        """Remove half-written points (``.tmp-*``), rows whose directory is gone, and
        directories no row names (``manual-*`` backups are kept)."""
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                if entry.name.startswith(".tmp-"):
                    remove_tree(Path(entry.path))
        for p in self.rollback_points():
            if not p.path.is_dir():
                with self._state.transaction():
                    self._state.delete_rollback_point(p.id)
        known = {p.path.name for p in self.rollback_points()}
        for name in os.listdir(self.root):
            if name not in known and not name.startswith("manual-"):
                remove_tree(self.root / name)

    # -- state (sync) -------------------------------------------------------------------------

    def backup(self, dest: Path | None = None) -> StateBackup:
        """A consistent backup of ``data/`` in ``dest`` (default: a new dir under rollback/)."""
        if dest is None:
            dest = self._host.layout.rollback_point(f"manual-{secrets.token_hex(6)}")
        return backup_data_dir(self._host.layout.data_dir, dest)

    def restore(self, backup: StateBackup | RollbackPoint | Path) -> None:
        """Replace ``data/`` by a backup made with :meth:`backup` or a rollback point's."""
        if isinstance(backup, RollbackPoint):
            backup = backup.backup
        elif isinstance(backup, Path):
            backup = StateBackup.load(backup)
        restore_data_dir(backup, self._host.layout.data_dir)
