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
from typing import Any

import anyio
import anyio.to_thread
from attrs import field, frozen

from ._fsutil import hash_file, replace, sha256_hex, write_atomic
from .clock import utcnow
from .codecs import delta as _delta
from .documents import (
    Artifact,
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
    LengthOrHashMismatchError,
    NoSuchVersionError,
    PatchError,
    RollbackError,
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
from .node import Decision, InstallHooks, NodeConfig, NodeStore, PolicyState, UpdatePolicy, decide

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

IDENTITY_KEY = "identity.key"
#: Delta codec of a member shipped whole inside a per-member delta set (no patch paid off).
IDENTITY_CODEC = "identity"
#: Consecutive failed health checks after which the agent abandons a version.
MAX_START_FAILURES = 3


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
    """A release staged and verified on disk, ready for :meth:`UpdateManager.apply_update`."""

    version: str
    manifest: ReleaseManifest = field(repr=False)
    manifest_bytes: bytes = field(repr=False)
    tree: Path  # the staged tree (a staging directory of its own)
    staging: Path  # scratch space: downloaded blobs and patches
    method: str  # "full" | "delta"
    bytes_fetched: int
    from_version: str | None


@frozen
class UpdateResult:
    version: str
    previous: str | None
    method: str
    bytes_fetched: int
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous": self.previous,
            "method": self.method,
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
        }


