"""Staging a release: each artifact reused, rebuilt by patches, or fetched whole -- verified.

:class:`ReleaseStager` fills a fresh staging tree with a release's artifacts for this node's
platform, cheapest way first:

1. an artifact the installed version already holds byte for byte is copied (re-hashed);
2. with deltas on, an artifact is rebuilt from the installed one by the cheapest chain of
   patches the :class:`~blackhole_sync.codecs.UpdateOptimizer` finds over every verified
   manifest between the two versions; an unpacked archive is rebuilt member by member;
3. otherwise its blob is fetched whole -- decompressed (bounded by the signed length) when it
   travels compressed, decrypted when encrypted to this node -- and placed.

A chain is not taken when a patch's codec is missing or unavailable on this node, when
applying it would need more memory than the node's ``delta_memory_budget`` (the apply
worker's bound, :meth:`~blackhole_sync.codecs.ApplyLimits.memory_needed`), when the
chain costs more than 80 % of the full blob, or -- on a node that knows its link, from its
download rate limit -- when it is expected to take longer than the full download (see
:mod:`blackhole_sync.codecs.delta.plan`); the node then logs why and reports it
(:attr:`StagedRelease.reason`, the update's ``method_reason``).

Every step's output is checked against signed metadata before the next one reads it (source,
patch and output hashes for a patch; the artifact's sha256 for a placed file), and a failed
delta falls back to the full download. A patch, like a full blob, is asked of its signed
locators first (a swarm: BitTorrent, IPFS), then of the node's sources. Fetched transfer blobs
and patches are kept in ``NODE/blobs`` (:mod:`blackhole_sync.node.blobs`) for peers. Nothing
here touches ``current``: the install transaction (:mod:`blackhole_sync.node.install`) takes
the staged tree from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from attrs import frozen

from .._fsutil import hash_file, replace
from ..codecs import (
    ApplyLimits,
    ApplyWorker,
    AvailableUpdates,
    DeltaEdge,
    UpdateOptimizer,
    apply_patch,
    decompress_file,
    decrypt_file,
)
from ..documents import Artifact, PrivateKey, ReleaseManifest, compare_versions
from ..errors import LengthOrHashMismatchError, NoSuchVersionError, PatchError
from ..fetch import RepositoryClient
from .blobs import blob_digests, keep_blob, prune_blobs
from .partials import partial_file
from .store import NodeStore

__all__ = ["IDENTITY_CODEC", "ReleaseStager", "StagedRelease"]

log = logging.getLogger(__name__)

#: Delta codec of a member shipped whole inside a per-member delta set (no patch paid off).
IDENTITY_CODEC = "identity"


def _sha256_of(path: Path) -> str:
    return hash_file(path)[0]


@frozen
class StagedRelease:
    """A release staged on disk: ``tree`` holds the artifacts, ``work`` the scratch files."""

    tree: Path
    work: Path
    method: str  # "full" | "delta" | "mixed" ("delta" also when nothing needed fetching)
    bytes_fetched: int
    duration_s: float
    #: why artifacts were fetched whole with deltas on ("" when every one came by delta)
    reason: str = ""


class ReleaseStager:
    """Stages releases into one node's staging area (see the module docstring).

    ``codecs`` is the patch-codec table (built-in and plugin codecs); ``releases()`` returns
    the verified manifests a patch chain may pass through; ``identity_key()`` the node key
    that decrypts releases encrypted to it; ``on_error`` hears about a delta that fell back.
    ``delta_memory_budget``: a patch whose apply needs more (bytes; None: no budget) is not
    taken; ``limits``: the apply worker's bounds; ``link_bandwidth``: the node's download rate
    limit (bytes/s), against which a patch chain must be expected no slower than the full
    download (None: the link is unknown, the fewest bytes win).
    """

    def __init__(
        self,
        store: NodeStore,
        client: RepositoryClient,
        *,
        platform: str,
        arch: str,
        codecs: Mapping[str, Any],
        releases: Callable[[], Iterable[ReleaseManifest]],
        identity_key: Callable[[], PrivateKey],
        on_error: Callable[[str], None] = lambda _message: None,
        delta_memory_budget: int | None = None,
        limits: ApplyLimits | None = None,
        link_bandwidth: int | None = None,
        peer_held: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.client = client
        self.platform = platform
        self.arch = arch
        self.codecs = codecs
        self.releases = releases
        self.identity_key = identity_key
        self.on_error = on_error
        self.delta_memory_budget = delta_memory_budget
        self.limits = limits or ApplyLimits()
        self.link_bandwidth = link_bandwidth or None
        #: versions whose blobs nearby peers hold (the network view): cheaper bytes
        self.peer_held = frozenset(peer_held)

    async def stage(
        self, manifest: ReleaseManifest, current: str | None, *, deltas: bool
    ) -> StagedRelease:
        """Stage every artifact of ``manifest`` for this platform; raises on failure, leaving
        no staging directory behind."""
        started = time.monotonic()
        artifacts = manifest.artifacts_for(self.platform, self.arch)
        self._prune_blobs(manifest, current)
        need = self.store.required_space(manifest, platform=self.platform, arch=self.arch)
        self.store.check_space(need + sum(a.blob.length for a in artifacts))
        tree = self.store.new_staging_dir()
        work = self.store.new_staging_dir()
        methods: set[str] = set()
        reasons: list[str] = []
        try:
            for artifact in artifacts:
                if current is not None and await self._stage_from_installed(
                    artifact, current, tree, work
                ):
                    methods.add("local")
                    continue
                done, why = False, ""
                if deltas and current is not None and artifact.encryption is None:
                    done, why = await self._stage_by_delta(
                        self.client, manifest, artifact, current, tree, work
                    )
                elif deltas and current is not None:
                    why = "encrypted artifacts have no patches"
                if done:
                    methods.add("delta")
                else:
                    if why:
                        log.info("%s: downloading it whole: %s", artifact.name, why)
                        reasons.append(f"{artifact.name}: {why}")
                    await self._stage_full(self.client, artifact, tree, work)
                    methods.add("full")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(tree, ignore_errors=True)
            raise
        fetched = methods - {"local"}
        if not fetched or fetched == {"delta"}:
            method = "delta"  # also when every file was already here (a zero-byte delta)
        else:
            method = "full" if "delta" not in fetched else "mixed"
        return StagedRelease(
            tree,
            work,
            method,
            self.client.stats.bytes_fetched,
            time.monotonic() - started,
            "; ".join(reasons),
        )

    def _prune_blobs(self, manifest: ReleaseManifest, current: str | None) -> None:
        """Keep the blobs of the staged and the current version (once installed: the current
        and the previous one); drop the rest."""
        manifests = [manifest]
        if current is not None:
            with contextlib.suppress(OSError, NoSuchVersionError):
                manifests.append(self.store.stored_manifest(current))
        prune_blobs(self.store.layout, blob_digests(manifests))

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
            if _sha256_of(copy) != artifact.sha256:
                copy.unlink()
                return False
            await anyio.to_thread.run_sync(self.store.stage_file, copy, artifact, tree)
            return True
        return await self._rebuild_unpacked(None, artifact, {}, old_dir, tree, work, {})

    async def _stage_full(
        self, client: RepositoryClient, artifact: Artifact, tree: Path, work: Path
    ) -> None:
        blob = work / f"blob-{artifact.blob.sha256}"
        partial = partial_file(self.store.layout, artifact.blob.sha256, artifact.blob.length)
        await client.fetch_blob(
            artifact.blob, blob, extra_locators=artifact.locators, partial=partial
        )
        plain = blob
        if artifact.encryption is not None:
            plain = work / f"plain-{artifact.sha256}"
            await anyio.to_thread.run_sync(
                lambda: decrypt_file(blob, plain, artifact, self.identity_key())
            )
            blob.unlink()
        elif artifact.transfer is not None:
            transfer = artifact.transfer
            plain = work / f"plain-{artifact.sha256}"
            digest, _length = await anyio.to_thread.run_sync(
                lambda: decompress_file(
                    blob, plain, codec=transfer.codec, output_length=artifact.length
                )
            )
            if digest != artifact.sha256:
                plain.unlink()
                raise LengthOrHashMismatchError(
                    f"{artifact.name}: the transfer blob does not decode to the signed bytes"
                )
            keep_blob(self.store.layout, blob, transfer.sha256)
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
    ) -> tuple[bool, str]:
        """Rebuild ``artifact`` from the installed version plus patches: (done, why not)."""
        old_dir = self.store.version_dir(current)
        table = self.codecs
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
                return False, "no published patch from the installed version"
            why = self._unusable_member_patches(records.values())
            if why:
                return False, why
            done = await self._rebuild_unpacked(
                client, artifact, records, old_dir, tree, work, table
            )
            return done, "" if done else "a changed member has no patch"
        except (PatchError, LengthOrHashMismatchError, FileNotFoundError) as exc:
            log.warning(
                "delta for %s failed (%s); falling back to a full download", artifact.name, exc
            )
            self.on_error(f"delta {artifact.name}: {exc}")
            (tree / artifact.name).unlink(missing_ok=True)
            return False, f"the patch failed: {exc}"

    def _optimizer(self, table: Mapping[str, Any]) -> UpdateOptimizer:
        return UpdateOptimizer(
            table=table,
            apply_memory_budget=self.delta_memory_budget,
            limits=self.limits,
            link_bandwidth=self.link_bandwidth,
            peer_held=self.peer_held,
        )

    def _unusable_member_patches(self, records: Iterable[Any]) -> str:
        """Why the member patches of an unpacked archive cannot all be applied ("" if they can)."""
        optimizer = self._optimizer(self.codecs)
        for record in records:
            if record.codec == IDENTITY_CODEC:
                continue
            edge = DeltaEdge(
                record.from_version,
                record.from_version,
                record.patch.length,
                record.codec,
                record.source.length,
                record.output_length,
            )
            why: dict[str, str] = {}
            if not optimizer.usable(edge, why):
                return "; ".join(why.values())
        return ""

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
    ) -> tuple[bool, str]:
        """Reach ``artifact`` by the cheapest chain of patches the optimizer finds.

        Edges come from every verified manifest between the installed and the target version
        (a node two releases behind can take 1.0->1.1->1.2 when 1.2 has no patch from 1.0);
        each step's output must match that release's artifact before the next step reads it.
        The optimizer picks a full download when the chain costs more than its set fraction.
        """
        edges: dict[DeltaEdge, tuple[Any, str, int]] = {}
        releases = [m for m in self.releases() if compare_versions(m.version, current) > 0]
        for release in [*releases, manifest]:
            if compare_versions(release.version, manifest.version) > 0:
                continue
            target = next(
                (
                    a
                    for a in release.artifacts_for(self.platform, self.arch)
                    if a.name == artifact.name and a.unpack is None and a.encryption is None
                ),
                None,
            )
            if target is None:
                continue
            for record in release.deltas:
                if record.artifact == artifact.name and record.member is None:
                    edge = DeltaEdge(
                        record.from_version,
                        release.version,
                        record.patch.length,
                        record.codec,
                        record.source.length,
                        target.length,
                    )
                    edges[edge] = (record, target.sha256, target.length)
        if not edges:
            return False, "no published patch from the installed version"
        optimizer = self._optimizer(table)
        available = AvailableUpdates({manifest.version: artifact.blob.length}, list(edges))
        path = optimizer.calculate_update_path(current, manifest.version, available=available)
        if not path.is_delta:
            return False, path.reason
        source = old_dir / artifact.name
        for step in path.steps:
            assert isinstance(step, DeltaEdge)
            record, out_sha, out_length = edges[step]
            out = work / f"chain-{out_sha}"
            if not out.exists():
                await self._apply_one(client, record, source, out, out_sha, out_length, table, work)
            source = out
        await anyio.to_thread.run_sync(self.store.stage_file, source, artifact, tree)
        return True, ""

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
            await client.fetch_blob(record.patch, out, extra_locators=record.locators)
            return
        if not source.is_file():
            raise FileNotFoundError(source)
        patch = work / f"patch-{record.patch.sha256}"
        # the bounded worker starts now: its interpreter loads while the patch downloads
        with ApplyWorker() as worker:
            if not patch.exists():
                # the patch's signed locators (a swarm) before the node's sources, as for
                # a full artifact; its length and sha256 decide what is accepted
                await client.fetch_blob(record.patch, patch, extra_locators=record.locators)
                keep_blob(self.store.layout, patch, record.patch.sha256)
            await anyio.to_thread.run_sync(
                lambda: apply_patch(
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
                    limits=self.limits,
                    worker=worker,
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
                if unchanged and record is None and _sha256_of(old) == member.sha256:
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
