"""The node store: an open node directory and its transactions (ARCHITECTURE.md section 4).

:class:`NodeStore` holds the node's exclusive lock (``flock`` on ``NODE/.lock``) while open and
puts the node's parts together: where things live (:class:`~blackhole_sync.node.NodeLayout`),
the state database (:class:`~blackhole_sync.node.StateDB`), the trusted documents
(:class:`~blackhole_sync.node.TrustStore`), the rollback points
(:class:`~blackhole_sync.node.RollbackManager`) and the journal that makes every switch of
``current`` crash-safe (journal.py). Its operations:

- :meth:`NodeStore.install` -- the install transaction (install.py), with the caller's
  :class:`~blackhole_sync.node.InstallHooks`;
- :meth:`NodeStore.rollback` -- back to the previous (or a given) installed version, restoring
  the data saved while it was current; :meth:`NodeStore.activate` -- switch ``current`` to an
  installed version without touching data (for rollback managers);
- :meth:`NodeStore.prune` -- drop old versions and rollback points (``dry_run``: only list);
- :meth:`NodeStore.replace_installed_tree` -- a verified fresh copy in place of a damaged,
  non-current tree (a repair); :meth:`NodeStore.verify_current` -- re-hash what ``current``
  really points at;
- :meth:`NodeStore.apply_due_config_changes` -- pending configuration changes now due;
- :meth:`NodeStore.recover` -- run by :meth:`NodeStore.open`: finish or undo the operation a
  crash interrupted, empty staging, remove leftovers.

Installs, rollbacks and activations are journaled: a kill at any instant leaves the node on
the old or the new version, and the next open finishes or undoes the journaled step. A
rollback or an activation re-hashes its target tree against the signed manifest right before
it begins (:meth:`NodeStore.require_intact`; no cached "verified" stamp). ``read_only=True``
opens without the lock and writes nothing (``node status`` on a read-only disk). Pruning
removes a tree by renaming it into staging first, so a kill leaves it whole or gone.

One concern, one module (over 700 lines): the node directory's transactions (install, switch,
rollback, prune) under one lock, each step journaled; splitting them would split the
crash-safety argument that ties them together.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import secrets
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._fsutil import CRASH_ENV, checkpoint, fsync_dir, remove_tree, tree_size, write_atomic
from ..clock import utcnow
from ..documents import (
    Artifact,
    ConfigChange,
    Migration,
    ReleaseManifest,
    VersionInfo,
    check_safe_name,
    parse_version,
    sort_versions,
)
from ..errors import (
    FormatError,
    InstallError,
    InsufficientSpaceError,
    LengthOrHashMismatchError,
    NodeLockedError,
    NoSuchVersionError,
)
from .journal import CHECKPOINTS, Journal
from .layout import CURRENT_TMP_PREFIX, NodeLayout
from .rollback import RollbackManager, recover_data_dir
from .state import StateDB
from .truststore import SignedManifest, TrustStore

# The install path (install.py, tree.py and the archive codecs, migrations.py, blobs.py) is
# imported by the operations that use it: opening a node to read its state loads none of it.
if TYPE_CHECKING:
    from .hooks import InstallHooks
    from .install import InstallResult

__all__ = [
    "CHECKPOINTS",
    "CRASH_ENV",
    "DEFAULT_RESERVE",
    "NodeStore",
    "checkpoint",
    "default_arch",
]

#: Free space kept in reserve beyond what an install needs (bytes).
DEFAULT_RESERVE = 64 * 1024 * 1024


def default_arch() -> str:
    """This machine's architecture as manifests name it (``uname -m``: x86_64, aarch64...)."""
    return os.uname().machine.lower()