@frozen
class SyncResult:
    available: tuple[UpdateInfo, ...]
    decision: Decision | None
    installed: UpdateResult | None = None
    error: str | None = None


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
    ) -> None:
        self.node_dir = Path(node_dir)
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
                self._config = NodeConfig.from_file(self.node_dir / "config.toml")
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
    def versions(self) -> VersionManager:
        return VersionManager(self.store, lambda: self._trusted().manifests)

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
    def trust_dir(self) -> Path:
        return self.node_dir / "trust"

    def _load_state(self, reference_time: _dt.datetime) -> TrustedState:
        """The trusted state from disk: root, the stored index as floor, stored manifests."""
        state = TrustedState(
            (self.trust_dir / "root.json").read_bytes(), reference_time=reference_time
        )
        index_path = self.trust_dir / "index.json"
        if index_path.exists() and state.load_trusted_index(index_path.read_bytes()):
            manifests = self.trust_dir / "manifests"
            if manifests.is_dir():
                for path in manifests.glob("*.json"):
                    version = path.name[: -len(".json")]
                    try:
                        state.update_manifest(version, path.read_bytes(), allow_withdrawn=True)
                    except SecurityError:
                        continue  # re-fetched (and re-verified) when needed
        return state

    def _trusted(self) -> TrustedState:
        if self._state is None:
            self._state = self._load_state(self._clock())
        return self._state

    def _persist_state(self, state: TrustedState) -> None:
        self.trust_dir.mkdir(exist_ok=True)
        write_atomic(self.trust_dir / f"{state.root.version}.root.json", state.root_bytes)
        write_atomic(self.trust_dir / "root.json", state.root_bytes)
        if state.index_bytes is not None:
            write_atomic(self.trust_dir / "index.json", state.index_bytes)

    def _persist_manifest(self, version: str, data: bytes) -> None:
        (self.trust_dir / "manifests").mkdir(exist_ok=True)
        write_atomic(self.trust_dir / "manifests" / f"{version}.json", data)

    # -- the design's operations --------------------------------------------------------------

    async def check_for_updates(self, *, persist: bool = True) -> list[UpdateInfo]:
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
        ordered = sorted(infos, key=lambda i: (i.priority, version_key(i.version)), reverse=True)
        self._emit("checked", None, available=[i.version for i in ordered])
        return ordered

    def _save_trust(self) -> None:
        """Persist the trusted state verified by the last check (atomically, file by file)."""
        if self._state is None:
            return
        self._persist_state(self._state)
        for version, data in self._unsaved:
            self._persist_manifest(version, data)
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
        listed = state.require_index().all_releases()[version]
        cached = self.trust_dir / "manifests" / f"{version}.json"
        if cached.exists():
            data = cached.read_bytes()
            if len(data) == listed.length and sha256_hex(data) == listed.sha256:
                state.update_manifest(version, data)
                return data
        data = await client.fetch_manifest(state, version)
        if fetched is None:
            self._persist_manifest(version, data)
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
        """Fetch and stage ``update``: by delta patches where possible, else in full."""
        manifest = update.manifest
        started = time.monotonic()
        need = self.store.required_space(
            manifest, platform=self.config.platform, arch=self.config.arch
        )
        self.store.check_space(
            need
            + sum(
                a.blob.length
                for a in manifest.artifacts_for(self.config.platform, self.config.arch)
            )
        )
        tree = self.store.new_staging_dir()
        work = staging = self.store.new_staging_dir()
        client = self._client()
        current = self.store.current_version()
        use_deltas = self.config.deltas if self._deltas is None else self._deltas
        methods: set[str] = set()
        self._emit("downloading", update.version)
        self.metrics = UpdateMetrics(
            version=update.version, from_version=current, sampler=ResourceSampler()
        )
        self.metrics.start_download(update.version)
        try:
            for artifact in manifest.artifacts_for(self.config.platform, self.config.arch):
                if current is not None and await self._stage_from_installed(
                    artifact, current, tree, work
                ):
                    methods.add("local")
                    continue
                done = False
                if use_deltas and current is not None and artifact.encryption is None:
                    done = await self._stage_by_delta(
                        client, manifest, artifact, current, tree, work
                    )
                if done:
                    methods.add("delta")
                else:
                    await self._stage_full(client, artifact, tree, work)
                    methods.add("full")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(tree, ignore_errors=True)
            raise
        fetched = methods - {"local"}
        if not fetched:
            method = "delta"  # nothing to fetch: every file was already here (a zero-byte delta)
        elif fetched == {"delta"}:
            method = "delta"
        else:
            method = "full" if "delta" not in fetched else "mixed"
        self.metrics.method = method
        for source, error in client.stats.failures:
            self.metrics.record_source_failure(source, error)
        self.metrics.finish_download(client.stats.bytes_fetched, time.monotonic() - started)
        self._emit("downloaded", update.version, method=method, bytes=client.stats.bytes_fetched)
        return UpdatePackage(
            update.version,
            manifest,
            update.manifest_bytes,
            tree,
            staging,
            method,
            client.stats.bytes_fetched,
            current,
        )

    async def _stage_from_installed(
        self, artifact: Artifact, current: str, tree: Path, work: Path
    ) -> bool:
        """Reuse an artifact the current version already holds, byte for byte (re-hashed)."""
        old_dir = self.store.version_dir(current)
        if artifact.unpack is None:
            old = old_dir / artifact.name
            if not old.is_file() or old.is_symlink() or old.stat().st_size != artifact.length:
                return False
            copy = work / f"local-{artifact.sha256}"
            await anyio.to_thread.run_sync(shutil.copyfile, old, copy)
            if _file_sha256(copy) != artifact.sha256:
                copy.unlink()
                return False
            await anyio.to_thread.run_sync(self.store.stage_file, copy, artifact, tree)
            return True
        return await self._rebuild_unpacked(None, artifact, {}, old_dir, tree, work, {})

    async def _stage_full(
        self, client: RepositoryClient, artifact: Artifact, tree: Path, work: Path
    ) -> None:
        blob = work / f"blob-{artifact.blob.sha256}"
        await client.fetch_blob(artifact.blob, blob, extra_locators=artifact.locators)
        plain = blob
        if artifact.encryption is not None:
            from .codecs import decrypt_file

            plain = work / f"plain-{artifact.sha256}"
            await anyio.to_thread.run_sync(
                lambda: decrypt_file(blob, plain, artifact, self.identity_key())
            )
            blob.unlink()
        if artifact.unpack is not None:
            await anyio.to_thread.run_sync(self.store.stage_archive, plain, artifact, tree)
        else:
            await anyio.to_thread.run_sync(self.store.stage_file, plain, artifact, tree)

    async def _stage_by_delta(
        self,
        client: RepositoryClient,
        manifest: ReleaseManifest,
        artifact: Artifact,
        current: str,
        tree: Path,
        work: Path,
    ) -> bool:
        """Rebuild ``artifact`` from the installed version plus patches. False: use a full fetch."""
        old_dir = self.store.version_dir(current)
        table = _delta.codec_table(
            codec for result in self.plugins.hook.blackhole_sync_patch_codecs() for codec in result
        )
        try:
            if artifact.unpack is None:
                return await self._apply_chain(
                    client, manifest, artifact, current, old_dir, tree, work, table
                )
            records = {
                d.member: d
                for d in manifest.deltas
                if d.artifact == artifact.name and d.from_version == current
            }
            if not records:
                return False
            return await self._rebuild_unpacked(
                client, artifact, records, old_dir, tree, work, table
            )
        except (PatchError, LengthOrHashMismatchError, FileNotFoundError) as exc:
            log.warning(
                "delta for %s failed (%s); falling back to a full download", artifact.name, exc
            )
            self.metrics.record_error(f"delta {artifact.name}: {exc}")
            (tree / artifact.name).unlink(missing_ok=True)
            return False

    async def _apply_chain(
        self,
        client: RepositoryClient,
        manifest: ReleaseManifest,
        artifact: Artifact,
        current: str,
        old_dir: Path,
        tree: Path,
        work: Path,
        table: Mapping[str, Any],
    ) -> bool:
        """Reach ``artifact`` by the cheapest chain of patches the optimizer finds.

        Edges come from every verified manifest between the installed and the target version
        (a node two releases behind can take 1.0->1.1->1.2 when 1.2 has no patch from 1.0);
        each step's output must match that release's artifact before the next step reads it.
        The optimizer picks a full download when the chain costs more than its set fraction.
        """
        state = self._trusted()
        edges: dict[_delta.DeltaEdge, tuple[Any, str, int]] = {}
        releases = [m for m in state.manifests.values() if compare_versions(m.version, current) > 0]
        for release in [*releases, manifest]:
            if compare_versions(release.version, manifest.version) > 0:
                continue
            target = next(
                (
                    a
                    for a in release.artifacts_for(self.config.platform, self.config.arch)
                    if a.name == artifact.name and a.unpack is None and a.encryption is None
                ),
                None,
            )
            if target is None:
                continue
            for record in release.deltas:
                if record.artifact == artifact.name and record.member is None:
                    edge = _delta.DeltaEdge(
                        record.from_version, release.version, record.patch.length, record.codec
                    )
                    edges[edge] = (record, target.sha256, target.length)
        if not edges:
            return False
        optimizer = _delta.UpdateOptimizer(table=table)
        available = _delta.AvailableUpdates({manifest.version: artifact.blob.length}, list(edges))
        path = optimizer.calculate_update_path(current, manifest.version, available=available)
        if not path.is_delta:
            return False
        source = old_dir / artifact.name
        for step in path.steps:
            assert isinstance(step, _delta.DeltaEdge)
            record, out_sha, out_length = edges[step]
            out = work / f"chain-{out_sha}"
            if not out.exists():
                await self._apply_one(client, record, source, out, out_sha, out_length, table, work)
            source = out
        await anyio.to_thread.run_sync(self.store.stage_file, source, artifact, tree)
        return True

    async def _apply_one(
        self,
        client: RepositoryClient,
        record: Any,
        source: Path,
        out: Path,
        output_sha256: str,
        output_length: int,
        table: Mapping[str, Any],
        work: Path,
    ) -> None:
        if record.codec == IDENTITY_CODEC:
            # The member ships whole (new, or no patch paid off): the blob is the output.
            if record.patch.sha256 != output_sha256 or record.patch.length != output_length:
                raise LengthOrHashMismatchError("identity patch does not carry the member's bytes")
            await client.fetch_blob(record.patch, out)
            return
        if not source.is_file():
            raise FileNotFoundError(source)
        patch = work / f"patch-{record.patch.sha256}"
        if not patch.exists():
            await client.fetch_blob(record.patch, patch)
        await anyio.to_thread.run_sync(
            lambda: _delta.apply_patch(
                source,
                patch,
                out,
                source_sha256=record.source.sha256,
                patch_sha256=record.patch.sha256,
                patch_length=record.patch.length,
                output_sha256=output_sha256,
                output_length=output_length,
                codec=record.codec,
                table=table,
            )
        )

    async def _rebuild_unpacked(
        self,
        client: RepositoryClient | None,
        artifact: Artifact,
        records: Mapping[str | None, Any],
        old_dir: Path,
        tree: Path,
        work: Path,
        table: Mapping[str, Any],
    ) -> bool:
        """Rebuild an unpacked archive's members from the installed ones plus member patches.

        Unchanged members are copied from the installed tree (after re-hashing), changed ones
        patched; a changed member without a patch means the archive must be fetched whole.
        The members are assembled in scratch space and moved into ``tree`` only when all are
        there, so a fallback finds ``tree`` untouched.
        """
        assert artifact.unpack is not None
        scratch = work / f"unpack-{artifact.sha256}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            for member in artifact.unpack.members:
                target = scratch / member.path
                if member.type == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                    os.chmod(target, member.mode)
                    continue
                assert member.sha256 is not None and member.length is not None
                target.parent.mkdir(parents=True, exist_ok=True)
                old = old_dir / member.path
                record = records.get(member.path)
                unchanged = old.is_file() and not old.is_symlink()
                if unchanged and record is None and _file_sha256(old) == member.sha256:
                    await anyio.to_thread.run_sync(shutil.copyfile, old, target)
                elif record is not None and client is not None:
                    out = work / f"member-{member.sha256}"
                    await self._apply_one(
                        client, record, old, out, member.sha256, member.length, table, work
                    )
                    replace(out, target, sync=False)
                else:
                    log.info("%s: member %s changed without a patch", artifact.name, member.path)
                    return False
                os.chmod(target, member.mode)
            for top in sorted(os.listdir(scratch)):
                if os.path.lexists(tree / top):
                    raise LengthOrHashMismatchError(
                        f"{artifact.name}: {top!r} collides with staged files"
                    )
            for top in sorted(os.listdir(scratch)):
                os.rename(scratch / top, tree / top)
            return True
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def verify_update(self, package: UpdatePackage) -> bool:
        """Re-verify a staged package: its manifest against trust, every file against it.

        Returns True or raises a :class:`~blackhole_sync.errors.SecurityError`.
        """
        state = self._trusted()
        if state.manifest_bytes(package.version) != package.manifest_bytes:
            raise SecurityError(f"staged manifest of {package.version} is not the trusted one")
        artifacts = package.manifest.artifacts_for(self.config.platform, self.config.arch)
        problems = await anyio.to_thread.run_sync(
            lambda: NodeStore.check_tree(package.tree, artifacts)
        )
        if problems:
            raise LengthOrHashMismatchError(f"staged {package.version}: {problems[0]}")
        return True

    async def apply_update(self, package: UpdatePackage) -> UpdateResult:
        """Install a verified package atomically (sandbox, migrate, switch, health, commit).

        A failed health check rolls back and raises :class:`HealthCheckError`.
        """
        started = time.monotonic()
        previous = self.store.current_version()
        skipped = self._skipped_releases(previous, package.version)
        self._emit("installing", package.version, method=package.method)
        self.metrics.start_install()
        try:
            # Once started, an install runs to its end (commit or rollback) even when the
            # caller is cancelled: stopping half way would leave the work to recovery.
            with anyio.CancelScope(shield=True):
                await self.store.install(
                    package.manifest,
                    package.manifest_bytes,
                    package.tree,
                    platform=self.config.platform,
                    arch=self.config.arch,
                    hooks=self._install_hooks(package.manifest),
                    method=package.method,
                    bytes_fetched=package.bytes_fetched,
                    extra_migrations=[
                        *(m for r in skipped for m in r.migrations),
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
            package.version, previous, package.method, package.bytes_fetched, duration
        )
        self._emit("installed", package.version, result=result.to_dict())
        if (self.node_dir / "mirror").is_dir():  # keep the edge cache (`node serve`) current
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
        state = self._trusted()
        index = state.index
        if index is None:
            return []
        out = []
        for version in sort_versions(index.releases(self.config.channel)):
            newer = previous is None or compare_versions(version, previous) > 0
            if newer and compare_versions(version, target) < 0:
                try:
                    out.append(state.manifest(version))
                except KeyError:
                    continue
        return out

    def _install_hooks(self, manifest: ReleaseManifest) -> InstallHooks:
        config = self.config
        node_dir = self.node_dir

        commands = config.commands
        self_test = manifest.self_test or config.self_test_command()
        health = manifest.health or config.health_command()

        async def sandbox(tree: Path, data_dir: Path, _manifest: ReleaseManifest) -> None:
            if self_test is None:
                return
            from .node import run_sandbox_test

            await run_sandbox_test(tree, data_dir, self_test)

        async def check_health(version: str, _manifest: ReleaseManifest) -> None:
            from .node import require_healthy

            checks = [
                c
                for result in self.plugins.hook.blackhole_sync_health_checks(node_dir=node_dir)
                for c in result
            ]
            if health is None and not checks:
                return
            await require_healthy(
                version,
                node_dir=node_dir,
                command=health,
                checks=checks,
                cwd=self.store.version_dir(version),
                timeout=float(commands.health_timeout),
                env=_command_env(node_dir, version),
            )

        async def restart(version: str) -> None:
            handled = self.plugins.hook.blackhole_sync_restart_service(
                node_dir=node_dir, version=version
            )
            if handled:
                return
            argv = config.restart_command()
            if argv:
                from .node import run_restart_command

                await run_restart_command(
                    list(argv),
                    timeout=float(commands.health_timeout),
                    env=_command_env(node_dir, version),
                )

        async def progress(step: str) -> None:
            if self.metrics.sampler is not None and self.metrics.sampler.running:
                self.metrics.sampler.sample()
            self._emit("install-step", manifest.version, step=step)

        return InstallHooks(
            sandbox=sandbox, health=check_health, restart=restart, progress=progress
        )

    async def update(self, version: str | None = None) -> UpdateResult | None:
        """Check, download, verify and apply now (an explicit request overrides the policy)."""
        info = await self.resolve(version, persist=False)
        try:
            if info is None:
                return None
            package = await self.download_update(info)
            await self.verify_update(package)
            result = await self.apply_update(package)
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
        )

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

    async def sync_with_network(self) -> SyncResult:
        """One agent tick: check, let the policy decide, and act on the decision."""
        try:
            infos = await self.check_for_updates()
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
            await self.verify_update(package)
            self.policy_state().mark_downloaded(info.version)
            _discard(package)
        elif decision.action == "install":
            package = await self.download_update(info)
            await self.verify_update(package)
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
        """Sign this node's status and hand it to plugins (e.g. gossip). Returns the bytes."""
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
        hooks = self._install_hooks(manifest)
        assert hooks.health is not None
        try:
            await hooks.health(current, manifest)
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
        return load_private_key(self.node_dir / IDENTITY_KEY)

    async def rollback(self, version: str | None = None) -> str:
        """Go back to ``version`` (default: the previous one); the version left is held.

        The agent does not reinstall a held version by itself; an explicit update does.
        """
        left = self.store.current_version()
        target = await anyio.to_thread.run_sync(lambda: self.store.rollback(version))
        if left is not None and left != target:
            self._set_held([*self.held_versions(), left])
        self._emit("rolled-back", target)
        return target


def _discard(package: UpdatePackage) -> None:
    shutil.rmtree(package.staging, ignore_errors=True)
    shutil.rmtree(package.tree, ignore_errors=True)


def _file_sha256(path: Path) -> str:
    return hash_file(path)[0]


def _command_env(node_dir: Path, version: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BLACKHOLE_SYNC_NODE"] = str(node_dir)
    env["BLACKHOLE_SYNC_VERSION"] = version
    env["BLACKHOLE_SYNC_VERSION_DIR"] = str(node_dir / "versions" / version)
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
    NodeStore.create(node, root_bytes=root_bytes, config_text=config_text).close()
    return write_key_pair(node / IDENTITY_KEY)


class NodeUpdateClient:
    """The design's node-side loop: check, select, download, verify, apply, broadcast.

    A thin composition over an open :class:`UpdateManager`; the store's install transaction
    creates the rollback point and rolls back by itself when a step fails, so a failure here
    leaves the node on its previous version.
    """

    def __init__(self, manager: UpdateManager) -> None:
        self.update_manager = manager
        self.version_manager = manager.versions
        self.rollback_manager = manager.store.rollbacks

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
