"""The node store: the directory a node owns (ARCHITECTURE.md section 4).

::

    NODE/current            symlink to versions/<version>; switched by renaming a temporary symlink
    NODE/versions/<v>/      installed trees, immutable; artifacts appear by name inside
    NODE/trust/             root.json and manifests/<v>.json (the received bytes)
    NODE/staging/           private (0700) downloads and patch outputs; emptied on recovery
    NODE/state.db           SQLite: install journal, history, versions, rollback points,
                            seq floors, votes, meta
    NODE/rollback/<id>/     rollback points (see rollback.py)
    NODE/data/              the node's application data: node.db and config.json
    NODE/config.toml        the operator's settings
    NODE/.lock              flock(2) held by the one process that has the store open

An install is one journaled transaction: verify the staged tree against the manifest, fsync,
rename it into ``versions/<v>/``, fsync the directory, create a rollback point (data backup),
run the sandbox hook, migrate (on copies), swap the migrated files into ``data/``, switch
``current`` (rename of a temporary symlink, fsync), run the restart and health hooks, commit.
Every step is recorded in the ``journal`` table before and after it runs, and each has a named
crash checkpoint (:data:`CHECKPOINTS`; ``BLACKHOLE_SYNC_CRASH_AT=<name>`` kills the process
there). :meth:`NodeStore.open` recovers: an install interrupted before the switch is undone
(data restored from the rollback point when it had been touched, the new tree removed); one
interrupted after the switch is completed (its health is then the agent's to confirm, see
:meth:`record_start_failure`); an interrupted rollback is finished. Staging is emptied.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import secrets
import sqlite3
import stat
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
from attrs import define, frozen

from .._fsutil import (
    CRASH_ENV,
    checkpoint,
    copy_file,
    fsync_dir,
    hash_file,
    remove_tree,
    tree_size,
    write_atomic,
)
from ..codecs import extract_archive
from ..documents import (
    MAX_SIZES,
    Artifact,
    ConfigChange,
    Envelope,
    Migration,
    ReleaseManifest,
    VersionInfo,
    check_safe_name,
    format_time,
    parse_version,
    sort_versions,
    strict_loads,
)
from ..errors import (
    FormatError,
    HealthCheckError,
    InstallError,
    InsufficientSpaceError,
    LengthOrHashMismatchError,
    MigrationError,
    NodeLockedError,
    NoSuchVersionError,
    SandboxError,
    UnsafePathError,
)
from .migrations import ConfigResult, SchemaMigrator, apply_config_changes, config_sidecars
from .rollback import RollbackManager, RollbackPoint, recover_data_dir, restore_data_dir

__all__ = [
    "CHECKPOINTS",
    "CRASH_ENV",
    "DEFAULT_RESERVE",
    "InstallHooks",
    "InstallResult",
    "NodeStore",
    "checkpoint",
    "default_arch",
]

#: Free space kept in reserve beyond what an install needs (bytes).
DEFAULT_RESERVE = 64 * 1024 * 1024

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
    error TEXT
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
PRAGMA user_version = 1;
"""

# Install steps in order; recovery undoes those before the switch and completes the rest.
_BEFORE_SWITCH = ("verify", "placing", "placed", "backed_up", "sandboxed", "migrating", "migrated")
_DATA_TOUCHED = ("swapping", "swapped", "switching")
_AFTER_SWITCH = ("switched", "restarted", "healthy")


def default_arch() -> str:
    """This machine's architecture as manifests name it (``uname -m``: x86_64, aarch64...)."""
    return os.uname().machine.lower()


@define
class InstallHooks:
    """Optional async callables the install calls (see :meth:`NodeStore.install`).

    ``sandbox(tree, data_dir, manifest)`` runs before the switch and raises SandboxError;
    ``restart(version)`` after the switch; ``health(version, manifest)`` raises
    HealthCheckError; ``progress(step)`` is told each step's name.
    """

    sandbox: Callable[[Path, Path, ReleaseManifest], Awaitable[None]] | None = None
    health: Callable[[str, ReleaseManifest], Awaitable[None]] | None = None
    restart: Callable[[str], Awaitable[None]] | None = None
    progress: Callable[[str], Awaitable[None]] | None = None


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


def _now() -> str:
    return format_time(_dt.datetime.now(_dt.UTC))


def _parse_manifest_bytes(data: bytes) -> ReleaseManifest:
    """The manifest inside stored bytes: a signed envelope, or a bare ``signed`` object."""
    obj = strict_loads(data, max_size=MAX_SIZES["release"])
    if isinstance(obj, dict) and "signed" in obj:
        return Envelope.from_bytes(data, expected_type="release").parse(ReleaseManifest.from_dict)
    return ReleaseManifest.from_dict(obj)


