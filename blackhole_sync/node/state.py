"""The node's state database (``NODE/state.db``, SQLite).

One :class:`StateDB` per open node. It holds:

- ``journal``: one row per install, rollback or activation; the row's ``step`` is written
  before and after each step runs, so recovery knows whether to finish or undo (see
  journal.py). A rollback point made for an install is recorded here by id and path.
- ``history``: what happened, for ``node history``.
- ``versions``: per version its state (``installed`` / ``good`` / ``bad`` with a reason),
  whether its install committed, its update type, platform and arch, and the **start-failure
  counter** -- the one implementation of it: :meth:`StateDB.record_start_failure` is what both
  :meth:`NodeStore.record_start_failure` and :class:`~blackhole_sync.node.health.CrashLoopGuard`
  count with.
- ``rollback_points``: the store's own rollback points (their directories are in
  ``NODE/rollback/``, see rollback.py).
- ``seq_floors`` and ``votes``: per-publisher sequence floors and the newest vote per node.
- ``meta``: a small key/value table (policy state, last check, metrics).

Writes run in ``BEGIN IMMEDIATE`` transactions with ``synchronous=FULL``. A database opened
read-only refuses every write with :class:`~blackhole_sync.errors.InstallError`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from ..clock import utcnow
from ..documents import format_time
from ..errors import InstallError

__all__ = ["STATE_SCHEMA_VERSION", "StateDB"]

#: ``PRAGMA user_version`` of the state database this code writes.
STATE_SCHEMA_VERSION: Final = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    version TEXT,
    from_version TEXT,
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    preexisting INTEGER NOT NULL DEFAULT 0,
    rollback_point INTEGER,
    rollback_path TEXT,
    rollback_own INTEGER NOT NULL DEFAULT 1,
    restore_data INTEGER NOT NULL DEFAULT 1,
    action TEXT NOT NULL DEFAULT '',
    method TEXT,
    bytes_fetched INTEGER NOT NULL DEFAULT 0,
    platform TEXT,
    arch TEXT,
    update_type TEXT,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS history(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    action TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT,
    method TEXT,
    bytes_fetched INTEGER NOT NULL DEFAULT 0,
    duration_s REAL NOT NULL DEFAULT 0,
    error TEXT,
    note TEXT
);
CREATE TABLE IF NOT EXISTS versions(
    version TEXT PRIMARY KEY,
    installed_at TEXT,
    state TEXT NOT NULL DEFAULT 'installed',
    reason TEXT,
    start_failures INTEGER NOT NULL DEFAULT 0,
    update_type TEXT,
    platform TEXT,
    arch TEXT,
    committed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rollback_points(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    previous_version TEXT,
    for_version TEXT NOT NULL,
    created TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seq_floors(
    kind TEXT NOT NULL,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY(kind, node_id)
);
CREATE TABLE IF NOT EXISTS votes(
    proposal TEXT NOT NULL,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    support INTEGER NOT NULL,
    release_digest TEXT,
    received TEXT NOT NULL,
    document BLOB,
    PRIMARY KEY(proposal, node_id)
);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
"""

#: Columns added after schema 1, with their definitions (added to older databases on open).
_ADDED_COLUMNS: Final = {
    "journal": (
        ("rollback_path", "TEXT"),
        ("rollback_own", "INTEGER NOT NULL DEFAULT 1"),
    ),
    # ``error`` holds only failures; remarks on a step that succeeded go to ``note``
    "history": (("note", "TEXT"),),
}


def _now() -> str:
    return format_time(utcnow())


