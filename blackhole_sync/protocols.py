"""The design card's core protocols, and the values they exchange.

:class:`UpdateManager`, :class:`VersionManager` and :class:`RollbackManager` are
:class:`typing.Protocol` classes: the library's own classes implement them
(:class:`blackhole_sync.manager.UpdateManager`, :class:`blackhole_sync.documents.VersionManager`,
:class:`blackhole_sync.node.RollbackManager`), and a host may hand its own VersionManager and
RollbackManager to the manager::

    manager = blackhole_sync.UpdateManager(node_dir, version_manager=MyVersions(...),
                                           rollback_manager=lambda store: MyBackups(store))

Division of labour on the install and rollback paths:

- the manager asks the VersionManager whether the current version may move to a release
  (:meth:`VersionManager.check_compatibility`, refused when False) and which schema migrations
  the move needs (:meth:`VersionManager.get_required_migrations`);
- the node store's journaled install asks the RollbackManager for a rollback point before the
  node's state changes (:meth:`RollbackManager.create_rollback_point`) and hands it back to
  :meth:`RollbackManager.restore_state` when an install is undone;
- ``UpdateManager.rollback`` picks the target from
  :meth:`RollbackManager.get_rollback_versions`, re-checks the target tree against its signed
  manifest, and calls :meth:`RollbackManager.perform_rollback`, which makes the target current
  (through :meth:`blackhole_sync.node.NodeStore.activate`) and restores its state.

Whatever a host supplies, the checks that make an update safe stay in the library: signatures,
thresholds, hashes, expiry and the rollback-attack floor are applied before either protocol is
consulted, and a rollback target's tree is re-hashed before it goes live.

The protocols live beside the orchestration code (not in the base layer) because their
signatures name document and node types (:class:`~blackhole_sync.documents.VersionInfo`,
:class:`~blackhole_sync.node.RollbackPoint`); the layer contract keeps them above both.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from attrs import field, frozen

if TYPE_CHECKING:  # annotations only: importing the protocols loads no node module
    from .documents import (
        CompatibilityInfo,
        Migration,
        ReleaseManifest,
        VersionComparison,
        VersionInfo,
    )
    from .node import Decision, RollbackPoint, RollbackResult, StateBackup, UpdatePolicy

__all__ = [
    "RollbackManager",
    "SyncResult",
    "UpdateInfo",
    "UpdateManager",
    "UpdatePackage",
    "UpdateResult",
    "UpdateStatus",
    "VersionManager",
]


@frozen
class UpdateInfo:
    """A verified release newer than the node's current version."""

    version: str
    type: str
    channel: str
    critical: bool
    priority: int
    released: _dt.datetime
    manifest: ReleaseManifest = field(repr=False)
    manifest_bytes: bytes = field(repr=False)

    @classmethod
    def of(cls, manifest: ReleaseManifest, data: bytes) -> UpdateInfo:
        return cls(
            manifest.version,
            manifest.type,
            manifest.channel,
            manifest.critical,
            manifest.priority,
            manifest.released,
            manifest,
            data,
        )

    def to_dict(self) -> dict[str, Any]:
        from .documents import format_time

        return {
            "version": self.version,
            "type": self.type,
            "channel": self.channel,
            "critical": self.critical,
            "priority": self.priority,
            "released": format_time(self.released),
        }


@frozen
class UpdatePackage:
    """A release staged and verified on disk, ready for ``apply_update``."""

    version: str
    manifest: ReleaseManifest = field(repr=False)
    manifest_bytes: bytes = field(repr=False)
    tree: Path  # the staged tree (a staging directory of its own)
    staging: Path  # scratch space: downloaded blobs and patches
    method: str  # "full" | "delta"
    bytes_fetched: int
    from_version: str | None
    method_reason: str = ""  # why artifacts came whole although deltas were on


@frozen
class UpdateResult:
    version: str
    previous: str | None
    method: str
    bytes_fetched: int
    duration_s: float
    method_reason: str = ""  # why artifacts came whole although deltas were on

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous": self.previous,
            "method": self.method,
            "method_reason": self.method_reason,
            "bytes_fetched": self.bytes_fetched,
            "duration_s": round(self.duration_s, 3),
        }


