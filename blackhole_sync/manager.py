"""UpdateManager: check, download, verify, apply, sync and report -- the node side.

The orchestrator over :mod:`trust` (decisions), :mod:`client` (fetching), :mod:`store`
(atomic installs), :mod:`delta` (patches), :mod:`policy` and :mod:`health`. It is an async
context manager that holds the node's lock while open::

    async with UpdateManager("/srv/node") as manager:
        updates = await manager.check_for_updates()
        if updates:
            package = await manager.download_update(updates[0])
            await manager.verify_update(package)
            result = await manager.apply_update(package)

All expiry checks of one operation use one reference time, taken when the operation starts.
Everything fetched is verified before it is persisted, and persisted atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from . import protocols
from ._fsutil import hash_file
from .clock import utcnow
from .codecs import load_private_key
from .documents import (
    Envelope,
    NodeStatusDoc,
    PrivateKey,
    ReleaseManifest,
    TrustedState,
    VersionManager,
    compare_versions,
    format_time,
    parse_time,
    sort_versions,
    version_key,
)
from .errors import (
    BlackholeSyncError,
    HealthCheckError,
    IncompatibleReleaseError,
    LengthOrHashMismatchError,
    MigrationError,
    NoSuchVersionError,
    RollbackError,
    SandboxError,
    SecurityError,
    WithdrawnReleaseError,
)
from .events import UpdateEvent
from .fetch import (
    ClientLimits,
    PluginHost,
    ProgressEvent,
    RepositoryClient,
    Transport,
    TransportPool,
    make_plugin_manager,
)
from .metrics import ResourceSampler, UpdateMetrics
from .node import (
    Decision,
    NodeConfig,
    NodeStore,
    PolicyState,
    RollbackPoint,
    SignedManifest,
    TrustStore,
    UpdatePolicy,
    check_tree,
    decide,
)
from .protocols import SyncResult, UpdateInfo, UpdatePackage, UpdateResult, UpdateStatus

if TYPE_CHECKING:
    from .network import CompatibilityManager, PeerNetwork
    from .network.coordinator import Coordinator
    from .node import RegressionWatch

__all__ = [
    "MAX_START_FAILURES",
    "init_node",
    "NodeUpdateClient",
    "SyncResult",
    "UpdateInfo",
    "UpdateManager",
    "UpdatePackage",
    "UpdateResult",
    "UpdateStatus",
]

log = logging.getLogger(__name__)

#: Consecutive failed health checks after which the agent abandons a version.
MAX_START_FAILURES = 3


class UpdateManager:
    """The node's update orchestrator (the design's UpdateManager)."""

    def __init__(
        self,
        node_dir: str | os.PathLike[str],
        *,
        plugins: PluginHost | None = None,
        config: NodeConfig | None = None,
        clock: Callable[[], _dt.datetime] = utcnow,
        lock_timeout: float = 5.0,
        transport_options: Mapping[str, Any] | None = None,
        deltas: bool | None = None,
        progress: Callable[[Any], None] | None = None,
        peers: PeerNetwork | None = None,
        version_manager: protocols.VersionManager
        | Callable[[UpdateManager], protocols.VersionManager]
        | None = None,
        rollback_manager: protocols.RollbackManager
        | Callable[[NodeStore], protocols.RollbackManager]
        | None = None,
        read_only: bool = False,
    ) -> None:
        """Open with ``async with``. ``version_manager`` and ``rollback_manager`` replace the
        library's own (instances, or factories called once the node store is open: the
        version manager's with this manager, the rollback manager's with the store); see
        :mod:`blackhole_sync.protocols` for what each is asked and when.

        ``read_only``: open the node without its lock and write nothing (status, history,
        verify): works on a full or read-only disk and for a user who cannot write the lock
        file; every operation that writes raises :class:`~blackhole_sync.errors.InstallError`.
        ``plugins`` default to the entry points ``[plugins]`` in config.toml allows."""
        self.node_dir = Path(node_dir)
        self.read_only = read_only
        self._peers = peers
        self._version_manager_arg = version_manager
        self._rollback_manager_arg = rollback_manager
        self._version_manager: protocols.VersionManager | None = None
        self._rollback_manager: protocols.RollbackManager | None = None
        self._plugins = plugins
        self._config = config
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._transport_options = dict(transport_options or {})
        self._deltas = deltas
        self._progress = progress
        self._store: NodeStore | None = None
        self._pool: TransportPool | None = None
        self._state: TrustedState | None = None
        self._unsaved: list[tuple[str, bytes]] = []
        self.metrics = UpdateMetrics()
        #: Releases the last check found that this node cannot install: version -> why.
        self.not_installable: dict[str, str] = {}
        self._coordination: Any = None  # network.governance.CoordinationDocs of the last check
        self._coordinator: Coordinator | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> UpdateManager:
        self._store = await anyio.to_thread.run_sync(
            lambda: NodeStore.open(
                self.node_dir, lock_timeout=self._lock_timeout, read_only=self.read_only
            )
        )
        try:
            if self._config is None:
                self._config = NodeConfig.from_file(self._store.layout.config)
            if self._plugins is None:
                self._plugins = make_plugin_manager(
                    load_entrypoints=self.config.plugins.autoload,
                    block=self.config.plugins.block,
                )
                if not self.read_only:  # `node status` shows what the last load saw
                    failures = [{"name": f.name, "error": f.error} for f in self._plugins.failures]
                    recorded = json.dumps(failures, sort_keys=True) if failures else None
                    if self._store.get_meta("plugin_failures") != recorded:
                        self._store.set_meta("plugin_failures", recorded)
            # the shared transport options (transport.STANDARD_OPTIONS); explicit ones win.
            # state_root/node_config/loopback_only: a transport that fetches through a node of
            # its own (IPFS by CID) keeps its state in NODE/<name>/ and reads its [table].
            options: dict[str, Any] = {
                "rate_limit": self.config.download_rate_limit(),
                "state_root": self._store.layout.root,
                "node_config": self.config.to_dict(),
                "loopback_only": self.config.network.loopback_only,
            }
            options.update(self.config.tls.transport_options())
            options.update(self._transport_options)
            self._pool = TransportPool.from_plugins(self._plugins, options)
        except BaseException:
            self._store.close()
            self._store = None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._pool is not None:
            with anyio.CancelScope(shield=True):
                await self._pool.aclose()
            self._pool = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def transports(self) -> dict[str, Transport]:
        """The registered transports that run under this event loop, by name (the manager's
        guarded instances: started on first use, closed with the manager)."""
        if self._pool is None:
            raise RuntimeError("UpdateManager is not open: use 'async with'")
        return {transport.name: transport for transport in self._pool.usable()}

    @property
    def store(self) -> NodeStore:
        if self._store is None:
            raise RuntimeError("UpdateManager is not open: use 'async with'")
        return self._store

    @property
    def config(self) -> NodeConfig:
        if self._config is None:
            raise RuntimeError("UpdateManager is not open: use 'async with'")
        return self._config

    @property
    def plugins(self) -> PluginHost:
        if self._plugins is None:
            raise RuntimeError("UpdateManager is not open: use 'async with'")
        return self._plugins

    @property
    def versions(self) -> protocols.VersionManager:
        """The VersionManager the install path asks (the host's, or the library's)."""
        if self._version_manager is None:
            given = self._version_manager_arg
            if given is None:
                self._version_manager = VersionManager(
                    self.store, self._known_manifests, protocol_versions=self.protocol_versions
                )
            elif isinstance(given, type) or not isinstance(given, protocols.VersionManager):
                self._version_manager = given(self)
            else:
                self._version_manager = given
        return self._version_manager

    @property
    def rollbacks(self) -> protocols.RollbackManager:
        """The RollbackManager that backs up state and rolls back (the host's, or the store's)."""
        if self._rollback_manager is None:
            given = self._rollback_manager_arg
            if given is None:
                self._rollback_manager = self.store.rollbacks
            elif isinstance(given, type) or not isinstance(given, protocols.RollbackManager):
                self._rollback_manager = given(self.store)
            else:
                self._rollback_manager = given
        return self._rollback_manager

    def protocol_versions(self) -> tuple[int, ...]:
        """The protocols the host runs: the ``blackhole_sync_protocol_versions`` hook's
        answer, else ``[node] protocol_versions`` (empty: protocols are not checked)."""
        answer = self.plugins.hook.blackhole_sync_protocol_versions(node_dir=self.node_dir)
        if answer is not None:
            return tuple(int(v) for v in answer)
        return self.config.protocol_versions

    def _client(self) -> RepositoryClient:
        assert self._pool is not None
        return RepositoryClient(
            self.config.sources, self._pool, limits=ClientLimits(), progress=self._on_progress
        )

    def _on_progress(self, event: ProgressEvent) -> None:
        self.metrics.on_progress(event)
        if self._progress is not None:
            self._progress(event)

    def _emit(self, kind: str, version: str | None = None, **detail: Any) -> None:
        event = UpdateEvent(kind=kind, version=version, detail=detail)
        try:
            self.plugins.hook.blackhole_sync_update_event(event=event)
        except Exception:  # observers cannot break an update
            log.exception("update event observer failed")

    # -- trusted metadata ---------------------------------------------------------------------

    @property
    def trust(self) -> TrustStore:
        """The node's ``trust/`` directory (received bytes of verified documents)."""
        return self.store.trust

    def _load_state(self, reference_time: _dt.datetime) -> TrustedState:
        """Root and the stored index (as the floor) from ``trust/``.

        Stored manifests are verified only when first needed (:meth:`_stored_manifest`), so a
        check costs the same with 1 or 1,000 published releases.
        """
        state = TrustedState(self.trust.root_bytes(), reference_time=reference_time)
        index = self.trust.index_bytes()
        if index is not None:
            state.load_trusted_index(index)
        return state

    def _trusted(self) -> TrustedState:
        if self._state is None:
            self._state = self._load_state(self._clock())
        return self._state

    def _stored_manifest(
        self, state: TrustedState, version: str, *, allow_withdrawn: bool = True
    ) -> ReleaseManifest | None:
        """``version``'s manifest from ``trust/``, verified into ``state`` on first use.

        None when it is not stored or no longer verifies (it is then fetched again when needed).
        """
        try:
            return state.manifest(version)
        except KeyError:
            pass
        data = self.trust.manifest_bytes(version)
        if data is None or state.index is None:
            return None
        try:
            # verified once per process: the stored bytes are a cache, trust is the signatures
            return state.update_manifest(version, data, allow_withdrawn=allow_withdrawn)
        except SecurityError:
            return None

    def _releases_between(self, low: str | None, high: str) -> list[ReleaseManifest]:
        """Verified manifests of the channel's releases in ``(low, high]``, ascending."""
        state = self._trusted()
        if state.index is None:
            return []
        out = []
        for version in sort_versions(state.index.releases(self.config.channel)):
            if low is not None and compare_versions(version, low) <= 0:
                continue
            if compare_versions(version, high) > 0:
                continue
            manifest = self._stored_manifest(state, version)
            if manifest is not None:
                out.append(manifest)
        return out

    def _known_manifests(self) -> dict[str, ReleaseManifest]:
        """The channel's manifests verified this session or stored in ``trust/`` (the default
        VersionManager's view: compatibility checks, the matrix, required migrations)."""
        state = self._trusted()
        found = dict(state.manifests)  # verified this session, saved or not yet
        for version in self.trust.manifest_versions():
            manifest = self._stored_manifest(state, version)
            if manifest is not None:
                found[version] = manifest
        channel = self.config.channel
        return {v: m for v, m in found.items() if m.channel == channel}

    # -- the design's operations --------------------------------------------------------------

    async def check_for_updates(
        self, *, persist: bool = True, trigger: str = "request"
    ) -> list[UpdateInfo]:
        """Refresh and verify metadata from the sources; return newer releases, best first.

        Newly verified metadata is saved whether or not an update exists (with ``persist``
        false it is kept in memory until :meth:`update` succeeds). Releases marked bad on this
        node (failed health checks) are left out, and so are releases this node cannot
        install (no artifact for its platform/arch, excluded by their compatibility rules):
        those are listed in :attr:`not_installable` with the reason.
        """
        state = self._load_state(self._clock())
        client = self._client()
        self._emit("checking")
        await client.refresh(state)
        await self._refresh_coordination(client, state)
        current = self.store.current_version()
        infos: list[UpdateInfo] = []
        fetched: list[tuple[str, bytes]] = []
        for version in self._candidates(state, current):
            data = await self._manifest_bytes(state, client, version, fetched=fetched)
            infos.append(UpdateInfo.of(state.manifest(version), data))
        # persisted only once every listed manifest verified: a refusal leaves trust/ as it was
        self._state = state
        self._unsaved = fetched
        self.not_installable = {}
        for info in list(infos):
            problem = self.installable_problem(info.manifest)
            if problem is not None:
                self.not_installable[info.version] = problem
                infos.remove(info)
        if persist:
            self._save_trust()
        self.store.set_meta("last_check", format_time(state.reference_time))
        index_version = state.index.version if state.index is not None else None
        self.store.set_meta(
            "last_check_detail",
            json.dumps({"trigger": trigger, "index_version": index_version}, sort_keys=True),
        )
        ordered = sorted(infos, key=lambda i: (i.priority, version_key(i.version)), reverse=True)
        self._emit("checked", None, available=[i.version for i in ordered])
        return ordered

    def _save_trust(self) -> None:
        """Persist the trusted state verified by the last check (atomically, file by file)."""
        if self._state is None:
            return
        self.trust.save_state(self._state)
        for version, data in self._unsaved:
            self.trust.save_manifest(version, data)
        self._unsaved = []

    def held_versions(self) -> list[str]:
        """Versions the operator rolled back from: the agent does not reinstall them."""
        raw = self.store.get_meta("held_versions")
        return [] if raw is None else list(json.loads(raw))

    def _set_held(self, versions: Sequence[str]) -> None:
        self.store.set_meta(
            "held_versions", json.dumps(sorted(set(versions))) if versions else None
        )

    def _candidates(self, state: TrustedState, current: str | None) -> list[str]:
        index = state.require_index()
        out = []
        for version in sort_versions(index.releases(self.config.channel)):
            if current is not None and compare_versions(version, current) <= 0:
                continue
            if self.store.is_bad(version):
                continue
            out.append(version)
        return out

    async def _manifest_bytes(
        self,
        state: TrustedState,
        client: RepositoryClient,
        version: str,
        *,
        fetched: list[tuple[str, bytes]] | None = None,
    ) -> bytes:
        if self._stored_manifest(state, version, allow_withdrawn=False) is not None:
            return state.manifest_bytes(version)
        data = await client.fetch_manifest(state, version)
        if fetched is None:
            self.trust.save_manifest(version, data)
        else:
            fetched.append((version, data))
        return data

    async def resolve(
        self, version: str | None = None, *, persist: bool = True
    ) -> UpdateInfo | None:
        """Check, then pick the release to install: ``version`` or the best available.

        Returns None when the node is up to date (or already on ``version``). A ``version``
        below the current one is a downgrade and raises :class:`RollbackError`. Without
        ``version``, the best release this node can install; when only releases it cannot
        install are newer, :class:`IncompatibleReleaseError` says why.
        """
        infos = await self.check_for_updates(persist=persist)
        current = self.store.current_version()
        if version is None:
            if not infos and self.not_installable:
                newest = sort_versions(self.not_installable)[-1]
                raise IncompatibleReleaseError(self.not_installable[newest])
            return infos[0] if infos else None
        if current is not None:
            order = compare_versions(version, current)
            if order < 0:
                raise RollbackError(
                    f"{version} is older than the installed {current}: use 'node rollback'"
                )
            if order == 0:
                return None
        state = self._trusted()
        index = state.require_index()
        if version in index.all_withdrawn():
            raise WithdrawnReleaseError(f"release {version} was withdrawn")
        if version not in index.releases(self.config.channel):
            raise NoSuchVersionError(
                f"release {version} is not published in channel {self.config.channel!r}"
            )
        for info in infos:
            if info.version == version:
                return info
        data = await self._manifest_bytes(state, self._client(), version, fetched=self._unsaved)
        if persist:
            self._save_trust()
        return UpdateInfo.of(state.manifest(version), data)

    async def download_update(self, update: UpdateInfo) -> UpdatePackage:
        """Fetch and stage ``update``: reused, by delta patches where possible, else in full.

        A release this node cannot install is refused before anything is fetched
        (:class:`IncompatibleReleaseError`)."""
        from .node import ReleaseStager

        self._check_installable(update.manifest)
        client = self._client()
        current = self.store.current_version()
        stager = ReleaseStager(
            self.store,
            client,
            platform=self.config.platform,
            arch=self.config.arch,
            codecs=self._codecs(),
            releases=lambda: self._releases_between(current, update.version),
            identity_key=self.identity_key,
            on_error=lambda message: self.metrics.record_error(message),
            delta_memory_budget=self.config.delta_memory_budget,
            link_bandwidth=self._transport_options.get("rate_limit")
            or self.config.download_rate_limit(),
            peer_held=self._peer_held_versions(),
        )
        use_deltas = self.config.deltas if self._deltas is None else self._deltas
        self._emit("downloading", update.version)
        self.metrics = UpdateMetrics(
            version=update.version, from_version=current, sampler=ResourceSampler()
        )
        self.metrics.start_download(update.version)
        staged = await stager.stage(update.manifest, current, deltas=use_deltas)
        self.metrics.method = staged.method
        for source, error in client.stats.failures:
            self.metrics.record_source_failure(source, error)
        self.metrics.finish_download(staged.bytes_fetched, staged.duration_s)
        self._emit("downloaded", update.version, method=staged.method, bytes=staged.bytes_fetched)
        return UpdatePackage(
            update.version,
            update.manifest,
            update.manifest_bytes,
            staged.tree,
            staged.work,
            staged.method,
            staged.bytes_fetched,
            current,
            staged.reason,
        )

    def _codecs(self) -> dict[str, Any]:
        """Built-in patch codecs plus those plugins register (blackhole_sync_patch_codecs)."""
        from .codecs import codec_table

        return codec_table(
            codec for result in self.plugins.hook.blackhole_sync_patch_codecs() for codec in result
        )

    async def verify_update(self, package: UpdatePackage) -> bool:
        """Check a staged package: its manifest is the trusted one, the release may install on
        this node, and every staged file matches the signed manifest.

        This hash pass exists for hosts that call it (the design's verifyUpdate, possibly long
        after the download, on files that could have changed since): the manager's own update
        path does not call it, since each file was checked as it was staged and the install
        re-hashes the tree once more right before ``current`` moves. Returns True or raises.
        """
        state = self._trusted()
        if state.manifest_bytes(package.version) != package.manifest_bytes:
            raise SecurityError(f"staged manifest of {package.version} is not the trusted one")
        self._check_installable(package.manifest)
        artifacts = package.manifest.artifacts_for(self.config.platform, self.config.arch)
        problems = await anyio.to_thread.run_sync(lambda: check_tree(package.tree, artifacts))
        if problems:
            raise LengthOrHashMismatchError(f"staged {package.version}: {problems[0]}")
        return True

    def installable_problem(self, manifest: ReleaseManifest) -> str | None:
        """Why this node cannot run ``manifest``'s release, or None: no artifact for its
        platform/arch, or excluded by the release's compatibility rules (asked of the
        VersionManager: the version to update from, the protocols the host runs)."""
        platform, arch = self.config.platform, self.config.arch
        if manifest.artifacts and not manifest.artifacts_for(platform, arch):
            return f"release {manifest.version} has no artifact for {platform}/{arch}"
        if not self.versions.check_compatibility(manifest.version):
            compat = manifest.compatibility
            rules = []
            if compat is not None and compat.min_from_version is not None:
                rules.append(f"it updates from {compat.min_from_version} or later")
            if compat is not None and compat.protocol_versions:
                theirs = ", ".join(map(str, compat.protocol_versions))
                ours = ", ".join(map(str, self.protocol_versions())) or "none configured"
                rules.append(f"it speaks protocols {theirs}, this node runs {ours}")
            why = "its compatibility rules exclude this node"
            if rules:
                why += f" ({'; '.join(rules)})"
            return (
                f"release {manifest.version} cannot be installed on "
                f"{self.store.current_version() or 'a new node'}: {why}"
            )
        return None

    def _check_installable(self, manifest: ReleaseManifest) -> None:
        """Raise :class:`IncompatibleReleaseError` (nothing changed) for a release this node
        cannot run (:meth:`installable_problem`)."""
        problem = self.installable_problem(manifest)
        if problem is not None:
            raise IncompatibleReleaseError(problem)

    async def apply_update(self, package: UpdatePackage) -> UpdateResult:
        """Install a verified package atomically (sandbox, migrate, switch, health, commit).

        A failed health check -- or restart plus health checks taking longer than
        ``max_downtime`` -- rolls back and raises :class:`HealthCheckError`. With
        ``backup_before_update = false`` the data backup is skipped unless the install
        changes ``data/``. With ``[regression]`` thresholds the committed version is then
        watched for regressions against the previous version's baseline
        (:meth:`watch_for_regressions`). Held versions this one supersedes are released.
        """
        started = time.monotonic()
        if self._trusted().manifest_bytes(package.version) != package.manifest_bytes:
            raise SecurityError(f"staged manifest of {package.version} is not the trusted one")
        self._check_installable(package.manifest)
        previous = self.store.current_version()
        skipped = self._skipped_releases(previous, package.version)
        if previous is not None and not self.store.is_bad(previous):
            await self.regression_watch().top_up(previous)  # the last good version's baseline
        automatic = self.config.policy.automatic
        self._emit("installing", package.version, method=package.method)
        self.metrics.start_install()
        try:
            # Once started, an install runs to its end (commit or rollback) even when the
            # caller is cancelled: stopping half way would leave the work to recovery.
            with anyio.CancelScope(shield=True):
                await self.store.install(
                    SignedManifest.from_trusted(self._trusted(), package.version),
                    package.tree,
                    platform=self.config.platform,
                    arch=self.config.arch,
                    hooks=_ManagerInstallHooks(self, package.manifest),
                    method=package.method,
                    bytes_fetched=package.bytes_fetched,
                    extra_migrations=[
                        *(
                            m
                            for m in self.versions.get_required_migrations(
                                previous, package.version
                            )
                            if m not in package.manifest.migrations
                        ),
                        *(
                            m
                            for result in self.plugins.hook.blackhole_sync_migrations(
                                from_version=previous, to_version=package.version
                            )
                            for m in result
                        ),
                    ],
                    extra_config_changes=[c for r in skipped for c in r.config_changes],
                    region=self.config.region or None,
                    node_type=self.config.node_type or None,
                    max_downtime=automatic.max_downtime.total_seconds() or None,
                    backup=automatic.backup_before_update,
                )
        except BlackholeSyncError as exc:
            self.metrics.finish_install(False, exc)
            self._save_metrics()
            self._emit("failed", package.version, error=str(exc))
            await self._notify("failed", package.version, error=str(exc))
            raise
        finally:
            _discard(package)
        duration = time.monotonic() - started
        self.metrics.finish_install(True)
        self._save_metrics()
        self.policy_state().forget(package.version)
        result = UpdateResult(
            package.version,
            previous,
            package.method,
            package.bytes_fetched,
            duration,
            package.method_reason,
        )
        self._emit("installed", package.version, result=result.to_dict())
        await self.watch_for_regressions(package.version, previous)
        # a version installed supersedes the held ones it is not below
        self._set_held(
            [v for v in self.held_versions() if compare_versions(v, package.version) > 0]
        )
        if self.store.layout.mirror_dir.is_dir():  # keep the edge cache (`node serve`) current
            from .mirror import export_mirror

            await anyio.to_thread.run_sync(export_mirror, self.node_dir)
        if package.manifest.critical and self.config.policy.critical.notify_after_install:
            await self._notify("installed", package.version, critical=True)
        return result

    def _skipped_releases(self, previous: str | None, target: str) -> list[ReleaseManifest]:
        """Releases of the channel between the installed and the target version, ascending.

        A node that skips releases still gets their schema migrations and configuration
        changes (applied before the target's own), so jumping 1.0 -> 1.2 ends where
        1.0 -> 1.1 -> 1.2 would, and a new node starts from the network's current
        configuration. Only verified manifests count.
        """
        return [m for m in self._releases_between(previous, target) if m.version != target]

    async def update(self, version: str | None = None) -> UpdateResult | None:
        """Check, download, verify and apply now (an explicit request overrides the policy)."""
        info = await self.resolve(version, persist=False)
        try:
            if info is None:
                return None
            package = await self.download_update(info)
            result = await self.apply_update(package)  # checks the tree before the switch
        except SecurityError:
            raise  # a refused update leaves the node exactly as it was, trust/ included
        except BaseException:
            self._save_trust()
            raise
        self._save_trust()
        return result

    def apply_due_config_changes(self) -> list[str]:
        """Apply pending configuration changes whose effective date has come (the agent
        calls this each cycle); the keys applied."""
        keys = self.store.apply_due_config_changes(
            now=self._clock(),
            region=self.config.region or None,
            node_type=self.config.node_type or None,
        )
        if keys:
            self._emit("config-applied", self.store.current_version(), keys=keys)
        return keys

    def release_hold(self, version: str) -> bool:
        """Take ``version`` off the held list (the operator confirmed it); whether it was held."""
        held = self.held_versions()
        if version not in held:
            return False
        self._set_held([v for v in held if v != version])
        return True

    def set_update_policy(self, policy: UpdatePolicy) -> None:
        """Persist ``policy`` to the node's config.toml and use it from now on."""
        from .node import write_config

        self._config = self.config.with_policy(policy)
        write_config(self.node_dir, self._config)

    def get_update_status(self) -> UpdateStatus:
        """The node's status from local state only (no network)."""
        state = self._trusted()
        index = state.index
        current = self.store.current_version()
        available: list[str] = []
        if index is not None:
            # releases this node cannot install are not available to it (`node check` says why)
            for version in self._candidates(state, current):
                manifest = self._stored_manifest(state, version, allow_withdrawn=False)
                if manifest is None or self.installable_problem(manifest) is None:
                    available.append(version)
        installed = tuple(v.version for v in self.store.installed_versions())
        return UpdateStatus(
            current_version=current,
            installed_versions=installed,
            node_public_key=self.node_public_key(),
            channel=self.config.channel,
            state=self.store.get_meta("state") or ("idle" if current else "uninstalled"),
            root_version=state.root.version,
            index_version=None if index is None else index.version,
            index_expires=None if index is None else format_time(index.expires),
            available=tuple(available),
            bad_versions=tuple(v for v in installed + tuple(available) if self.store.is_bad(v)),
            held_versions=tuple(self.held_versions()),
            policy=self.config.policy_summary(),
            metrics=self._last_metrics(),
            last_check=self._last_check(),
            yanked=self.current_withdrawal(),
            pending=self.pending_decision(),
            plugin_failures=self._plugin_failures(),
            coordination=self.coordination_status(),
            transports=self._transport_status(),
        )

    def _transport_status(self) -> dict[str, dict[str, Any]]:
        """The status each installed transport's ``node run`` side left (a small JSON object
        in ``NODE/<name>/status.json``; unreadable or oversized ones are skipped)."""
        out: dict[str, dict[str, Any]] = {}
        for spec in self.plugins.transport_specs():
            try:
                path = self.store.layout.transport_status(spec.name)
                with open(path, "rb") as f:
                    data = f.read(64 * 1024 + 1)
                value = json.loads(data) if len(data) <= 64 * 1024 else None
            except (OSError, ValueError):
                continue
            if isinstance(value, dict):
                out[spec.name] = value
        return out

    def _plugin_failures(self) -> tuple[dict[str, str], ...]:
        """Plugins that failed to load here, or when the node last loaded its plugins."""
        seen = [{"name": f.name, "error": f.error} for f in self.plugins.failures]
        raw = self.store.get_meta("plugin_failures")
        for failure in [] if raw is None else json.loads(raw):
            if failure not in seen and failure["name"] not in self.config.plugins.block:
                seen.append(failure)
        return tuple(seen)

    def pending_decision(self, version: str | None = None) -> dict[str, Any] | None:
        """What the policy would do now about ``version`` (default: the best release newer
        than the current one that is not held), from local state only: ``version``,
        ``action``, ``reason``, ``not_before`` (and ``held``: the versions passed over);
        None when there is nothing newer."""
        from .node import select_update

        state = self._trusted()
        if state.index is None:
            return None
        held = self.held_versions()
        if version is None:
            current = self.store.current_version()
            known = []
            for candidate in self._candidates(state, current):
                manifest = self._stored_manifest(state, candidate, allow_withdrawn=False)
                if candidate not in held and manifest is not None:
                    if self.installable_problem(manifest) is None:
                        known.append(manifest)
            best = select_update(known)
            if best is None:
                return None
        else:
            best = self._stored_manifest(state, version, allow_withdrawn=False)
            if best is None:
                return None
        policy_state = PolicyState.from_meta(self.store.get_meta)
        decision = decide(self.config.policy, best, now=self._clock(), state=policy_state)
        return {
            "version": best.version,
            "action": decision.action,
            "reason": decision.reason,
            "not_before": None
            if decision.not_before is None
            else format_time(decision.not_before),
            "held": held,
        }

    def node_public_key(self) -> str:
        """The node's public key (from ``identity.key.pub``, readable by anyone; else the
        private key file)."""
        from .codecs import load_public_key

        pub = self.store.layout.identity_public_key
        if pub.is_file():
            return load_public_key(pub).hex
        return self.identity_key().public_key.hex

    def _last_check(self) -> dict[str, Any] | None:
        when = self.store.get_meta("last_check")
        if when is None:
            return None
        detail = json.loads(self.store.get_meta("last_check_detail") or "{}")
        return {"time": when, **detail}

    def policy_state(self) -> PolicyState:
        """The policy's per-release state, bound to the store: changes persist at once."""
        return PolicyState.from_meta(self.store.get_meta, self.store.set_meta)

    def _save_metrics(self) -> None:
        self.store.set_meta(
            "last_update_metrics", json.dumps(self.metrics.snapshot(), sort_keys=True, default=str)
        )

    def _last_metrics(self) -> dict[str, Any]:
        if self.metrics.version is not None:
            return self.metrics.snapshot()
        raw = self.store.get_meta("last_update_metrics")
        return {} if raw is None else dict(json.loads(raw))

    async def sync_with_network(self, *, trigger: str = "poll") -> SyncResult:
        """One agent tick: check, let the policy decide, and act on the decision.

        ``trigger`` says what started the check ("poll", "announce", "start"); it is recorded
        with the check (``node status``'s ``last_check``).
        """
        try:
            infos = await self.check_for_updates(trigger=trigger)
        except BlackholeSyncError as exc:
            self.metrics.record_error(str(exc))
            return SyncResult((), None, error=str(exc))
        held = set(self.held_versions())
        infos = [i for i in infos if i.version not in held]
        yanked = self.current_withdrawal()
        if yanked is not None:
            # A yank never moves a node down: only upward, to the newest valid release.
            infos.sort(key=lambda i: version_key(i.version), reverse=True)
            if not infos:
                log.warning(
                    "the running version %s was withdrawn (%s) and no newer release is "
                    "available: staying on it",
                    yanked["version"],
                    yanked["reason"] or "no reason given",
                )
                self._emit("withdrawn", yanked["version"], reason=yanked["reason"])
        followed = await self.follow_downgrade()
        if followed is not None:
            return SyncResult(tuple(infos), None, followed)
        await self._roll_back_halted()
        infos, waiting = self._coordination_gate(infos)
        if waiting is not None:
            self._emit("decision", waiting.version, action="wait", reason=waiting.reason)
            if not infos:
                return SyncResult((), waiting)
        if not infos:
            return SyncResult((), None)
        info = infos[0]
        decision = decide(self.config.policy, info, now=self._clock(), state=self.policy_state())
        automatic = self.config.policy.mode == "automatic"
        if decision.action == "install" and automatic and decision.require_health_check:
            if not self.health_check_applies(info.manifest):
                decision = attrs.evolve(
                    decision,
                    action="skip",
                    reason=(
                        f"no health check applies to {info.version} and the policy requires "
                        "one (require_health_check = true): configure [commands] health, or "
                        "install it with `node update`"
                    ),
                    not_before=None,
                )
        self._emit("decision", info.version, action=decision.action, reason=decision.reason)
        installed: UpdateResult | None = None
        if decision.notify:
            await self._notify(
                "available", info.version, action=decision.action, reason=decision.reason
            )
            self.policy_state().mark_notified(info.version)
        if decision.action == "download":
            package = await self.download_update(info)
            self.policy_state().mark_downloaded(info.version)
            _discard(package)
        elif decision.action == "install":
            package = await self.download_update(info)
            try:
                installed = await self.apply_update(package)
            except HealthCheckError as exc:  # rolled back: the network hears it failed here
                await self.health_report(info.version, False, reason=str(exc)[:200])
                raise
            if decision.notify_after_install and not info.critical:
                await self._notify("installed", info.version)
        return SyncResult(tuple(infos), decision, installed)

    def health_check_applies(self, manifest: ReleaseManifest) -> bool:
        """Whether a health check runs after a switch to ``manifest``'s release: its own,
        ``[commands] health`` or a plugin's (``blackhole_sync_health_checks``)."""
        if manifest.health is not None or self.config.health_command() is not None:
            return True
        results = self.plugins.hook.blackhole_sync_health_checks(node_dir=self.node_dir)
        return any(list(r) for r in results)

    def current_withdrawal(self) -> dict[str, str] | None:
        """``{"version", "reason"}`` when the running version was withdrawn (yanked) in the
        trusted index, else None. A yank is shown, never acted on downward."""
        current = self.store.current_version()
        index = self._trusted().index
        if current is None or index is None:
            return None
        reason = index.withdrawal(current)
        return None if reason is None else {"version": current, "reason": reason}

    async def _notify(self, kind: str, version: str | None, **detail: Any) -> None:
        from .notify import channels_from_config, plugin_channels

        event = UpdateEvent(kind=kind, version=version, detail=detail)
        names = self.config.policy.manual.notification_channels
        offered = plugin_channels(self.plugins, self.config.to_dict())
        for channel in channels_from_config(names, offered):
            try:
                await channel.notify(event)
            except Exception:  # a notification must never break an update
                log.exception("notification channel %s failed", getattr(channel, "name", "?"))

    async def broadcast_update_status(self, status: UpdateStatus | None = None) -> bytes:
        """Sign this node's status and spread it: over the peer network the manager was given
        (``peers``: gossip, IPFS pubsub) and to the ``blackhole_sync_broadcast_status`` hook's
        implementations. Returns the signed bytes."""
        status = status or self.get_update_status()
        seq = int(self.store.get_meta("status_seq") or "0") + 1
        self.store.set_meta("status_seq", str(seq))
        key = self.identity_key()
        now = self._clock()
        doc = NodeStatusDoc(
            node_id=key.public_key.hex,
            network_id=self._trusted().root.network_id,
            seq=seq,
            expires=now + _dt.timedelta(hours=1),
            current_version=status.current_version,
            state=status.state,
            since=self._current_since(),
            held=tuple(status.installed_versions[-NodeStatusDoc.MAX_HELD :]),
            fork_id=self._fork_id(),
        )
        envelope = Envelope.sign(doc.to_dict(), [key])
        if self._peers is not None and self._peers.active:
            await self._peers.announce("status", envelope.raw)
        self.plugins.hook.blackhole_sync_broadcast_status(status=doc.to_dict(), signed=envelope.raw)
        return envelope.raw

    # -- network coordination (network/coordinator.py holds the rules) -----------------------

    async def _refresh_coordination(self, client: RepositoryClient, state: TrustedState) -> None:
        """Fetch and verify the coordination documents the (new) trusted index lists."""
        from .network.governance import refresh_coordination

        if self.read_only:
            return
        self._coordination = await refresh_coordination(
            client, self.trust, state.index, state.root, state.reference_time
        )
        self._coordinator = None

    def chain_height(self) -> int | None:
        """The host's chain height (the ``blackhole_sync_chain_height`` hook), None without."""
        answer = self.plugins.hook.blackhole_sync_chain_height(node_dir=self.node_dir)
        return None if answer is None else int(answer)

    def coordinator(self) -> Coordinator:
        """This node's coordination state (consensus, rollouts, halts), from its verified
        coordination documents and what its state database keeps."""
        from .network.coordinator import Coordinator
        from .network.governance import load_coordination

        if self._coordinator is None:
            state = self._trusted()
            index = state.index
            docs = self._coordination or load_coordination(
                self.trust, index, state.root, self._clock()
            )
            digests = {} if index is None else {
                v: m.sha256 for v, m in index.all_releases().items()
            }  # fmt: skip
            self._coordinator = Coordinator(
                self.store, self.identity_key(), state.root, docs, digests=digests,
                clock=self._clock, height=self.chain_height,
                protocol_versions=self.protocol_versions(), translators=self.translators(),
            )  # fmt: skip
        return self._coordinator

    def translators(self) -> list[Any]:
        """The protocol message translators plugins register."""
        return [
            t for found in self.plugins.hook.blackhole_sync_protocol_translators() for t in found
        ]

    def compatibility_manager(self) -> CompatibilityManager:
        """The design's CompatibilityManager for this node: its protocol versions (at least
        the one it runs), activations, the plugins' translators, verified deprecations."""
        from .network import CompatibilityManager

        compat = self.coordinator().compatibility()
        if compat is not None:
            return compat
        return CompatibilityManager(
            self._trusted().root.network_id, (), translators=self.translators()
        )

    def coordination_status(self) -> dict[str, Any] | None:
        """Pending activations, proposals, rollouts, halts, deprecations (``node status``)."""
        try:
            coordinator = self.coordinator()
        except (BlackholeSyncError, OSError) as exc:
            return {"error": str(exc)}
        if not coordinator.docs.to_dict()["proposals"] and not coordinator.docs.raw:
            return None
        return coordinator.status()

    def _coordination_gate(
        self, infos: list[UpdateInfo]
    ) -> tuple[list[UpdateInfo], Decision | None]:
        """Split the candidates by what network coordination says: releases whose proposal
        failed or whose rollout halted are dropped; releases waiting for their activation or
        for this node's phase are held back (the first one's ``wait`` decision is returned);
        the rest go to the policy, best first. The policy's ``wait_for_network_consensus``
        hears each release's consensus here."""
        coordinator = self.coordinator()
        kept: list[UpdateInfo] = []
        waiting: Decision | None = None
        for info in infos:
            self.policy_state().set_consensus(info.version, coordinator.consensus_for(info.version))
            gate = coordinator.release_gate(info.version, info.manifest.type)
            if gate is None:
                kept.append(info)
            elif gate.action == "skip":
                log.info("not installing %s: %s", info.version, gate.reason)
            elif waiting is None:
                waiting = Decision("wait", gate.reason, info.version, not_before=gate.not_before)
        return kept, waiting

    async def _roll_back_halted(self) -> None:
        """With ``[network] rollback_on_halt``, leave a current version whose rollout halted."""
        current = self.store.current_version()
        if current is None or not self.config.network.rollback_on_halt:
            return
        reason = self.coordinator().halts().get(current)
        if reason is None:
            return
        try:
            target = await self.rollback()
        except NoSuchVersionError as exc:
            log.warning("rollout of %s halted, but there is nothing to roll back to: %s",
                        current, exc)  # fmt: skip
            return
        self._emit("rolled-back", current, reason=f"rollout halted: {reason}", to=target)

    def _peer_held_versions(self) -> frozenset[str]:
        """Versions whose blobs peers report holding (the agent's network view): the update
        optimizer counts their bytes as cheaper than origin bytes."""
        try:
            return frozenset(self.coordinator().view.held_versions())
        except (BlackholeSyncError, OSError):
            return frozenset()

    def _current_since(self) -> _dt.datetime | None:
        current = self.store.current_version()
        info = next((v for v in self.store.installed_versions() if v.version == current), None)
        if info is None or not info.installed_at:
            return None
        return parse_time(info.installed_at)

    def _fork_id(self) -> str | None:
        try:
            compat = self.coordinator().compatibility()
        except (BlackholeSyncError, OSError):
            return None
        return None if compat is None else compat.fork_id().hash

    async def health_report(self, version: str, healthy: bool, **detail: Any) -> bytes | None:
        """Sign and spread this node's health report on ``version`` (after installing it);
        None when the index does not list it."""
        try:
            payload = self.coordinator().health_report(version, healthy, detail)
        except LookupError:
            return None
        if self._peers is not None and self._peers.active:
            await self._peers.announce("health", payload)
        return payload

    async def follow_downgrade(self) -> UpdateResult | None:
        """Follow a downgrade the trusted index lists and the release threshold signed:
        return to its version, keeping ``data/`` (whose schema must be at least its floor).

        A version below the current one is otherwise never taken (a rollback attack); this
        document is the deliberate exception. None when there is nothing to follow.
        """
        from .node import schema_version_of

        current = self.store.current_version()
        coordinator = self.coordinator()
        if current is None:
            return None
        followed = set(json.loads(self.store.get_meta("downgrades_followed") or "[]"))
        for target, doc in sorted(coordinator.docs.downgrades.items(),
                                  key=lambda kv: version_key(kv[0]), reverse=True):  # fmt: skip
            key = f"{target}@{doc.version}"
            if key in followed or compare_versions(target, current) >= 0:
                continue
            schema = schema_version_of(self.store.app_db_path)
            if schema < doc.schema_floor:
                raise MigrationError(
                    f"downgrade to {target}: the data schema {schema} is below its floor "
                    f"{doc.schema_floor}"
                )
            started = time.monotonic()
            if self.store.is_installed(target):
                await self.check_installed_tree(target)  # re-hashed before it goes live
                self.store.rollback(target, restore_data=False)
                method, fetched = "installed", 0
            else:
                state = self._trusted()
                data = await self._manifest_bytes(state, self._client(), target)
                package = await self.download_update(UpdateInfo.of(state.manifest(target), data))
                await self.verify_update(package)
                result = await self.apply_update(package)
                method, fetched = result.method, result.bytes_fetched
            followed.add(key)
            self.store.set_meta("downgrades_followed", json.dumps(sorted(followed)))
            self._set_held([*self.held_versions(), current])
            self._emit("downgraded", target, from_version=current, reason=doc.reason)
            return UpdateResult(target, current, method, fetched, time.monotonic() - started)
        return None

    async def confirm_current_health(self) -> str:
        """The agent's post-install watch over the current version (no crash loop).

        A version is marked good only once its health window (the release's ``health.window``
        or ``[commands] health_window``) has passed with its health check passing. Each failed
        check counts one failed start; after :data:`MAX_START_FAILURES` in a row the version is
        abandoned: rolled back and marked bad, so it is never retried automatically.
        Returns "none", "good", "watching", "unhealthy" or "abandoned".
        """
        current = self.store.current_version()
        if current is None:
            return "none"
        info = next((v for v in self.store.installed_versions() if v.version == current), None)
        if info is None or self.store.version_state(current) == "good":
            return "good"
        manifest = self.store.stored_manifest(current)
        command = manifest.health or self.config.health_command()
        try:
            await _ManagerInstallHooks(self, manifest).health(current, manifest)
        except BlackholeSyncError as exc:
            failures = self.store.record_start_failure(current)
            self._emit("unhealthy", current, failures=failures, error=str(exc))
            if failures < MAX_START_FAILURES:
                return "unhealthy"
            # marked bad first: when the way back is refused (a damaged target nothing can
            # re-fetch) the node stays on it, and the next cycle tries again
            self.store.mark_bad(current, f"failed {failures} health checks in a row: {exc}")
            target = await self.rollback(hold=False)
            self._emit("abandoned", current, rolled_back_to=target)
            await self._notify("rolled-back", current, reason=str(exc), to=target)
            return "abandoned"
        window = (command.window if command is not None else None) or self.config.health_window
        installed = parse_time(info.installed_at) if info.installed_at else None
        if installed is not None and (self._clock() - installed).total_seconds() < window:
            return "watching"
        self.store.mark_good(current)
        self._emit("healthy", current)
        return "good"

    def manifest_of(self, version: str) -> ReleaseManifest:
        """The verified manifest of ``version``: trusted metadata, or the installed copy."""
        try:
            return self._trusted().manifest(version)
        except KeyError:
            return self.store.stored_manifest(version)

    # -- local operations ---------------------------------------------------------------------

    def identity_key(self) -> PrivateKey:
        return load_private_key(self.store.layout.identity_key)

    async def rollback(self, version: str | None = None, *, hold: bool = True) -> str:
        """Go back to ``version`` (default: the RollbackManager's first choice); with
        ``hold`` (an operator's rollback) the version left is held.

        The target's tree is re-hashed against its signed manifest first (no cached
        "verified" stamp). A damaged tree is re-fetched into a fresh tree through the normal
        staging path when a source delivers it; otherwise the rollback is refused
        (:class:`LengthOrHashMismatchError`) with the node left where it is. The agent does
        not reinstall a held version by itself; an explicit update or confirmation does.
        """
        left = self.store.current_version()
        if version is None:
            choices = self.rollbacks.get_rollback_versions()
            if not choices:
                raise NoSuchVersionError("no installed version to roll back to")
            version = choices[0]
        if self.rollbacks is self.store.rollbacks:
            # the store re-hashes the target itself right before it switches
            try:
                result = await self.rollbacks.perform_rollback(version)
            except LengthOrHashMismatchError as exc:
                await self._repair_or_refuse(version, exc)
                result = await self.rollbacks.perform_rollback(version)
        else:
            await self.check_installed_tree(version)
            result = await self.rollbacks.perform_rollback(version)
        if hold and left is not None and left != result.version:
            self._set_held([*self.held_versions(), left])
        self._emit("rolled-back", result.version)
        return result.version

    async def check_installed_tree(self, version: str, *, repair: bool = True) -> None:
        """Re-hash ``versions/<version>`` against its stored signed manifest; a damaged tree
        is re-fetched (``repair``) when a source delivers it, else
        :class:`LengthOrHashMismatchError` names the first difference."""
        problems = await anyio.to_thread.run_sync(self.store.verify_installed, version)
        if not problems:
            return
        damaged = LengthOrHashMismatchError(
            f"installed tree of {version} does not match its signed manifest: {problems[0]}"
        )
        if not repair:
            raise damaged
        await self._repair_or_refuse(version, damaged)

    async def _repair_or_refuse(self, version: str, damaged: LengthOrHashMismatchError) -> None:
        try:
            await self.repair_installed_tree(version)
        except (OSError, BlackholeSyncError) as exc:
            raise LengthOrHashMismatchError(
                f"{damaged}; re-fetching it failed ({exc}): the node stays where it is"
            ) from exc

    async def repair_installed_tree(self, version: str) -> None:
        """Re-fetch the installed, non-current ``version`` into a fresh tree (the normal
        staging path: reused from the current tree where identical, else downloaded and
        verified) and put it in place of the damaged one. Its manifest must still verify
        against the trusted metadata."""
        from .node import ReleaseStager

        state = self._trusted()
        manifest = self._stored_manifest(state, version)
        if manifest is None:
            raise LengthOrHashMismatchError(
                f"the stored manifest of {version} no longer verifies: it cannot be re-fetched"
            )
        platform, arch = self.store.state.platform_arch(version) or (
            self.config.platform,
            self.config.arch,
        )
        stager = ReleaseStager(
            self.store,
            self._client(),
            platform=platform,
            arch=arch,
            codecs={},
            releases=list,
            identity_key=self.identity_key,
            delta_memory_budget=self.config.delta_memory_budget,
        )
        self._emit("repairing", version)
        staged = await stager.stage(manifest, self.store.current_version(), deltas=False)
        try:
            await anyio.to_thread.run_sync(self.store.replace_installed_tree, version, staged.tree)
        finally:
            shutil.rmtree(staged.work, ignore_errors=True)
            shutil.rmtree(staged.tree, ignore_errors=True)
        self._emit("repaired", version, bytes=staged.bytes_fetched)

    # -- regression detection ------------------------------------------------------------------

    async def sample_metrics(self, version: str) -> dict[str, float]:
        """One sample of the running ``version``'s metrics: the ``blackhole_sync_metrics``
        hook's answers and ``[commands] metrics`` merged (the first answer for a name wins);
        ``{}`` with no source. A source that fails raises :class:`HealthCheckError`."""
        from .node import parse_metrics, run_metrics_command

        sample: dict[str, float] = {}
        try:
            answers = self.plugins.hook.blackhole_sync_metrics(
                node_dir=self.node_dir, version=version
            )
        except Exception as exc:  # a plugin's failure is a failed sample
            raise HealthCheckError(f"metrics hook failed: {type(exc).__name__}: {exc}") from exc
        for answer in answers:
            for name, value in parse_metrics(answer, "blackhole_sync_metrics").items():
                sample.setdefault(name, value)
        argv = self.config.commands.metrics
        if argv:
            tree = self.store.version_dir(version)
            measured = await run_metrics_command(
                argv,
                cwd=tree if tree.is_dir() else self.node_dir,
                env=_command_env(self.store, version),
                timeout=float(self.config.commands.health_timeout),
            )
            for name, value in measured.items():
                sample.setdefault(name, value)
        return sample

    def regression_watch(self) -> RegressionWatch:
        """The node's :class:`~blackhole_sync.node.RegressionWatch` (baseline in the state
        database, samples from :meth:`sample_metrics`)."""
        from .node import MetricBaseline, RegressionWatch

        setter = None if self.read_only else self.store.set_meta
        baseline = MetricBaseline(self.store.get_meta, setter)
        return RegressionWatch(self.node_dir, self.config.regression, baseline, self.sample_metrics)

    async def record_baseline_sample(self) -> int:
        """Add one metric sample of the current version to its baseline when it is good
        (the agent calls this each cycle); the samples now kept (0: nothing recorded)."""
        current = self.store.current_version()
        if current is None or self.store.version_state(current) != "good":
            return 0
        return await self.regression_watch().record(current)

    async def watch_for_regressions(self, version: str, previous: str | None) -> None:
        """After a switch: watch ``version``'s metrics for ``[regression] watch_seconds``
        (:meth:`UpdateHealthMonitor.monitor_service_health`) against ``previous``'s baseline.

        On a regression, with ``[policy.critical] emergency_rollback`` on, roll back to
        ``previous`` (its tree re-hashed first), mark ``version`` bad and raise
        :class:`HealthCheckError`; with it off, record the regression and stay.
        """
        if previous is None:
            return
        decision = await self.regression_watch().watch(version, previous)
        if decision is None or not decision.rollback:
            return
        reason = f"regression after the switch to {version}: {decision.reason}"
        self._emit("regression", version, reason=reason)
        if not self.config.policy.critical.emergency_rollback:
            log.warning("%s (emergency_rollback = false: staying on it)", reason)
            self.store.add_history("regression", previous, version, error=reason)
            return
        target = await self.rollback(previous, hold=False)
        self.store.mark_bad(version, reason)
        await self._notify("rolled-back", version, reason=reason, to=target)
        raise HealthCheckError(f"{reason}; rolled back to {target}")