def _rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class StateDB:
    """The open state database of one node. Use :meth:`open` (or :meth:`initialise` first)."""

    def __init__(self, conn: sqlite3.Connection, *, read_only: bool) -> None:
        self.conn = conn
        self.read_only = read_only
        self._closed = False

    @staticmethod
    def initialise(path: Path) -> None:
        """Create a new state database file with the current schema."""
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.executescript(_SCHEMA + f"PRAGMA user_version = {STATE_SCHEMA_VERSION};")
        finally:
            conn.close()

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> StateDB:
        """Open ``path``; a writable open brings an older schema up to date.

        Raises :class:`sqlite3.OperationalError` when the file cannot be written.
        """
        if read_only:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            return cls(conn, read_only=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            state = cls(conn, read_only=False)
            state._upgrade()
        except BaseException:
            conn.close()
            raise
        return state

    def _upgrade(self) -> None:
        self.conn.executescript(_SCHEMA)
        with self.transaction():
            for table, columns in _ADDED_COLUMNS.items():
                have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
                for name, definition in columns:
                    if name not in have:
                        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
            self.conn.execute(f"PRAGMA user_version = {STATE_SCHEMA_VERSION}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.conn.close()

    def check_writable(self) -> None:
        """Raise unless writes are allowed (the database is open and not read-only)."""
        if self._closed:
            raise RuntimeError("the node's state database is closed")
        if self.read_only:
            raise InstallError("the node store was opened read-only")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on exit, rolled back on an error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- journal ------------------------------------------------------------------------------

    def journal(self, jid: int) -> dict[str, Any]:
        """Journal row ``jid`` as a dict of its columns."""
        return _rows(self.conn.execute("SELECT * FROM journal WHERE id=?", (jid,)))[0]

    def active_operation(self) -> dict[str, Any] | None:
        """The journaled operation still in progress (only between open and recovery)."""
        row = self.conn.execute("SELECT id FROM journal WHERE state='active'").fetchone()
        return None if row is None else self.journal(row[0])

    def begin(self, op: str, version: str | None, from_version: str | None, **fields: Any) -> int:
        """Start journaled operation ``op`` at step ``begin``; its id. One at a time."""
        self.check_writable()
        if self.active_operation() is not None:
            raise InstallError("another operation is in progress on this node")
        now = time.time()
        cols = ["op", "version", "from_version", "step", "state", "started", "updated", *fields]
        vals = [op, version, from_version, "begin", "active", now, now, *fields.values()]
        with self.transaction():
            cur = self.conn.execute(
                f"INSERT INTO journal({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",  # noqa: S608 - fixed column names
                vals,
            )
        return int(cur.lastrowid or 0)

    def step(self, jid: int, step: str, **fields: Any) -> None:
        """Record that operation ``jid`` reached ``step`` (inside the caller's transaction)."""
        sets = ", ".join(f"{k}=?" for k in ("step", "updated", *fields))
        self.conn.execute(
            f"UPDATE journal SET {sets} WHERE id=?",  # noqa: S608 - fixed column names
            (step, time.time(), *fields.values(), jid),
        )

    def set_step(self, jid: int, step: str, **fields: Any) -> None:
        """:meth:`step` in a transaction of its own (durable when this returns)."""
        with self.transaction():
            self.step(jid, step, **fields)

    def end_operation(self, jid: int, state: str, error: str | None = None) -> None:
        """Close operation ``jid`` as ``done`` or ``undone`` (inside the caller's transaction)."""
        self.conn.execute(
            "UPDATE journal SET state=?, updated=?, error=? WHERE id=?",
            (state, time.time(), error, jid),
        )

    def turn_into_rollback(self, jid: int, reason: str) -> None:
        """Install ``jid`` failed after its switch: the same row now journals the way back."""
        row = self.journal(jid)
        self.conn.execute(
            "UPDATE journal SET op='rollback', action='failed', version=?, from_version=?,"
            " step='rb.begin', error=?, updated=? WHERE id=?",
            (row["from_version"], row["version"], reason, time.time(), jid),
        )

    # -- history ------------------------------------------------------------------------------

    def add_history(
        self,
        action: str,
        from_version: str | None = None,
        to_version: str | None = None,
        *,
        method: str | None = None,
        bytes_fetched: int = 0,
        duration_s: float = 0.0,
        error: str | None = None,
        when: str | None = None,
        note: str | None = None,
    ) -> None:
        """Record a step: ``error`` only when it failed, ``note`` for a remark on one that
        succeeded (``node history`` shows both)."""
        self.check_writable()
        self.conn.execute(
            "INSERT INTO history(time, action, from_version, to_version, method, bytes_fetched,"
            " duration_s, error, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                when or _now(),
                action,
                from_version,
                to_version,
                method,
                bytes_fetched,
                round(duration_s, 6),
                error,
                note,
            ),
        )

    def history(self) -> list[dict[str, Any]]:
        # a database opened read-only may predate the note column
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(history)")}
        note = "note" if "note" in have else "NULL AS note"
        query = (
            "SELECT time, action, from_version, to_version, method, bytes_fetched,"  # noqa: S608 - fixed names
            f" duration_s, error, {note} FROM history ORDER BY id"
        )
        return _rows(self.conn.execute(query))

    def previous_of(self, version: str) -> str | None:
        """The version current before the last install of ``version`` (from history)."""
        row = self.conn.execute(
            "SELECT from_version FROM history WHERE action='install' AND to_version=?"
            " ORDER BY id DESC LIMIT 1",
            (version,),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    # -- versions -----------------------------------------------------------------------------

    def _ensure_version(self, version: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO versions(version, installed_at) VALUES (?, ?)",
            (version, _now()),
        )

    def committed_versions(self) -> list[tuple[str, str | None, str, str | None]]:
        """``(version, installed_at, state, update_type)`` of every committed install."""
        return [
            (str(v), at, str(state), utype)
            for v, at, state, utype in self.conn.execute(
                "SELECT version, installed_at, state, update_type FROM versions WHERE committed=1"
            )
        ]

    def commit_version(
        self, version: str, *, update_type: str | None, platform: str | None, arch: str | None
    ) -> None:
        """``version`` is installed (inside the caller's transaction): clears a bad mark and
        the start-failure count."""
        self._ensure_version(version)
        self.conn.execute(
            "UPDATE versions SET installed_at=?, state=CASE WHEN state='bad' THEN 'installed'"
            " ELSE state END, reason=NULL, start_failures=0, update_type=?, platform=?, arch=?,"
            " committed=1 WHERE version=?",
            (_now(), update_type, platform, arch, version),
        )

    def forget_version(self, version: str) -> None:
        """``version``'s tree was pruned: keep only a bad mark (inside the caller's transaction)."""
        self.conn.execute(
            "UPDATE versions SET committed=0 WHERE version=? AND state='bad'", (version,)
        )
        self.conn.execute("DELETE FROM versions WHERE version=? AND state!='bad'", (version,))

    def platform_arch(self, version: str) -> tuple[str, str] | None:
        """The platform and arch ``version`` was installed for, when recorded."""
        row = self.conn.execute(
            "SELECT platform, arch FROM versions WHERE version=?", (version,)
        ).fetchone()
        return (str(row[0]), str(row[1])) if row and row[0] and row[1] else None

    def mark_bad(
        self,
        version: str,
        reason: str,
        *,
        details: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        """Never install or start ``version`` automatically again.

        ``details`` (update type, platform, arch) also records the version as committed: a
        version that was switched to and failed stays listed, marked bad.
        """
        self.check_writable()
        with self.transaction():
            self.mark_bad_in_transaction(version, reason, details=details)

    def mark_bad_in_transaction(
        self,
        version: str,
        reason: str,
        *,
        details: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        self._ensure_version(version)
        if details is None:
            self.conn.execute(
                "UPDATE versions SET state='bad', reason=? WHERE version=?", (reason, version)
            )
        else:
            utype, platform, arch = details
            self.conn.execute(
                "UPDATE versions SET state='bad', reason=?, platform=?, arch=?, update_type=?,"
                " committed=1 WHERE version=?",
                (reason, platform, arch, utype, version),
            )

    def mark_good(self, version: str) -> None:
        """``version`` passed its health window: clear its start failures."""
        self.check_writable()
        with self.transaction():
            self._ensure_version(version)
            self.conn.execute(
                "UPDATE versions SET state='good', reason=NULL, start_failures=0 WHERE version=?",
                (version,),
            )

    def version_state(self, version: str) -> str | None:
        """The recorded state of ``version`` ("installed", "good", "bad"), None if unknown."""
        row = self.conn.execute("SELECT state FROM versions WHERE version=?", (version,)).fetchone()
        return None if row is None else str(row[0])

    def is_bad(self, version: str) -> bool:
        return self.version_state(version) == "bad"

    def bad_reason(self, version: str) -> str | None:
        row = self.conn.execute(
            "SELECT reason FROM versions WHERE version=? AND state='bad'", (version,)
        ).fetchone()
        return None if row is None else str(row[0])

    def bad_versions(self) -> list[str]:
        return [
            str(r[0]) for r in self.conn.execute("SELECT version FROM versions WHERE state='bad'")
        ]

    # -- the start-failure counter (the only one) ---------------------------------------------

    def record_start_failure(self, version: str) -> int:
        """Count one more consecutive failed start of ``version``; the count."""
        self.check_writable()
        with self.transaction():
            self._ensure_version(version)
            self.conn.execute(
                "UPDATE versions SET start_failures=start_failures+1 WHERE version=?", (version,)
            )
            row = self.conn.execute(
                "SELECT start_failures FROM versions WHERE version=?", (version,)
            ).fetchone()
        return int(row[0])

    def start_failures(self, version: str) -> int:
        """Consecutive failed starts of ``version`` since its last healthy start."""
        row = self.conn.execute(
            "SELECT start_failures FROM versions WHERE version=?", (version,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def reset_start_failures(self, version: str) -> None:
        """A healthy start of ``version``: its count goes back to 0 (its state is unchanged)."""
        self.check_writable()
        with self.transaction():
            self.conn.execute("UPDATE versions SET start_failures=0 WHERE version=?", (version,))

    # -- rollback point rows ------------------------------------------------------------------

    def add_rollback_point(
        self, previous_version: str | None, for_version: str, created: str, size: int
    ) -> int:
        """A new point row (inside the caller's transaction; the path is set once known)."""
        cur = self.conn.execute(
            "INSERT INTO rollback_points(previous_version, for_version, created, size, path)"
            " VALUES (?, ?, ?, ?, '')",
            (previous_version, for_version, created, size),
        )
        return int(cur.lastrowid or 0)

    def set_rollback_point_path(self, point_id: int, name: str) -> None:
        self.conn.execute("UPDATE rollback_points SET path=? WHERE id=?", (name, point_id))

    def rollback_point_rows(self) -> list[tuple[int, str | None, str, str, str, int]]:
        """``(id, previous_version, for_version, created, path name, size)``, oldest first."""
        return [
            (int(r[0]), r[1], str(r[2]), str(r[3]), str(r[4]), int(r[5]))
            for r in self.conn.execute(
                "SELECT id, previous_version, for_version, created, path, size"
                " FROM rollback_points ORDER BY id"
            )
        ]

    def delete_rollback_point(self, point_id: int) -> None:
        """Drop a point's row (inside the caller's transaction)."""
        self.conn.execute("DELETE FROM rollback_points WHERE id=?", (point_id,))

    # -- seq floors, votes, meta --------------------------------------------------------------

    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        row = self.conn.execute(
            "SELECT seq FROM seq_floors WHERE kind=? AND node_id=?", (kind, node_id)
        ).fetchone()
        return None if row is None else int(row[0])

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        """Raise the floor to ``seq`` (a floor never goes down)."""
        self.check_writable()
        self.conn.execute(
            "INSERT INTO seq_floors(kind, node_id, seq) VALUES (?, ?, ?) ON CONFLICT(kind, node_id)"
            " DO UPDATE SET seq=MAX(seq, excluded.seq)",
            (kind, node_id, seq),
        )

    def put_vote(
        self,
        proposal: str,
        node_id: str,
        seq: int,
        support: bool,
        release_digest: str | None = None,
        document: bytes | None = None,
    ) -> None:
        """Keep a node's newest vote on a proposal (an older seq does not replace a newer)."""
        self.check_writable()
        self.conn.execute(
            "INSERT INTO votes(proposal, node_id, seq, support, release_digest, received, document)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(proposal, node_id) DO UPDATE SET"
            " seq=excluded.seq, support=excluded.support, release_digest=excluded.release_digest,"
            " received=excluded.received, document=excluded.document WHERE excluded.seq > seq",
            (proposal, node_id, seq, int(support), release_digest, _now(), document),
        )

    def get_votes(self, proposal: str) -> list[dict[str, Any]]:
        return _rows(
            self.conn.execute(
                "SELECT node_id, seq, support, release_digest, received, document FROM votes"
                " WHERE proposal=? ORDER BY node_id",
                (proposal,),
            )
        )

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a key of the small key/value table."""
        self.check_writable()
        if value is None:
            self.conn.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self.conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
                " value=excluded.value",
                (key, value),
            )