class NodeStore:
    """An open node directory, holding its exclusive lock. Use :meth:`create` or :meth:`open`."""

    def __init__(
        self,
        path: Path,
        lock_fd: int | None,
        db: sqlite3.Connection,
        *,
        reserve_bytes: int,
        app_db: str,
        network_config: str,
        read_only: bool,
    ) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.db = db
        self.reserve_bytes = reserve_bytes
        self.read_only = read_only
        self.app_db_path = self.data_dir / app_db
        self.network_config_path = self.data_dir / network_config
        self.rollbacks = RollbackManager(self)
        self._closed = False

    # -- layout -------------------------------------------------------------------------------

    @property
    def versions_dir(self) -> Path:
        return self.path / "versions"

    @property
    def staging_dir(self) -> Path:
        return self.path / "staging"

    @property
    def trust_dir(self) -> Path:
        return self.path / "trust"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / parse_version(version)

    def manifest_path(self, version: str) -> Path:
        return self.trust_dir / "manifests" / f"{parse_version(version)}.json"

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path | str, *, root_bytes: bytes, config_text: str, **open_kwargs: Any
    ) -> NodeStore:
        """Make a new node directory (refusing a non-empty one) and open it."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} exists and is not an empty directory")
        path.mkdir(parents=True, exist_ok=True)
        for name, mode in (
            ("versions", 0o755),
            ("trust", 0o755),
            ("trust/manifests", 0o755),
            ("staging", 0o700),
            ("rollback", 0o700),
            ("data", 0o755),
        ):
            (path / name).mkdir(mode=mode)
            os.chmod(path / name, mode)
        write_atomic(path / "trust" / "root.json", root_bytes, mode=0o644)
        write_atomic(path / "config.toml", config_text.encode(), mode=0o600)
        db = sqlite3.connect(path / "state.db", isolation_level=None)
        try:
            db.executescript(_SCHEMA)
        finally:
            db.close()
        fsync_dir(path)
        return cls.open(path, **open_kwargs)

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        lock_timeout: float = 5.0,
        reserve_bytes: int = DEFAULT_RESERVE,
        app_db: str = "node.db",
        network_config: str = "config.json",
        read_only: bool = False,
    ) -> NodeStore:
        """Open a node: take its lock (waiting up to ``lock_timeout``), then recover.

        ``read_only=True`` takes no lock, writes nothing and skips recovery (for status on a
        read-only file system); every mutating method then raises :class:`InstallError`.
        """
        path = Path(path)
        if not (path / "state.db").is_file() or not (path / "versions").is_dir():
            raise NoSuchVersionError(f"{path} is not a node directory")
        check_safe_name(app_db, "app_db")
        check_safe_name(network_config, "network_config")
        if read_only:
            db = sqlite3.connect(
                f"file:{path / 'state.db'}?mode=ro", uri=True, check_same_thread=False
            )
            return cls(
                path,
                None,
                db,
                reserve_bytes=reserve_bytes,
                app_db=app_db,
                network_config=network_config,
                read_only=True,
            )
        try:
            lock_fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise InstallError(f"cannot open the node's lock file (read-only?): {exc}") from exc
        try:
            deadline = time.monotonic() + lock_timeout
            while True:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise NodeLockedError(f"another process holds the lock on {path}") from None
                    time.sleep(0.05)
            db = sqlite3.connect(path / "state.db", isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=FULL")
            store = cls(
                path,
                lock_fd,
                db,
                reserve_bytes=reserve_bytes,
                app_db=app_db,
                network_config=network_config,
                read_only=False,
            )
        except BaseException:
            os.close(lock_fd)
            raise
        try:
            store.db.executescript(_SCHEMA)
            store.recover()
        except sqlite3.OperationalError as exc:
            store.close()
            raise InstallError(f"node state is not writable: {exc}") from exc
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _writable(self) -> None:
        if self._closed:
            raise RuntimeError("the node store is closed")
        if self.read_only:
            raise InstallError("the node store was opened read-only")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- versions -----------------------------------------------------------------------------

    def current_version(self) -> str | None:
        try:
            target = os.readlink(self.path / "current")
        except FileNotFoundError:
            return None
        return os.path.basename(target.rstrip("/")) or None

    def installed_versions(self) -> list[VersionInfo]:
        """Committed versions whose tree is present, ascending by semver."""
        current = self.current_version()
        rows = self.db.execute(
            "SELECT version, installed_at, state, update_type FROM versions WHERE committed=1"
        ).fetchall()
        infos = {}
        for version, installed_at, state, utype in rows:
            if not (self.versions_dir / version).is_dir():
                continue
            shown = "current" if version == current and state != "bad" else state
            infos[version] = VersionInfo(version, installed_at, shown, utype or "binary")
        return [infos[v] for v in sort_versions(infos)]

    def _is_installed(self, version: str) -> bool:
        return any(i.version == version for i in self.installed_versions())

    def stored_manifest_bytes(self, version: str) -> bytes:
        try:
            return self.manifest_path(version).read_bytes()
        except FileNotFoundError as exc:
            raise NoSuchVersionError(f"no stored manifest for {version}") from exc

    def stored_manifest(self, version: str) -> ReleaseManifest:
        return _parse_manifest_bytes(self.stored_manifest_bytes(version))

    # -- staging ------------------------------------------------------------------------------

    def new_staging_dir(self) -> Path:
        """A fresh private (0700) directory under staging/ for one install's files."""
        self._writable()
        path = self.staging_dir / f"s-{secrets.token_hex(8)}"
        os.mkdir(path, 0o700)
        return path

    def _check_in_staging(self, tree: Path) -> None:
        if Path(os.path.realpath(tree)).parent != Path(os.path.realpath(self.staging_dir)):
            raise UnsafePathError(f"{tree} is not a directory made by new_staging_dir()")

    def stage_file(self, src: Path, artifact: Artifact, tree: Path) -> None:
        """Move a verified blob file into ``tree/<artifact.name>`` with the manifest's mode."""
        self._writable()
        self._check_in_staging(tree)
        name = check_safe_name(artifact.name, "artifact name")
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{src} is not a regular file")
        if st.st_size != artifact.length:
            raise LengthOrHashMismatchError(
                f"{artifact.name}: staged file is {st.st_size} bytes, expected {artifact.length}"
            )
        dest = tree / name
        if os.path.lexists(dest):
            raise UnsafePathError(f"{artifact.name}: already staged")
        try:
            try:
                os.link(src, dest)  # never replaces; same file system
            except OSError:
                copy_file(src, dest, mode=0o600)
            os.unlink(src)
            os.chmod(dest, artifact.mode)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(dest)
            raise InstallError(f"staging {artifact.name} failed: {exc}") from exc

    def stage_archive(self, src: Path, artifact: Artifact, tree: Path) -> None:
        """Safely extract an archive marked to unpack into ``tree`` (members at its root)."""
        self._writable()
        self._check_in_staging(tree)
        if artifact.unpack is None:
            raise FormatError(f"{artifact.name} is not marked to unpack")
        scratch = self.staging_dir / f"x-{secrets.token_hex(8)}"
        try:
            extract_archive(src, artifact.unpack, scratch)
        except OSError as exc:
            raise InstallError(f"extracting {artifact.name} failed: {exc}") from exc
        try:
            tops = sorted(os.listdir(scratch))
            for top in tops:
                if os.path.lexists(tree / top):
                    raise UnsafePathError(f"{artifact.name}: {top!r} collides with staged files")
            for top in tops:
                os.rename(scratch / top, tree / top)
        finally:
            remove_tree(scratch)

    # -- space --------------------------------------------------------------------------------

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def check_space(self, need: int) -> None:
        """Raise :class:`InsufficientSpaceError` when free space < ``need`` + the reserve."""
        free = self.free_bytes()
        if free < need + self.reserve_bytes:
            raise InsufficientSpaceError(
                f"{free} bytes free, need {need} plus a reserve of {self.reserve_bytes}"
            )

    def required_space(
        self, manifest: ReleaseManifest, *, platform: str = "linux", arch: str | None = None
    ) -> int:
        """Bytes an install of ``manifest`` needs: artifacts, data backup, migration copies."""
        arts = manifest.artifacts_for(platform, arch or default_arch())
        total = sum(a.length for a in arts)
        total += sum(
            sum(m.length or 0 for m in a.unpack.members) for a in arts if a.unpack is not None
        )
        return total + self._install_overhead(manifest)

    def _install_overhead(self, manifest: ReleaseManifest) -> int:
        need = tree_size(self.data_dir) + 1024 * 1024
        if manifest.migrations and self.app_db_path.exists():
            need += self.app_db_path.stat().st_size
        if manifest.config_changes and self.network_config_path.exists():
            need += self.network_config_path.stat().st_size * 2
        return need

    # -- journal ------------------------------------------------------------------------------

    def _journal(self, jid: int) -> dict[str, Any]:
        cur = self.db.execute("SELECT * FROM journal WHERE id=?", (jid,))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        return dict(zip(names, row, strict=True))

    def _step(self, jid: int, step: str, **fields: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in ("step", "updated", *fields))
        self.db.execute(
            f"UPDATE journal SET {sets} WHERE id=?",  # noqa: S608 - fixed column names
            (step, time.time(), *fields.values(), jid),
        )

    def active_operation(self) -> dict[str, Any] | None:
        """The journaled operation still in progress (only between open and recovery)."""
        row = self.db.execute("SELECT id FROM journal WHERE state='active'").fetchone()
        return None if row is None else self._journal(row[0])

    def _begin(self, op: str, version: str | None, from_version: str | None, **fields: Any) -> int:
        if self.active_operation() is not None:
            raise InstallError("another operation is in progress on this node")
        now = time.time()
        cols = ["op", "version", "from_version", "step", "state", "started", "updated", *fields]
        vals = [op, version, from_version, "begin", "active", now, now, *fields.values()]
        with self.transaction():
            cur = self.db.execute(
                f"INSERT INTO journal({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",  # noqa: S608
                vals,
            )
        return int(cur.lastrowid or 0)

    # -- history and version states -------------------------------------------------------------

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
    ) -> None:
        self._writable()
        self.db.execute(
            "INSERT INTO history(time, action, from_version, to_version, method, bytes_fetched,"
            " duration_s, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                when or _now(),
                action,
                from_version,
                to_version,
                method,
                bytes_fetched,
                round(duration_s, 6),
                error,
            ),
        )

    def history(self) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT time, action, from_version, to_version, method, bytes_fetched, duration_s,"
            " error FROM history ORDER BY id"
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _ensure_version_row(self, version: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO versions(version, installed_at) VALUES (?, ?)",
            (version, _now()),
        )

    def mark_bad(self, version: str, reason: str) -> None:
        """Never install or start ``version`` automatically again."""
        self._writable()
        with self.transaction():
            self._ensure_version_row(version)
            self.db.execute(
                "UPDATE versions SET state='bad', reason=? WHERE version=?", (reason, version)
            )

    def is_bad(self, version: str) -> bool:
        row = self.db.execute("SELECT state FROM versions WHERE version=?", (version,)).fetchone()
        return row is not None and row[0] == "bad"

    def bad_reason(self, version: str) -> str | None:
        row = self.db.execute(
            "SELECT reason FROM versions WHERE version=? AND state='bad'", (version,)
        ).fetchone()
        return None if row is None else str(row[0])

    def version_state(self, version: str) -> str | None:
        """The recorded state of ``version`` ("installed", "good", "bad"), None if unknown."""
        row = self.db.execute("SELECT state FROM versions WHERE version=?", (version,)).fetchone()
        return None if row is None else str(row[0])

    def mark_good(self, version: str) -> None:
        """``version`` passed its health window: clear its start failures."""
        self._writable()
        with self.transaction():
            self._ensure_version_row(version)
            self.db.execute(
                "UPDATE versions SET state='good', reason=NULL, start_failures=0 WHERE version=?",
                (version,),
            )

    def record_start_failure(self, version: str) -> int:
        """Count one more consecutive failed start of ``version``; the count."""
        self._writable()
        with self.transaction():
            self._ensure_version_row(version)
            self.db.execute(
                "UPDATE versions SET start_failures=start_failures+1 WHERE version=?", (version,)
            )
            row = self.db.execute(
                "SELECT start_failures FROM versions WHERE version=?", (version,)
            ).fetchone()
        return int(row[0])

    # -- seq floors, votes, meta ------------------------------------------------------------------

    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        row = self.db.execute(
            "SELECT seq FROM seq_floors WHERE kind=? AND node_id=?", (kind, node_id)
        ).fetchone()
        return None if row is None else int(row[0])

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        """Raise the floor to ``seq`` (a floor never goes down)."""
        self._writable()
        self.db.execute(
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
        self._writable()
        self.db.execute(
            "INSERT INTO votes(proposal, node_id, seq, support, release_digest, received, document)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(proposal, node_id) DO UPDATE SET"
            " seq=excluded.seq, support=excluded.support, release_digest=excluded.release_digest,"
            " received=excluded.received, document=excluded.document WHERE excluded.seq > seq",
            (proposal, node_id, seq, int(support), release_digest, _now(), document),
        )

    def get_votes(self, proposal: str) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT node_id, seq, support, release_digest, received, document FROM votes"
            " WHERE proposal=? ORDER BY node_id",
            (proposal,),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a key of the small key/value table."""
        self._writable()
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self.db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
                " value=excluded.value",
                (key, value),
            )

    # -- tree verification ------------------------------------------------------------------------

    @staticmethod
    def _expected(
        artifacts: Sequence[Artifact],
    ) -> dict[str, tuple[str, int, int | None, str | None]]:
        """path -> (type, mode, length, sha256) of what a tree must hold."""
        want: dict[str, tuple[str, int, int | None, str | None]] = {}
        for a in artifacts:
            if a.unpack is None:
                want[a.name] = ("file", a.mode, a.length, a.sha256)
            else:
                for m in a.unpack.members:
                    want[m.path] = (m.type, m.mode, m.length, m.sha256)
        return want

    @classmethod
    def check_tree(
        cls, tree: Path, artifacts: Sequence[Artifact], *, fsync: bool = False
    ) -> list[str]:
        """Problems of ``tree`` against the artifacts (empty = exact match). Re-hashes files."""
        want = cls._expected(artifacts)
        problems: list[str] = []
        implicit: set[str] = set()
        for path in want:
            parts = path.split("/")
            implicit.update("/".join(parts[:i]) for i in range(1, len(parts)))
        seen: set[str] = set()
        for root, dirs, files in os.walk(tree):
            for name in [*dirs, *files]:
                full = os.path.join(root, name)
                rel = os.path.relpath(full, tree)
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    problems.append(f"{rel}: unexpected symbolic link")
                    continue
                spec = want.get(rel)
                if spec is None:
                    if not (stat.S_ISDIR(st.st_mode) and rel in implicit):
                        problems.append(f"{rel}: not in the manifest")
                    continue
                seen.add(rel)
                kind, mode, length, sha = spec
                if stat.S_IMODE(st.st_mode) != mode:
                    problems.append(
                        f"{rel}: mode {oct(stat.S_IMODE(st.st_mode))}, expected {oct(mode)}"
                    )
                if kind == "dir":
                    if not stat.S_ISDIR(st.st_mode):
                        problems.append(f"{rel}: expected a directory")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    problems.append(f"{rel}: expected a regular file")
                    continue
                if st.st_size != length:
                    problems.append(f"{rel}: {st.st_size} bytes, expected {length}")
                    continue
                digest, _n = hash_file(Path(full), fsync=fsync)
                if digest != sha:
                    problems.append(f"{rel}: sha256 mismatch")
            if fsync:
                fsync_dir(Path(root))
        for missing in sorted(set(want) - seen):
            problems.append(f"{missing}: missing")
        return problems

    def verify_installed(self, version: str | None = None) -> list[str]:
        """Re-hash an installed tree (default: the current one) against its stored manifest."""
        version = version or self.current_version()
        if version is None:
            return []
        tree = self.versions_dir / version
        if not tree.is_dir():
            return [f"{version}: not installed"]
        try:
            manifest = self.stored_manifest(version)
        except (NoSuchVersionError, FormatError) as exc:
            return [f"{version}: stored manifest unusable: {exc}"]
        row = self.db.execute(
            "SELECT platform, arch FROM versions WHERE version=?", (version,)
        ).fetchone()
        platform, arch = row if row and row[0] else ("linux", default_arch())
        return [
            f"{version}/{p}" for p in self.check_tree(tree, manifest.artifacts_for(platform, arch))
        ]

    # -- install ------------------------------------------------------------------------------------

    def _node_attributes(self) -> tuple[str | None, str | None]:
        try:
            conf = tomllib.loads(self.config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return None, None
        node = conf.get("node", conf)
        region = node.get("region") if isinstance(node, dict) else None
        ntype = node.get("node_type") if isinstance(node, dict) else None
        return (
            region if isinstance(region, str) else None,
            ntype if isinstance(ntype, str) else None,
        )

    async def install(
        self,
        manifest: ReleaseManifest,
        manifest_bytes: bytes,
        tree: Path,
        *,
        platform: str = "linux",
        arch: str | None = None,
        hooks: InstallHooks | None = None,
        method: str = "full",
        bytes_fetched: int = 0,
        extra_migrations: Sequence[Migration] = (),
        extra_config_changes: Sequence[ConfigChange] = (),
        region: str | None = None,
        node_type: str | None = None,
        now: _dt.datetime | None = None,
    ) -> InstallResult:
        """Install the staged ``tree`` as ``manifest.version`` (the module docstring's order).

        Raises LengthOrHashMismatchError (tree does not match; nothing changed), SandboxError
        (self-test failed; nothing switched; the version is marked bad), MigrationError
        (nothing switched), HealthCheckError (switched, failed, rolled back, marked bad),
        InsufficientSpaceError, or InstallError for I/O failures (the node is left on the old
        version, or recovery on the next open finishes the job).
        """
        self._writable()
        hooks = hooks or InstallHooks()
        arch = arch or default_arch()
        started = time.monotonic()
        version = parse_version(manifest.version)
        previous = self.current_version()
        artifacts = manifest.artifacts_for(platform, arch)
        if _parse_manifest_bytes(manifest_bytes) != manifest:
            raise FormatError("manifest_bytes do not hold this manifest")

        async def progress(step: str) -> None:
            if hooks.progress is not None:
                await hooks.progress(step)

        dest = self.versions_dir / version
        preexisting = dest.is_dir() and self._is_installed(version)
        if preexisting and self.check_tree(dest, artifacts):
            raise InstallError(f"installed tree of {version} is damaged; prune it first")
        if version == previous and preexisting:
            with contextlib.suppress(OSError):
                remove_tree(tree)
            return InstallResult(version, previous, False, method, 0, 0.0)
        self.check_space(self._install_overhead(manifest))
        self._check_in_staging(tree)
        jid = self._begin(
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
        try:
            await progress("verify")
            await anyio.to_thread.run_sync(
                self._prepare, jid, manifest, manifest_bytes, tree, artifacts, preexisting
            )
            point_row = self._journal(jid)["rollback_point"]
            if hooks.sandbox is not None:
                await progress("sandbox")
                await hooks.sandbox(dest, self.data_dir, manifest)
            with self.transaction():
                self._step(jid, "sandboxed")
            checkpoint("install.sandboxed")
            await progress("migrate")
            if region is None and node_type is None:
                region, node_type = self._node_attributes()
            schema, config = await anyio.to_thread.run_sync(
                lambda: self._migrate(
                    jid,
                    manifest,
                    extra_migrations,
                    extra_config_changes,
                    region,
                    node_type,
                    now or _dt.datetime.now(_dt.UTC),
                )
            )
            await progress("switch")
            with self.transaction():
                self._step(jid, "switching")
            self._switch(version, "install")
            switched = True
            with self.transaction():
                self._step(jid, "switched")
            checkpoint("install.switched")
            try:
                if hooks.restart is not None:
                    await progress("restart")
                    try:
                        await hooks.restart(version)
                    except HealthCheckError:
                        raise
                    except Exception as exc:
                        raise HealthCheckError(f"restart of {version} failed: {exc}") from exc
                with self.transaction():
                    self._step(jid, "restarted")
                checkpoint("install.restarted")
                if hooks.health is not None:
                    await progress("health")
                    await hooks.health(version, manifest)
                with self.transaction():
                    self._step(jid, "healthy")
                checkpoint("install.health_checked")
            except HealthCheckError as exc:
                self._health_rollback(jid, str(exc))
                raise
            except BaseException:
                self._health_rollback(jid, "interrupted before the health check passed")
                raise
            duration = time.monotonic() - started
            self._commit_install(jid, duration)
            checkpoint("install.committed")
            await progress("done")
            return InstallResult(
                version, previous, True, method, bytes_fetched, duration, point_row, schema, config
            )
        except SandboxError as exc:
            self._undo_install(jid, f"sandbox: {exc}")
            self.mark_bad(version, f"sandbox: {exc}")
            raise
        except (HealthCheckError, MigrationError, LengthOrHashMismatchError, FormatError):
            if not switched:
                self._undo_install_quietly(jid, "refused")
            raise
        except OSError as exc:
            if not switched:
                self._undo_install_quietly(jid, f"I/O error: {exc}")
            raise InstallError(f"install of {version} failed: {exc}") from exc
        except BaseException:
            if not switched:
                self._undo_install_quietly(jid, "interrupted")
            raise

    def _prepare(
        self,
        jid: int,
        manifest: ReleaseManifest,
        manifest_bytes: bytes,
        tree: Path,
        artifacts: Sequence[Artifact],
        preexisting: bool,
    ) -> None:
        version = manifest.version
        with self.transaction():
            self._step(jid, "verify")
        problems = self.check_tree(tree, artifacts, fsync=True)
        if problems:
            remove_tree(tree)
            raise LengthOrHashMismatchError(
                f"staged tree of {version} does not match its manifest: {'; '.join(problems[:5])}"
            )
        checkpoint("install.verified")
        dest = self.versions_dir / version
        with self.transaction():
            self._step(jid, "placing")
        write_atomic(self.manifest_path(version), manifest_bytes, mode=0o644)
        checkpoint("install.placing")
        if preexisting:
            remove_tree(tree)
        else:
            if os.path.lexists(dest):  # an uncommitted leftover
                self._discard(dest)
            os.chmod(tree, 0o755)  # noqa: S103 - installed trees are world-readable
            os.rename(tree, dest)
            fsync_dir(self.versions_dir)
        with self.transaction():
            self._step(jid, "placed")
        checkpoint("install.placed")
        previous = self._journal(jid)["from_version"]
        point = self.rollbacks.create_rollback_point(previous, version)
        with self.transaction():
            self._step(jid, "backed_up", rollback_point=point.id)
        checkpoint("install.backed_up")

    def _migrate(
        self,
        jid: int,
        manifest: ReleaseManifest,
        extra: Sequence[Migration],
        extra_changes: Sequence[ConfigChange],
        region: str | None,
        node_type: str | None,
        now: _dt.datetime,
    ) -> tuple[int | None, ConfigResult | None]:
        with self.transaction():
            self._step(jid, "migrating")
        work = self.data_dir / f".migrate-{jid}"
        remove_tree(work)
        os.mkdir(work, 0o700)
        migrator = SchemaMigrator(self.app_db_path, [*manifest.migrations, *extra])
        chain = migrator.plan()
        schema: int | None = None
        if chain:
            schema = migrator.migrate_copy(work / self.app_db_path.name)
        config: ConfigResult | None = None
        pending, _history = config_sidecars(self.network_config_path)
        changes: tuple[ConfigChange, ...] = (*extra_changes, *manifest.config_changes)
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
        with self.transaction():
            self._step(jid, "migrated")
        checkpoint("install.migrated")
        # Swap the migrated files in. From here until the switch, recovery restores data/ from
        # the rollback point; after the switch it keeps the new data.
        with self.transaction():
            self._step(jid, "swapping")
        names = sorted(os.listdir(work))
        for i, name in enumerate(names):
            target = self.data_dir / name
            if name == self.app_db_path.name:
                for side in ("-wal", "-shm", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{target}{side}")
            os.replace(work / name, target)
            if i == 0:
                checkpoint("migrate.swapping")
        fsync_dir(self.data_dir)
        os.rmdir(work)
        with self.transaction():
            self._step(jid, "swapped")
        checkpoint("migrate.swapped")
        return schema, config

    def _switch(self, version: str | None, tag: str) -> None:
        """Point ``current`` at ``versions/<version>`` (or remove it) atomically and durably."""
        link = self.path / "current"
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            fsync_dir(self.path)
            return
        tmp = self.path / f".current.tmp-{secrets.token_hex(6)}"
        os.symlink(f"versions/{version}", tmp)
        try:
            checkpoint(f"{tag}.switch_prepared")
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(self.path)

    def _commit_install(self, jid: int, duration: float, *, note: str | None = None) -> None:
        row = self._journal(jid)
        version = row["version"]
        with self.transaction():
            self._ensure_version_row(version)
            self.db.execute(
                "UPDATE versions SET installed_at=?, state=CASE WHEN state='bad' THEN 'installed'"
                " ELSE state END, reason=NULL, start_failures=0, update_type=?, platform=?, arch=?,"
                " committed=1 WHERE version=?",
                (_now(), row["update_type"], row["platform"], row["arch"], version),
            )
            self.db.execute(
                "UPDATE journal SET state='done', updated=?, error=? WHERE id=?",
                (time.time(), note, jid),
            )
            self.add_history(
                "install",
                row["from_version"],
                version,
                method=row["method"],
                bytes_fetched=row["bytes_fetched"],
                duration_s=duration,
                error=note,
            )

    def _discard(self, path: Path) -> None:
        """Remove a tree: first renamed into staging (atomic), then deleted."""
        if not os.path.lexists(path):
            return
        trash = self.staging_dir / f"trash-{secrets.token_hex(8)}"
        os.rename(path, trash)
        fsync_dir(path.parent)
        remove_tree(trash)

    def _undo_install_quietly(self, jid: int, error: str) -> None:
        """Undo after a failure; if that fails too, recovery at the next open will."""
        with contextlib.suppress(OSError, sqlite3.Error):
            self._undo_install(jid, error)

    def _undo_install(self, jid: int, error: str) -> None:
        """Put the node back as it was before install ``jid`` (idempotent)."""
        row = self._journal(jid)
        version = row["version"]
        previous = row["from_version"]
        if row["step"] in _DATA_TOUCHED and row["rollback_point"] is not None:
            point = self.rollbacks.get_point(row["rollback_point"])
            if point is not None:
                restore_data_dir(point.backup, self.data_dir)
        if self.current_version() != previous:
            self._switch(previous, "undo")
        for entry in os.listdir(self.data_dir):
            if entry.startswith(".migrate-"):
                remove_tree(self.data_dir / entry)
        if not row["preexisting"]:
            self._discard(self.versions_dir / version)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.manifest_path(version))
        with self.transaction():
            self.db.execute(
                "UPDATE journal SET state='undone', updated=?, error=? WHERE id=?",
                (time.time(), error, jid),
            )
            if row["rollback_point"] is not None:
                self.db.execute("DELETE FROM rollback_points WHERE id=?", (row["rollback_point"],))
            self.add_history(
                "failed",
                previous,
                version,
                method=row["method"],
                bytes_fetched=row["bytes_fetched"],
                duration_s=time.time() - row["started"],
                error=error,
            )
        if row["rollback_point"] is not None:
            remove_tree(self.rollbacks.root / str(row["rollback_point"]))

    def _health_rollback(self, jid: int, reason: str) -> None:
        """The new version failed after the switch: mark it bad, roll back (journaled)."""
        row = self._journal(jid)
        with self.transaction():
            self._ensure_version_row(row["version"])
            self.db.execute(
                "UPDATE versions SET state='bad', reason=?, platform=?, arch=?, update_type=?,"
                " committed=1 WHERE version=?",
                (reason, row["platform"], row["arch"], row["update_type"], row["version"]),
            )
            self.db.execute(
                "UPDATE journal SET op='rollback', action='failed', version=?, from_version=?,"
                " step='rb.begin', error=?, updated=? WHERE id=?",
                (row["from_version"], row["version"], reason, time.time(), jid),
            )
        self._run_rollback(jid)

    # -- rollback -------------------------------------------------------------------------------

    def rollback_target(self) -> str:
        """The version current before the last install of the current one (from history)."""
        current = self.current_version()
        if current is None:
            raise NoSuchVersionError("no version is installed")
        row = self.db.execute(
            "SELECT from_version FROM history WHERE action='install' AND to_version=?"
            " ORDER BY id DESC LIMIT 1",
            (current,),
        ).fetchone()
        if row is None or row[0] is None:
            raise NoSuchVersionError(f"no version was current before {current}")
        target = str(row[0])
        if not self._is_installed(target):
            raise NoSuchVersionError(f"previous version {target} is no longer installed")
        return target

    def rollback(self, to_version: str | None = None, *, restore_data: bool = True) -> str:
        """Switch back to ``to_version`` (default: :meth:`rollback_target`); the version current.

        With ``restore_data`` the data backup taken when that version was last current is
        restored. Journaled: a crash is finished at the next open. Rolling back to the current
        version does nothing.
        """
        self._writable()
        target = parse_version(to_version) if to_version else self.rollback_target()
        current = self.current_version()
        if not self._is_installed(target):
            raise NoSuchVersionError(f"{target} is not installed")
        if target == current:
            return target
        point: RollbackPoint | None = None
        if restore_data:
            point = self.rollbacks.point_for(target, from_version=current) or (
                self.rollbacks.point_for(target)
            )
        jid = self._begin(
            "rollback",
            target,
            current,
            rollback_point=point.id if point else None,
            restore_data=int(restore_data and point is not None),
            action="rollback",
        )
        self._run_rollback(jid)
        return target

    def _run_rollback(self, jid: int) -> None:
        """Carry journaled rollback ``jid`` to its end from whatever step it reached."""
        row = self._journal(jid)
        started = row["started"]
        checkpoint("rollback.begin")
        if (
            row["restore_data"]
            and row["rollback_point"] is not None
            and row["step"] in ("rb.begin", "begin")
        ):
            point = self.rollbacks.get_point(row["rollback_point"])
            if point is not None:
                restore_data_dir(point.backup, self.data_dir)
            with self.transaction():
                self._step(jid, "rb.data_restored")
            checkpoint("rollback.data_restored")
        target = row["version"]
        if self.current_version() != target:
            self._switch(target, "rollback")
        with self.transaction():
            self._step(jid, "rb.switched")
        checkpoint("rollback.switched")
        with self.transaction():
            self.db.execute(
                "UPDATE journal SET state='done', updated=? WHERE id=?", (time.time(), jid)
            )
            note = None if row["restore_data"] else "data kept"
            error = row["error"] if row["action"] == "failed" else note
            failed = row["action"] == "failed"  # a health rollback: report what was tried
            self.add_history(
                row["action"] or "rollback",
                target if failed else row["from_version"],
                row["from_version"] if failed else target,
                duration_s=time.time() - started,
                error=error,
                method=row["method"],
                bytes_fetched=row["bytes_fetched"] or 0,
            )
        checkpoint("rollback.committed")

    # -- prune --------------------------------------------------------------------------------

    def prune(self, keep: int, *, keep_rollback_target: bool = True) -> list[str]:
        """Keep the ``keep`` newest versions plus the current one (and the rollback target,
        unless ``keep_rollback_target=False``: an operator's explicit ``node prune``)."""
        self._writable()
        if keep < 0:
            raise ValueError("keep must be >= 0")
        current = self.current_version()
        protected = {current} if current else set()
        if keep_rollback_target:
            with contextlib.suppress(NoSuchVersionError):
                protected.add(self.rollback_target())
        versions = [i.version for i in self.installed_versions()]
        good = [v for v in versions if not self.is_bad(v)]
        newest = set(sort_versions(good, reverse=True)[:keep])
        removed = [v for v in versions if v not in newest and v not in protected]
        for version in removed:
            self._discard(self.versions_dir / version)
            with self.transaction():
                self.db.execute(
                    "UPDATE versions SET committed=0 WHERE version=? AND state='bad'", (version,)
                )
                self.db.execute("DELETE FROM versions WHERE version=? AND state!='bad'", (version,))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.manifest_path(version))
        installed = {i.version for i in self.installed_versions()}
        keep_points: set[int] = set()
        for p in self.rollbacks.rollback_points():
            if p.previous_version is not None and p.previous_version not in installed:
                self.rollbacks.delete_point(p.id)
            elif p.previous_version in protected and p.for_version == current:
                keep_points.add(p.id)
        self.rollbacks.prune_old_rollback_points(max(keep, 1), protect=keep_points)
        if removed:
            with self.transaction():
                self.add_history("prune", current, current, error=f"removed {', '.join(removed)}")
        return removed

    # -- recovery -------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish or undo the interrupted operation, empty staging, remove leftovers."""
        self._writable()
        notes: list[str] = []
        recover_data_dir(self.data_dir)
        for entry in os.listdir(self.path):
            if entry.startswith(".current.tmp-"):
                os.unlink(self.path / entry)
        row = self.active_operation()
        if row is not None:
            jid = row["id"]
            step = row["step"]
            if row["op"] == "rollback":
                self._run_rollback(jid)
                notes.append(f"finished rollback to {row['version']}")
            elif step in _AFTER_SWITCH or (
                step == "switching" and self.current_version() == row["version"]
            ):
                self._commit_install(
                    jid,
                    time.time() - row["started"],
                    note=f"completed by recovery after {step}; health unconfirmed",
                )
                notes.append(f"completed install of {row['version']}")
            else:
                self._undo_install(jid, f"interrupted at step {step}; undone by recovery")
                notes.append(f"undid install of {row['version']}")
        # Staging is emptied; half-made rollback points and uncommitted trees go.
        os.chmod(self.staging_dir, 0o700)
        for entry in os.listdir(self.staging_dir):
            remove_tree(self.staging_dir / entry)
        for entry in os.listdir(self.data_dir):
            if entry.startswith(".migrate-"):
                remove_tree(self.data_dir / entry)
        self.rollbacks.cleanup_temporary()
        known_points = {p.path.name for p in self.rollbacks.rollback_points()}
        for entry in os.listdir(self.rollbacks.root):
            if entry not in known_points and not entry.startswith("manual-"):
                remove_tree(self.rollbacks.root / entry)
        committed = {
            r[0] for r in self.db.execute("SELECT version FROM versions WHERE committed=1")
        }
        current = self.current_version()
        for entry in os.listdir(self.versions_dir):
            if entry not in committed and entry != current:
                self._discard(self.versions_dir / entry)
                notes.append(f"removed uncommitted tree {entry}")
        return notes

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "current_version": self.current_version(),
            "installed_versions": [i.version for i in self.installed_versions()],
            "bad_versions": [
                r[0] for r in self.db.execute("SELECT version FROM versions WHERE state='bad'")
            ],
            "free_bytes": self.free_bytes(),
        }