class _ManagerInstallHooks:
    """The manager's answers to the install transaction (:class:`InstallHooks`).

    Rollback points and state restores go to the manager's RollbackManager (the host's when it
    gave one); the self-test runs the release's (or config's) command in the sandbox and every
    plugin self-test (``blackhole_sync_self_tests``); restart and health use the plugin hooks
    and the configured commands.
    """

    def __init__(self, manager: UpdateManager, manifest: ReleaseManifest) -> None:
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
        from .node import run_sandbox_test

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
            from .node import run_restart_command

            await run_restart_command(
                list(argv),
                timeout=float(manager.config.commands.health_timeout),
                env=_command_env(manager.store, version),
            )

    async def health(self, version: str, manifest: ReleaseManifest) -> None:
        from .node import require_healthy

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


def _discard(package: UpdatePackage) -> None:
    shutil.rmtree(package.staging, ignore_errors=True)
    shutil.rmtree(package.tree, ignore_errors=True)


def _file_sha256(path: Path) -> str:
    return hash_file(path)[0]


def _command_env(store: NodeStore, version: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BLACKHOLE_SYNC_NODE"] = str(store.layout.root)
    env["BLACKHOLE_SYNC_VERSION"] = version
    env["BLACKHOLE_SYNC_VERSION_DIR"] = str(store.layout.version_dir(version))
    return env


def init_node(
    path: str | os.PathLike[str],
    *,
    root_bytes: bytes,
    sources: Sequence[str],
    channel: str = "stable",
    region: str = "",
    node_type: str = "",
) -> PrivateKey:
    """Make a node directory that trusts ``root_bytes`` and follows ``sources``.

    The root must verify with its own root threshold (else :class:`SecurityError`, nothing
    written); the directory must not exist or be empty (else :class:`ConflictError`). Writes
    the store layout, a commented ``config.toml`` with every default, and the node's identity
    key (``identity.key``, 0600). No network access. Returns the identity key.
    """
    from .codecs import write_key_pair
    from .errors import ConflictError
    from .node import NodeAttributes, NodeConfig, default_config_text

    node = Path(path)
    if node.exists() and (not node.is_dir() or any(node.iterdir())):
        raise ConflictError(f"{node} exists and is not an empty directory")
    TrustedState(root_bytes)  # refuse a root that does not verify before writing anything
    config_text = default_config_text(sources=list(sources), channel=channel)
    if region or node_type:
        config = NodeConfig.from_toml(config_text).with_updates(
            node=NodeAttributes(region=region, node_type=node_type)
        )
        config_text = config.to_toml()
    store = NodeStore.create(node, root_bytes=root_bytes, config_text=config_text)
    try:
        return write_key_pair(store.layout.identity_key)
    finally:
        store.close()


class NodeUpdateClient:
    """The design's node-side loop: check, select, download, verify, apply, broadcast.

    A thin composition over an open :class:`UpdateManager`; the store's install transaction
    creates the rollback point and rolls back by itself when a step fails, so a failure here
    leaves the node on its previous version.
    """

    def __init__(self, manager: UpdateManager) -> None:
        self.update_manager = manager
        self.version_manager = manager.versions
        self.rollback_manager = manager.rollbacks

    def select_update(self, updates: Sequence[UpdateInfo]) -> UpdateInfo | None:
        """Highest priority first, then the highest version (the design's selectUpdate)."""
        from .node import select_update

        return select_update(updates)

    async def check_and_update(self) -> UpdateResult | None:
        """Install the best available update now; None when the node is up to date."""
        updates = await self.update_manager.check_for_updates()
        selected = self.select_update(updates)
        if selected is None:
            return None
        package = await self.update_manager.download_update(selected)
        await self.update_manager.verify_update(package)
        result = await self.update_manager.apply_update(package)
        await self.update_manager.broadcast_update_status()
        return result
