"""UpdateManager: check, download, verify, apply and roll back -- the node side.

:class:`UpdateManager` combines the manager's parts: :class:`~.base.ManagerBase` (the open
node, its trust and plugins), :class:`~.coordination.CoordinationSide` (the network side) and
:class:`~.installed.InstalledTreeSide` (the installed tree, the regression watch); the
operations of one update are here, in the order they run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..documents import (
    ReleaseManifest,
    TrustedState,
    compare_versions,
    format_time,
    sort_versions,
    version_key,
)
from ..errors import (
    BlackholeSyncError,
    IncompatibleReleaseError,
    LengthOrHashMismatchError,
    NoSuchVersionError,
    RollbackError,
    SecurityError,
    WithdrawnReleaseError,
)
from ..node import PolicyState, decide
from ..protocols import UpdateInfo, UpdatePackage, UpdateResult, UpdateStatus

# anyio, the fetch clients, the metrics sampler and the install path of the node store are
# imported by the operations that use them: a manager opened for its local state only
# (``node status``) loads none of them.
if TYPE_CHECKING:
    from ..fetch import RepositoryClient
    from ..node import UpdatePolicy

from .base import _discard
from .coordination import CoordinationSide
from .hooks import ManagerInstallHooks
from .installed import InstalledTreeSide

__all__ = ["NodeUpdateClient", "UpdateManager"]

log = logging.getLogger("blackhole_sync.manager")


class UpdateManager(CoordinationSide, InstalledTreeSide):
    """The node's update orchestrator (the design's UpdateManager)."""

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
        from ..node import ReleaseStager

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
        from ..metrics import ResourceSampler, UpdateMetrics

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
        import anyio.to_thread

        from ..node import check_tree

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
        import anyio

        from ..node import SignedManifest

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
                    hooks=ManagerInstallHooks(self, package.manifest),
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
            import anyio.to_thread

            from ..mirror import export_mirror

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
        from ..node import write_config

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
        from ..node import select_update

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
            "not_before": None if decision.not_before is None else format_time(decision.not_before),
            "held": held,
        }

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
        from ..node import select_update

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
