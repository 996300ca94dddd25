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

from . import protocols
from ._fsutil import hash_file
from .clock import utcnow
from .documents import (
    Envelope,
    NodeStatusDoc,
    PrivateKey,
    ReleaseManifest,
    TrustedState,
    VersionManager,
    compare_versions,
    format_time,
    load_private_key,
    parse_time,
    sort_versions,
    version_key,
)
from .errors import (
    BlackholeSyncError,
    IncompatibleReleaseError,
    LengthOrHashMismatchError,
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
    TransportPool,
    make_plugin_manager,
)
from .metrics import ResourceSampler, UpdateMetrics
from .node import (
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
    from .network import PeerNetwork

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
    ) -> None:
        """Open with ``async with``. ``version_manager`` and ``rollback_manager`` replace the
        library's own (instances, or factories called once the node store is open: the
        version manager's with this manager, the rollback manager's with the store); see
        :mod:`blackhole_sync.protocols` for what each is asked and when."""
        self.node_dir = Path(node_dir)
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

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> UpdateManager:
        self._store = await anyio.to_thread.run_sync(
            lambda: NodeStore.open(self.node_dir, lock_timeout=self._lock_timeout)
        )
        try:
            if self._config is None:
                self._config = NodeConfig.from_file(self._store.layout.config)
            if self._plugins is None:
                self._plugins = make_plugin_manager(load_entrypoints=True)
            # the shared transport options (transport.STANDARD_OPTIONS); explicit ones win
            options: dict[str, Any] = {"rate_limit": self.config.bandwidth_limit or None}
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
                self._version_manager = VersionManager(self.store, self._known_manifests)
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
        node (failed health checks) are left out.
        """
        state = self._load_state(self._clock())
        client = self._client()
        self._emit("checking")
        await client.refresh(state)
        current = self.store.current_version()
        infos: list[UpdateInfo] = []
        fetched: list[tuple[str, bytes]] = []
        for version in self._candidates(state, current):
            data = await self._manifest_bytes(state, client, version, fetched=fetched)
            infos.append(UpdateInfo.of(state.manifest(version), data))
        # persisted only once every listed manifest verified: a refusal leaves trust/ as it was
        self._state = state
        self._unsaved = fetched
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
        below the current one is a downgrade and raises :class:`RollbackError`.
        """
        infos = await self.check_for_updates(persist=persist)
        current = self.store.current_version()
        if version is None:
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
        """Fetch and stage ``update``: reused, by delta patches where possible, else in full."""
        from .node import ReleaseStager

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

    def _check_installable(self, manifest: ReleaseManifest) -> None:
        """Refuse a release this node cannot run: no artifact for its platform/arch, or
        excluded by the release's compatibility rules (asked of the VersionManager)."""
        platform, arch = self.config.platform, self.config.arch
        if manifest.artifacts and not manifest.artifacts_for(platform, arch):
            raise IncompatibleReleaseError(
                f"release {manifest.version} has no artifact for {platform}/{arch}"
            )
        if not self.versions.check_compatibility(manifest.version):
            raise IncompatibleReleaseError(
                f"release {manifest.version} cannot be installed on "
                f"{self.store.current_version() or 'a new node'}: its compatibility rules "
                "exclude this node"
            )

    async def apply_update(self, package: UpdatePackage) -> UpdateResult:
        """Install a verified package atomically (sandbox, migrate, switch, health, commit).

        A failed health check rolls back and raises :class:`HealthCheckError`.
        """
        started = time.monotonic()
        if self._trusted().manifest_bytes(package.version) != package.manifest_bytes:
            raise SecurityError(f"staged manifest of {package.version} is not the trusted one")
        self._check_installable(package.manifest)
        previous = self.store.current_version()
        skipped = self._skipped_releases(previous, package.version)
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
        self._set_held([v for v in self.held_versions() if v != result.version])
        return result

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
            available = self._candidates(state, current)
        installed = tuple(v.version for v in self.store.installed_versions())
        return UpdateStatus(
            current_version=current,
            installed_versions=installed,
            node_public_key=self.identity_key().public_key.hex,
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
        )

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
        if not infos:
            return SyncResult((), None)
        info = infos[0]
        decision = decide(self.config.policy, info, now=self._clock(), state=self.policy_state())
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
            installed = await self.apply_update(package)
            if decision.notify_after_install and not info.critical:
                await self._notify("installed", info.version)
        return SyncResult(tuple(infos), decision, installed)

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
        )
        envelope = Envelope.sign(doc.to_dict(), [key])
        if self._peers is not None and self._peers.active:
            await self._peers.announce("status", envelope.raw)
        self.plugins.hook.blackhole_sync_broadcast_status(status=doc.to_dict(), signed=envelope.raw)
        return envelope.raw

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
            target = await self.rollback()
            self.store.mark_bad(current, f"failed {failures} health checks in a row: {exc}")
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

    async def rollback(self, version: str | None = None) -> str:
        """Go back to ``version`` (default: the RollbackManager's first choice); the version
        left is held.

        The target's tree is re-hashed against its signed manifest first (no cached
        "verified" stamp): a damaged tree is refused with the node left where it is. The
        agent does not reinstall a held version by itself; an explicit update does.
        """
        left = self.store.current_version()
        if version is None:
            choices = self.rollbacks.get_rollback_versions()
            if not choices:
                raise NoSuchVersionError("no installed version to roll back to")
            version = choices[0]
        await self.check_installed_tree(version)
        result = await self.rollbacks.perform_rollback(version)
        if left is not None and left != result.version:
            self._set_held([*self.held_versions(), left])
        self._emit("rolled-back", result.version)
        return result.version

    async def check_installed_tree(self, version: str) -> None:
        """Re-hash ``versions/<version>`` against its stored signed manifest; raise
        :class:`LengthOrHashMismatchError` naming the first difference."""
        problems = await anyio.to_thread.run_sync(self.store.verify_installed, version)
        if problems:
            raise LengthOrHashMismatchError(
                f"installed tree of {version} does not match its signed manifest: {problems[0]}"
            )


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
    from .documents import write_key_pair
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
