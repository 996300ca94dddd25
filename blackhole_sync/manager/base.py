"""The state every part of the update manager shares: the open node, its trust and plugins.

:class:`ManagerBase` opens the node (its lock, store, configuration, plugins and transports),
loads and saves the trusted state, and reports events. The operations are in the parts built
on it: :mod:`.core` (check, download, verify, apply, roll back, status), :mod:`.coordination`
(the network side) and :mod:`.installed` (the installed tree and the regression watch).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .. import protocols
from ..clock import utcnow
from ..documents import (
    TrustedState,
    compare_versions,
    newer_versions,
    sort_versions,
)
from ..errors import (
    SecurityError,
)
from ..events import UpdateEvent

# Imported where used, not here: the fetch clients (anyio), the metrics sampler (psutil), the
# network side and the key-file codecs. ``node status`` opens the node without an event loop
# (``with UpdateManager(...)``) and loads none of them.
if TYPE_CHECKING:
    from ..documents import PrivateKey, ReleaseManifest
    from ..fetch import (
        PluginHost,
        ProgressEvent,
        RepositoryClient,
        Transport,
        TransportPool,
    )
    from ..metrics import UpdateMetrics
    from ..network import PeerNetwork
    from ..network.coordinator import Coordinator
    from ..node import (
        NodeConfig,
        NodeStore,
        PolicyState,
        TrustStore,
    )
    from ..protocols import UpdateInfo, UpdatePackage, UpdateResult, UpdateStatus


__all__ = ["MAX_START_FAILURES", "ManagerBase"]

log = logging.getLogger("blackhole_sync.manager")

#: Consecutive failed health checks after which the agent abandons a version.
MAX_START_FAILURES = 3


class ManagerBase:
    """What :class:`~blackhole_sync.manager.UpdateManager` is made of before its operations."""

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
        | Callable[[Any], protocols.VersionManager]
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
        self._metrics: UpdateMetrics | None = None
        #: Releases the last check found that this node cannot install: version -> why.
        self.not_installable: dict[str, str] = {}
        self._coordination: Any = None  # network.governance.CoordinationDocs of the last check
        self._coordinator: Coordinator | None = None

    def _open_store(self) -> NodeStore:
        from ..node import NodeStore

        return NodeStore.open(
            self.node_dir, lock_timeout=self._lock_timeout, read_only=self.read_only
        )

    def _open(self, store: NodeStore, *, transports: bool) -> None:
        """The rest of opening, once the store is open: configuration, plugins, transports."""
        from ..fetch import make_plugin_manager
        from ..node import NodeConfig

        self._store = store
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
            if not transports:
                return
            from ..fetch import TransportPool

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

    async def __aenter__(self) -> Self:
        import anyio.to_thread

        self._open(await anyio.to_thread.run_sync(self._open_store), transports=True)
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
            import anyio

            with anyio.CancelScope(shield=True):
                await self._pool.aclose()
            self._pool = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Self:
        """Open without an event loop and without transports, for what reads or changes
        local state only (:meth:`get_update_status`, the policy state, held versions): a
        command such as ``node status`` then loads neither anyio nor a transport. Operations
        that fetch need ``async with``."""
        self._open(self._open_store(), transports=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def transports(self) -> dict[str, Transport]:
        """The registered transports that run under this event loop, by name (the manager's
        guarded instances: started on first use, closed with the manager)."""
        return {transport.name: transport for transport in self._transport_pool().usable()}

    def _transport_pool(self) -> TransportPool:
        if self._pool is None:
            if self._store is not None:
                raise RuntimeError(
                    "UpdateManager was opened for local state only: use 'async with'"
                )
            raise RuntimeError("UpdateManager is not open: use 'async with'")
        return self._pool

    @property
    def metrics(self) -> UpdateMetrics:
        """The metrics of the current (or last) update of this manager."""
        if self._metrics is None:
            from ..metrics import UpdateMetrics

            self._metrics = UpdateMetrics()
        return self._metrics

    @metrics.setter
    def metrics(self, value: UpdateMetrics) -> None:
        self._metrics = value

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
                from ..documents import VersionManager

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
        from ..fetch import ClientLimits, RepositoryClient

        return RepositoryClient(
            self.config.sources,
            self._transport_pool(),
            limits=ClientLimits(),
            progress=self._on_progress,
            peers_first=self.config.peers_first,
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
        for version in newer_versions(index.releases(self.config.channel), current):
            if self.store.is_bad(version):
                continue
            out.append(version)
        return out

    def _codecs(self) -> dict[str, Any]:
        """Built-in patch codecs plus those plugins register (blackhole_sync_patch_codecs)."""
        from ..codecs import codec_table

        return codec_table(
            codec for result in self.plugins.hook.blackhole_sync_patch_codecs() for codec in result
        )

    def node_public_key(self) -> str:
        """The node's public key (from ``identity.key.pub``, readable by anyone; else the
        private key file)."""
        from ..codecs import load_public_key

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
        from ..node import PolicyState

        return PolicyState.from_meta(self.store.get_meta, self.store.set_meta)

    def _save_metrics(self) -> None:
        self.store.set_meta(
            "last_update_metrics", json.dumps(self.metrics.snapshot(), sort_keys=True, default=str)
        )

    def _last_metrics(self) -> dict[str, Any]:
        if self._metrics is not None and self._metrics.version is not None:
            return self._metrics.snapshot()
        raw = self.store.get_meta("last_update_metrics")
        return {} if raw is None else dict(json.loads(raw))

    async def _notify(self, kind: str, version: str | None, **detail: Any) -> None:
        from ..notify import channels_from_config, plugin_channels

        event = UpdateEvent(kind=kind, version=version, detail=detail)
        names = self.config.policy.manual.notification_channels
        offered = plugin_channels(self.plugins, self.config.to_dict())
        for channel in channels_from_config(names, offered):
            try:
                await channel.notify(event)
            except Exception:  # a notification must never break an update
                log.exception("notification channel %s failed", getattr(channel, "name", "?"))

    def manifest_of(self, version: str) -> ReleaseManifest:
        """The verified manifest of ``version``: trusted metadata, or the installed copy."""
        try:
            return self._trusted().manifest(version)
        except KeyError:
            return self.store.stored_manifest(version)

    def identity_key(self) -> PrivateKey:
        from ..codecs import load_private_key

        return load_private_key(self.store.layout.identity_key)

    if TYPE_CHECKING:
        # The operations of UpdateManager (core.py) the other parts call; declared here so
        # each part type-checks on its own, without importing the class that combines them.
        async def _manifest_bytes(
            self,
            state: TrustedState,
            client: RepositoryClient,
            version: str,
            *,
            fetched: list[tuple[str, bytes]] | None = None,
        ) -> bytes: ...
        async def check_for_updates(self, *, trigger: str = "poll") -> list[UpdateInfo]: ...
        async def download_update(self, update: UpdateInfo) -> UpdatePackage: ...
        async def verify_update(self, package: UpdatePackage) -> bool: ...
        async def apply_update(self, package: UpdatePackage) -> UpdateResult: ...
        async def rollback(self, version: str | None = None, *, hold: bool = True) -> str: ...
        def get_update_status(self) -> UpdateStatus: ...
        async def check_installed_tree(self, version: str, *, repair: bool = True) -> None: ...
        async def repair_installed_tree(self, version: str) -> None: ...
        async def broadcast_update_status(self, status: UpdateStatus | None = None) -> bytes: ...
        async def watch_for_regressions(self, version: str, previous: str | None) -> None: ...


def _discard(package: UpdatePackage) -> None:
    shutil.rmtree(package.staging, ignore_errors=True)
    shutil.rmtree(package.tree, ignore_errors=True)


def _command_env(store: NodeStore, version: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BLACKHOLE_SYNC_NODE"] = str(store.layout.root)
    env["BLACKHOLE_SYNC_VERSION"] = version
    env["BLACKHOLE_SYNC_VERSION_DIR"] = str(store.layout.version_dir(version))
    return env