@frozen
class UpdateStatus:
    current_version: str | None
    installed_versions: tuple[str, ...]
    node_public_key: str
    channel: str
    state: str
    root_version: int
    index_version: int | None
    index_expires: str | None
    available: tuple[str, ...]
    bad_versions: tuple[str, ...]
    held_versions: tuple[str, ...]
    policy: Mapping[str, Any]
    metrics: Mapping[str, Any]
    #: The last check: its time, what triggered it ("request", "poll", "announce", "start")
    #: and the index version it ended with; None before the first check.
    last_check: Mapping[str, Any] | None = None
    #: ``{"version", "reason"}`` when the running version was withdrawn (yanked), else None.
    yanked: Mapping[str, str] | None = None
    #: What the policy would do now about the best release not held (``version``,
    #: ``action``, ``reason``, ``not_before``), e.g. wait for ``node confirm``; None when
    #: nothing newer is known.
    pending: Mapping[str, Any] | None = None
    #: Plugins that failed to load: ``{"name", "error"}`` each.
    plugin_failures: tuple[Mapping[str, str], ...] = ()
    #: Network coordination: activation proposals (with ``pending_activations``), rollouts,
    #: halts and deprecation warnings; None when the index lists no coordination documents.
    coordination: Mapping[str, Any] | None = None
    #: What each peer transport last reported from this node's ``node run`` (its
    #: ``NODE/<name>/status.json``: BitTorrent's seeds and ratio...), by transport name.
    transports: Mapping[str, Mapping[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "current_version": self.current_version,
            "installed_versions": list(self.installed_versions),
            "node_public_key": self.node_public_key,
            "channel": self.channel,
            "state": self.state,
            "root_version": self.root_version,
            "index_version": self.index_version,
            "index_expires": self.index_expires,
            "available": list(self.available),
            "bad_versions": list(self.bad_versions),
            "held_versions": list(self.held_versions),
            "policy": dict(self.policy),
            "metrics": dict(self.metrics),
            "last_check": None if self.last_check is None else dict(self.last_check),
            "yanked": None if self.yanked is None else dict(self.yanked),
            "pending": None if self.pending is None else dict(self.pending),
            "plugin_failures": [dict(f) for f in self.plugin_failures],
            "coordination": None if self.coordination is None else dict(self.coordination),
            "transports": {k: dict(v) for k, v in (self.transports or {}).items()},
        }


@frozen
class SyncResult:
    available: tuple[UpdateInfo, ...]
    decision: Decision | None
    installed: UpdateResult | None = None
    error: str | None = None


@runtime_checkable
class VersionManager(Protocol):
    """Version tracking and compatibility (the design's VersionManager)."""

    def get_current_version(self) -> str | None:
        """The version ``current`` points at, None before the first install."""
        ...

    def get_installed_versions(self) -> list[VersionInfo]:
        """Installed versions, ascending."""
        ...

    def get_compatibility_matrix(self) -> CompatibilityInfo:
        """Per known release: the oldest version that may update to it, its protocols."""
        ...

    def compare_versions(self, v1: str, v2: str) -> VersionComparison:
        """Semver precedence: OLDER means ``v1 < v2``."""
        ...

    def check_compatibility(self, target: str) -> bool:
        """True when the current version may move to ``target``; False refuses the install."""
        ...

    def get_required_migrations(self, from_version: str | None, to_version: str) -> list[Migration]:
        """The schema migrations, in order, that moving ``from_version -> to_version`` needs."""
        ...


@runtime_checkable
class RollbackManager(Protocol):
    """State backups and the way back (the design's RollbackManager)."""

    def can_rollback(self) -> bool:
        """True when some installed version is a valid rollback target."""
        ...

    def get_rollback_versions(self) -> list[str]:
        """Versions one can roll back to, preferred first (never the current one)."""
        ...

    async def create_rollback_point(
        self, previous_version: str | None, for_version: str
    ) -> RollbackPoint:
        """Back up the node's state before ``for_version`` replaces ``previous_version``."""
        ...

    async def perform_rollback(self, target: str | None = None) -> RollbackResult:
        """Make ``target`` (default: the previous version) current and restore the state saved
        while it was current.

        The manager has already re-checked ``target``'s tree against its signed manifest.
        """
        ...

    async def backup_state(self) -> StateBackup:
        """A consistent copy of the node's state (``data/``)."""
        ...

    async def restore_state(self, backup: StateBackup | RollbackPoint) -> None:
        """Put a backup made by :meth:`backup_state`, or the state a rollback point made by
        :meth:`create_rollback_point` saved, back in place."""
        ...

    async def prune_old_rollback_points(self, keep: int) -> None:
        """Keep the ``keep`` newest rollback points."""
        ...


@runtime_checkable
class UpdateManager(Protocol):
    """The orchestrator (the design's UpdateManager)."""

    async def check_for_updates(self) -> list[UpdateInfo]: ...

    async def download_update(self, update: UpdateInfo) -> UpdatePackage: ...

    async def verify_update(self, package: UpdatePackage) -> bool: ...

    async def apply_update(self, package: UpdatePackage) -> UpdateResult: ...

    def set_update_policy(self, policy: UpdatePolicy) -> None: ...

    def get_update_status(self) -> UpdateStatus: ...

    async def sync_with_network(self) -> SyncResult: ...

    async def broadcast_update_status(self, status: UpdateStatus | None = None) -> Any: ...