class NodeStore:
    """An open node directory, holding its exclusive lock. Use :meth:`create` or :meth:`open`."""

    def __init__(
        self,
        layout: NodeLayout,
        lock_fd: int | None,
        state: StateDB,
        *,
        reserve_bytes: int,
        app_db: str,
        network_config: str,
    ) -> None:
        self.layout = layout
        self.path = layout.root
        self.state = state
        self.read_only = state.read_only
        self.reserve_bytes = reserve_bytes
        self.app_db_path = layout.data_dir / app_db
        self.network_config_path = layout.data_dir / network_config
        self.trust = TrustStore(layout)
        self.rollbacks = RollbackManager(self)
        self.journal = Journal(layout, state, self.rollbacks, self.trust)
        self._lock_fd = lock_fd
        self._closed = False

    # -- the paths callers use most (owned by the layout) -------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.layout.data_dir

    @property
    def staging_dir(self) -> Path:
        return self.layout.staging_dir

    def version_dir(self, version: str) -> Path:
        return self.layout.version_dir(version)

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path | str, *, root_bytes: bytes, config_text: str, **open_kwargs: Any
    ) -> NodeStore:
        """Make a new node directory (refusing a non-empty one) and open it."""
        layout = NodeLayout(path)
        root = layout.root
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise FileExistsError(f"{root} exists and is not an empty directory")
        root.mkdir(parents=True, exist_ok=True)
        layout.make_directories()
        TrustStore(layout).save_root(root_bytes)
        write_atomic(layout.config, config_text.encode(), mode=0o600)
        StateDB.initialise(layout.state_db)
        fsync_dir(root)
        return cls.open(root, **open_kwargs)

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
        layout = NodeLayout(path)
        if not layout.is_node():
            raise NoSuchVersionError(f"{layout.root} is not a node directory")
        check_safe_name(app_db, "app_db")
        check_safe_name(network_config, "network_config")

        def make(lock_fd: int | None, state: StateDB) -> NodeStore:
            return cls(
                layout,
                lock_fd,
                state,
                reserve_bytes=reserve_bytes,
                app_db=app_db,
                network_config=network_config,
            )

        if read_only:
            return make(None, StateDB.open(layout.state_db, read_only=True))
        try:
            lock_fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
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
                        raise NodeLockedError(
                            f"another process holds the lock on {layout.root}"
                        ) from None
                    time.sleep(0.05)
            try:
                state = StateDB.open(layout.state_db)
            except sqlite3.OperationalError as exc:
                raise InstallError(f"node state is not writable: {exc}") from exc
        except BaseException:
            os.close(lock_fd)
            raise
        store = make(lock_fd, state)
        try:
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
        self.state.close()
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
        self.state.check_writable()

    # -- versions -----------------------------------------------------------------------------

    def current_version(self) -> str | None:
        return self.layout.current_version()

    def installed_versions(self) -> list[VersionInfo]:
        """Committed versions whose tree is present, ascending by semver."""
        current = self.current_version()
        infos = {}
        for version, installed_at, state, utype in self.state.committed_versions():
            if not (self.layout.versions_dir / version).is_dir():
                continue
            shown = "current" if version == current and state != "bad" else state
            infos[version] = VersionInfo(version, installed_at, shown, utype or "binary")
        return [infos[v] for v in sort_versions(infos)]

    def is_installed(self, version: str) -> bool:
        return any(i.version == version for i in self.installed_versions())

    def stored_manifest_bytes(self, version: str) -> bytes:
        data = self.trust.manifest_bytes(version)
        if data is None:
            raise NoSuchVersionError(f"no stored manifest for {version}")
        return data

    def stored_manifest(self, version: str) -> ReleaseManifest:
        return self.trust.manifest(version).manifest

    # -- the state database, for callers of the store (see StateDB) ---------------------------

    def history(self) -> list[dict[str, Any]]:
        return self.state.history()

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
        self.state.add_history(
            action,
            from_version,
            to_version,
            method=method,
            bytes_fetched=bytes_fetched,
            duration_s=duration_s,
            error=error,
            when=when,
            note=note,
        )

    def active_operation(self) -> dict[str, Any] | None:
        return self.state.active_operation()

    def mark_bad(self, version: str, reason: str) -> None:
        """Never install or start ``version`` automatically again."""
        self.state.mark_bad(version, reason)

    def mark_good(self, version: str) -> None:
        """``version`` passed its health window: clear its start failures."""
        self.state.mark_good(version)

    def is_bad(self, version: str) -> bool:
        return self.state.is_bad(version)

    def bad_reason(self, version: str) -> str | None:
        return self.state.bad_reason(version)

    def version_state(self, version: str) -> str | None:
        """The recorded state of ``version`` ("installed", "good", "bad"), None if unknown."""
        return self.state.version_state(version)

    def record_start_failure(self, version: str) -> int:
        """Count one more consecutive failed start of ``version`` (the state database's one
        counter, shared with :class:`~blackhole_sync.node.CrashLoopGuard`); the count."""
        return self.state.record_start_failure(version)

    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        return self.state.get_seq_floor(kind, node_id)

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        self.state.set_seq_floor(kind, node_id, seq)

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
        self.state.put_vote(proposal, node_id, seq, support, release_digest, document)

    def get_votes(self, proposal: str) -> list[dict[str, Any]]:
        return self.state.get_votes(proposal)

    def get_meta(self, key: str) -> str | None:
        return self.state.get_meta(key)

    def set_meta(self, key: str, value: str | None) -> None:
        self.state.set_meta(key, value)

    # -- staging ------------------------------------------------------------------------------

    def new_staging_dir(self) -> Path:
        """A fresh private (0700) directory under staging/ for one install's files."""
        self._writable()
        path = self.layout.staging_entry(f"s-{secrets.token_hex(8)}")
        os.mkdir(path, 0o700)
        return path

    def stage_file(self, src: Path, artifact: Artifact, tree: Path) -> None:
        """Move a downloaded blob file into ``tree/<artifact.name>`` with the manifest's mode."""
        from .tree import place_file, require_inside

        self._writable()
        require_inside(tree, self.layout.staging_dir)
        place_file(src, artifact, tree)

    def stage_archive(self, src: Path, artifact: Artifact, tree: Path) -> None:
        """Safely extract an archive marked to unpack into ``tree`` (members at its root)."""
        from .tree import place_archive, require_inside

        self._writable()
        require_inside(tree, self.layout.staging_dir)
        place_archive(src, artifact, tree, self.layout.staging_entry(f"x-{secrets.token_hex(8)}"))

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
        need = tree_size(self.layout.data_dir) + 1024 * 1024
        if manifest.migrations and self.app_db_path.exists():
            need += self.app_db_path.stat().st_size
        if manifest.config_changes and self.network_config_path.exists():
            need += self.network_config_path.stat().st_size * 2
        return need

    # -- trees --------------------------------------------------------------------------------

    @staticmethod
    def check_tree(
        tree: Path, artifacts: Sequence[Artifact], *, fsync: bool = False, hashes: bool = True
    ) -> list[str]:
        """:func:`~blackhole_sync.node.check_tree` (problems of ``tree`` against
        ``artifacts``; empty: an exact match)."""
        from .tree import check_tree

        return check_tree(tree, artifacts, fsync=fsync, hashes=hashes)

    def verify_installed(self, version: str | None = None) -> list[str]:
        """Re-hash an installed tree (default: the current one) against its stored manifest."""
        version = version or self.current_version()
        if version is None:
            return []
        return self._check_installed(version, self.layout.versions_dir / version)

    def verify_current(self) -> list[str]:
        """Re-hash what ``current`` points at (not what its name says) against the manifest
        of the version it names; an empty list when it matches or there is no ``current``.

        ``current`` must be the link a switch writes (``versions/<v>``) onto a real directory:
        a link elsewhere (an absolute path, ``..``, a symlinked ``versions/<v>``) is reported,
        and the tree it actually reaches is hashed either way.
        """
        version = self.current_version()
        if version is None:
            return []
        problems = self.layout.current_link_problems()
        reached = Path(os.path.realpath(self.layout.current))
        return problems + self._check_installed(version, reached, label="current")

    def _check_installed(self, version: str, tree: Path, *, label: str | None = None) -> list[str]:
        name = label or version
        if not tree.is_dir():
            return [f"{name}: not installed"]
        try:
            manifest = self.stored_manifest(version)
        except (NoSuchVersionError, FormatError) as exc:
            return [f"{name}: stored manifest of {version} unusable: {exc}"]
        platform, arch = self.state.platform_arch(version) or ("linux", default_arch())
        # A hash pass on request (`node verify`, before a rollback): the tree as it is now.
        return [
            f"{name}/{p}" for p in self.check_tree(tree, manifest.artifacts_for(platform, arch))
        ]

    def require_intact(self, version: str) -> None:
        """Re-hash ``versions/<version>`` against its stored signed manifest right before it
        goes live again (a rollback, an activation): no cached "verified" stamp is trusted.
        Raises :class:`LengthOrHashMismatchError` naming the first difference."""
        problems = self.verify_installed(version)
        if problems:
            raise LengthOrHashMismatchError(
                f"installed tree of {version} does not match its signed manifest: {problems[0]}"
            )

    def replace_installed_tree(self, version: str, staged: Path) -> None:
        """Put a freshly staged copy of an installed, non-current ``version`` in place of its
        damaged tree (a repair). The staged tree is re-hashed against the stored manifest
        first; the damaged tree is renamed into staging and deleted, then the new one renamed
        into ``versions/``. A crash between the two renames leaves the version without a tree
        (not installed, never half of one)."""
        from .tree import check_tree, require_inside

        self._writable()
        version = parse_version(version)
        if version == self.current_version():
            raise InstallError(f"{version} is current: it cannot be replaced in place")
        require_inside(staged, self.layout.staging_dir)
        manifest = self.stored_manifest(version)
        platform, arch = self.state.platform_arch(version) or ("linux", default_arch())
        problems = check_tree(staged, manifest.artifacts_for(platform, arch), fsync=True)
        if problems:
            remove_tree(staged)
            raise LengthOrHashMismatchError(
                f"re-fetched tree of {version} does not match its manifest: {problems[0]}"
            )
        dest = self.layout.version_dir(version)
        self.journal.discard(dest)
        os.chmod(staged, 0o755)  # noqa: S103 - installed trees are world-readable
        os.rename(staged, dest)
        fsync_dir(self.layout.versions_dir)
        with self.state.transaction():
            self.state.add_history("repair", version, version, note="re-fetched a damaged tree")

    # -- install ------------------------------------------------------------------------------

    async def install(
        self,
        release: SignedManifest,
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
        max_downtime: float | None = None,
        backup: bool = True,
    ) -> InstallResult:
        """Install the staged ``tree`` as ``release`` (install.py's order).

        ``hooks`` default to :class:`DefaultInstallHooks` (the store's own rollback points, no
        self-test, restart or health check). ``region`` and ``node_type`` scope configuration
        changes; when both are None they are read from ``config.toml``. ``max_downtime``:
        seconds from the switch within which restart and health checks must pass (else the
        install rolls back; None: no limit). ``backup=False`` skips the rollback point unless
        the install changes ``data/`` (a schema migration or configuration change).

        Raises LengthOrHashMismatchError (tree does not match; nothing changed), SandboxError
        (self-test failed; nothing switched; the version is marked bad), MigrationError
        (nothing switched), HealthCheckError (switched, failed, rolled back, marked bad),
        InsufficientSpaceError, ConfigurationError (config.toml unreadable; nothing changed),
        or InstallError for I/O failures (the node is left on the old version, or recovery on
        the next open finishes the job).
        """
        import anyio.to_thread

        from .config import read_node_attributes
        from .hooks import DefaultInstallHooks
        from .install import InstallResult, InstallTransaction
        from .tree import check_tree, require_inside

        self._writable()
        hooks = hooks if hooks is not None else DefaultInstallHooks(self.rollbacks)
        arch = arch or default_arch()
        version = parse_version(release.version)
        previous = self.current_version()
        dest = self.layout.version_dir(version)
        preexisting = dest.is_dir() and self.is_installed(version)
        if version == previous and preexisting:
            # Nothing moves, so nothing is hashed (`node verify` checks installed trees).
            with contextlib.suppress(OSError):
                remove_tree(tree)
            return InstallResult(version, previous, False, method, 0, 0.0)
        self.check_space(self._install_overhead(release.manifest))
        require_inside(tree, self.layout.staging_dir)
        if preexisting:
            # The hash pass of a re-activation, its last check before the switch: the installed
            # tree goes live again (the staged copy is dropped unread).
            artifacts = release.manifest.artifacts_for(platform, arch)
            if await anyio.to_thread.run_sync(check_tree, dest, artifacts):
                raise InstallError(f"installed tree of {version} is damaged; prune it first")
        if region is None and node_type is None:
            attributes = read_node_attributes(self.layout.config)
            region, node_type = attributes.region or None, attributes.node_type or None
        transaction = InstallTransaction(
            self.journal, self.app_db_path, self.network_config_path, self.verify_installed
        )
        return await transaction.run(
            release,
            tree,
            previous=previous,
            preexisting=preexisting,
            hooks=hooks,
            platform=platform,
            arch=arch,
            method=method,
            bytes_fetched=bytes_fetched,
            extra_migrations=extra_migrations,
            extra_config_changes=extra_config_changes,
            region=region,
            node_type=node_type,
            now=now,
            max_downtime=max_downtime,
            backup=backup,
        )

    def apply_due_config_changes(
        self,
        *,
        now: _dt.datetime | None = None,
        region: str | None = None,
        node_type: str | None = None,
    ) -> list[str]:
        """Apply the pending configuration changes whose effective date has come (the update
        agent calls this each cycle); the keys applied. Each file is replaced atomically and
        the change recorded in ``config.history.json`` (its rollback window starts now) and
        in the node's history."""
        from .config import read_node_attributes
        from .migrations import apply_config_changes, config_sidecars

        self._writable()
        pending, _history = config_sidecars(self.network_config_path)
        if not pending.exists():
            return []
        if region is None and node_type is None:
            attributes = read_node_attributes(self.layout.config)
            region, node_type = attributes.region or None, attributes.node_type or None
        result = apply_config_changes(
            self.network_config_path,
            [],
            region=region,
            node_type=node_type,
            now=now or utcnow(),
        )
        keys = [c.key for c in result.applied]
        if keys:
            current = self.current_version()
            with self.state.transaction():
                self.state.add_history(
                    "config", current, current, note=f"applied {', '.join(keys)} (now due)"
                )
        return keys

    # -- rollback and activation --------------------------------------------------------------

    def rollback_target(self) -> str:
        """The version current before the last install of the current one (from history)."""
        current = self.current_version()
        if current is None:
            raise NoSuchVersionError("no version is installed")
        target = self.state.previous_of(current)
        if target is None:
            raise NoSuchVersionError(f"no version was current before {current}")
        if not self.is_installed(target):
            raise NoSuchVersionError(f"previous version {target} is no longer installed")
        return target

    def rollback(self, to_version: str | None = None, *, restore_data: bool = True) -> str:
        """Switch back to ``to_version`` (default: :meth:`rollback_target`); the version current.

        With ``restore_data`` the data backup taken when that version was last current is
        restored. The target's tree is re-hashed against its signed manifest before anything
        changes (:class:`LengthOrHashMismatchError` when it does not match: the node stays
        where it is). Journaled: a crash is finished at the next open. Rolling back to the
        current version does nothing.
        """
        self._writable()
        target = parse_version(to_version) if to_version else self.rollback_target()
        current = self.current_version()
        if not self.is_installed(target):
            raise NoSuchVersionError(f"{target} is not installed")
        if target == current:
            return target
        self.require_intact(target)
        point = self.rollbacks.restore_point_for(target, current) if restore_data else None
        if point is not None:
            from .migrations import keep_settled_changes

            # the configuration rollback window: changes past theirs survive the restore
            keep_settled_changes(
                point.path / "data" / self.network_config_path.name,
                self.network_config_path,
                now=utcnow(),
            )
        jid = self.state.begin(
            "rollback",
            target,
            current,
            rollback_point=point.id if point else None,
            rollback_path=str(point.path) if point else None,
            restore_data=int(point is not None),
            action="rollback",
        )
        self.journal.run_rollback(jid)
        return target

    def activate(self, version: str) -> str | None:
        """Make the installed ``version`` current without touching ``data/``; the version that
        was current. Journaled like a rollback (a crash is finished at the next open).

        For rollback managers that restore the state themselves. Like :meth:`rollback`, the
        target's tree is re-hashed against its signed manifest first
        (:class:`LengthOrHashMismatchError`, nothing switched, when it does not match).
        """
        self._writable()
        target = parse_version(version)
        current = self.current_version()
        if not self.is_installed(target):
            raise NoSuchVersionError(f"{target} is not installed")
        if target != current:
            self.require_intact(target)
            jid = self.state.begin("rollback", target, current, restore_data=0, action="activate")
            self.journal.run_rollback(jid)
        return current

    # -- prune --------------------------------------------------------------------------------

    def prune(
        self, keep: int, *, keep_rollback_target: bool = True, dry_run: bool = False
    ) -> list[str]:
        """Keep the ``keep`` newest versions plus the current one (and the rollback target,
        unless ``keep_rollback_target=False``: an operator's explicit ``node prune``); the
        versions removed. ``dry_run``: only say which would go (nothing changes; works on a
        store opened read-only)."""
        if not dry_run:
            self._writable()
        if keep < 0:
            raise ValueError("keep must be >= 0")
        current = self.current_version()
        protected = {current} if current else set()
        if keep_rollback_target:
            with contextlib.suppress(NoSuchVersionError):
                protected.add(self.rollback_target())
        versions = [i.version for i in self.installed_versions()]
        good = [v for v in versions if not self.state.is_bad(v)]
        newest = set(sort_versions(good, reverse=True)[:keep])
        removed = [v for v in versions if v not in newest and v not in protected]
        if dry_run:
            return removed
        for version in removed:
            self.journal.discard(self.layout.version_dir(version))
            with self.state.transaction():
                self.state.forget_version(version)
            self.trust.remove_manifest(version)
        installed = {i.version for i in self.installed_versions()}
        keep_points: set[int] = set()
        for p in self.rollbacks.rollback_points():
            if p.previous_version is not None and p.previous_version not in installed:
                self.rollbacks.delete_point(p.id)
            elif p.previous_version in protected and p.for_version == current:
                keep_points.add(p.id)
        self.rollbacks.prune_points(max(keep, 1), protect=keep_points)
        # transfer blobs: those of the current and the previous version stay (node/blobs.py)
        blob_versions = {current} if current else set()
        with contextlib.suppress(NoSuchVersionError):
            blob_versions.add(self.rollback_target())
        from .blobs import blob_digests, prune_blobs

        prune_blobs(self.layout, blob_digests(self.stored_manifest(v) for v in blob_versions))
        if removed:
            with self.state.transaction():
                self.state.add_history(
                    "prune", current, current, note=f"removed {', '.join(removed)}"
                )
        return removed

    # -- recovery -----------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish or undo the interrupted operation, empty staging, remove leftovers."""
        self._writable()
        layout = self.layout
        recover_data_dir(layout.data_dir)
        for entry in os.listdir(layout.root):
            if entry.startswith(CURRENT_TMP_PREFIX):
                os.unlink(layout.root / entry)
        notes = self.journal.finish_interrupted()
        # Staging is emptied; half-made rollback points and uncommitted trees go.
        os.chmod(layout.staging_dir, 0o700)
        for entry in os.listdir(layout.staging_dir):
            remove_tree(layout.staging_dir / entry)
        self.journal.remove_migrate_leftovers()
        self.rollbacks.cleanup_temporary()
        committed = {v for v, *_ in self.state.committed_versions()}
        current = self.current_version()
        for entry in os.listdir(layout.versions_dir):
            if entry not in committed and entry != current:
                self.journal.discard(layout.versions_dir / entry)
                notes.append(f"removed uncommitted tree {entry}")
        return notes

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "current_version": self.current_version(),
            "installed_versions": [i.version for i in self.installed_versions()],
            "bad_versions": self.state.bad_versions(),
            "free_bytes": self.free_bytes(),
        }
