"""The design's UpdateDistribution and P2PUpdateDistribution, over transport plugins.

Distribution moves content-addressed blobs; it never decides what is trustworthy. Every
transport a plugin registered is one of the ``protocols`` (``http``, ``bittorrent``, ``ipfs``,
``gossip``, ``local``...):

* :class:`UpdateDistribution` is a node's side: ``retrieve_update`` fetches and verifies a
  release (through :class:`~blackhole_sync.manager.UpdateManager`), ``distribute_update`` and
  ``seed_update`` offer the verified files it holds to every transport that can publish
  (a BitTorrent plugin seeds them, an IPFS plugin adds and pins them).
* :class:`P2PUpdateDistribution` is the publisher's side: it offers a published release's
  blobs to every publishing transport and announces the newest signed index over every
  transport that can announce (DHT, gossip); receivers treat announcements as hints and verify
  the index they point to like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from attrs import field, frozen

from ._fsutil import hash_file
from .errors import LengthOrHashMismatchError, NoSuchVersionError
from .fetch import CAP_ANNOUNCE, CAP_PUBLISH, Locator, Transport

if TYPE_CHECKING:
    from .manager import UpdateManager, UpdatePackage
    from .release import Repository

__all__ = ["DistributionResult", "P2PUpdateDistribution", "UpdateDistribution"]


@frozen
class DistributionResult:
    """Where each blob (by sha256) can now be fetched, per protocol; and who was told."""

    locators: Mapping[str, Mapping[str, tuple[Locator, ...]]] = field(factory=dict)
    announced_on: tuple[str, ...] = ()

    @property
    def blobs(self) -> int:
        return len(self.locators)


async def _publish_all(
    protocols: Mapping[str, Transport], files: Mapping[str, Path]
) -> dict[str, dict[str, tuple[Locator, ...]]]:
    out: dict[str, dict[str, tuple[Locator, ...]]] = {}
    for name, transport in protocols.items():
        if CAP_PUBLISH not in transport.capabilities:
            continue
        for sha256, path in files.items():
            found = await transport.publish(path, sha256=sha256)
            out.setdefault(sha256, {})[name] = tuple(found)
    return out


class UpdateDistribution:
    """A node's multi-protocol distribution: retrieve, distribute and seed releases."""

    def __init__(
        self, manager: UpdateManager, protocols: Mapping[str, Transport] | None = None
    ) -> None:
        self.manager = manager
        #: By name; by default the registered transports that run here (the manager's own,
        #: closed with it: a BitTorrent seed started by ``seed_update`` lasts that long).
        self.protocols = dict(protocols) if protocols is not None else manager.transports()

    async def retrieve_update(self, update_id: str) -> UpdatePackage:
        """Fetch and stage the release ``update_id`` (a version), verified like any update."""
        info = await self.manager.resolve(update_id)
        if info is None:
            raise NoSuchVersionError(f"{update_id} is already installed")
        package = await self.manager.download_update(info)
        await self.manager.verify_update(package)
        return package

    async def distribute_update(self, update: UpdatePackage) -> DistributionResult:
        """Offer a verified staged package's files to every publishing transport."""
        files = await anyio.to_thread.run_sync(
            _verified_files, update.tree, update.version, self.manager
        )
        return DistributionResult(await _publish_all(self.protocols, files))

    async def seed_update(self, update_id: str) -> DistributionResult:
        """Offer the files of installed version ``update_id`` to every publishing transport."""
        tree = self.manager.store.version_dir(update_id)
        if not tree.is_dir():
            raise NoSuchVersionError(f"{update_id} is not installed")
        files = await anyio.to_thread.run_sync(_verified_files, tree, update_id, self.manager)
        return DistributionResult(await _publish_all(self.protocols, files))


def _verified_files(tree: Path, version: str, manager: UpdateManager) -> dict[str, Path]:
    """sha256 -> path of the single-file artifacts of ``version`` in ``tree``, re-hashed."""
    manifest = manager.manifest_of(version)
    files: dict[str, Path] = {}
    for artifact in manifest.artifacts_for(manager.config.platform, manager.config.arch):
        if artifact.transfer is not None:  # peers fetch the compressed blob the node kept
            kept = manager.store.layout.blob(artifact.transfer.sha256)
            meta = (artifact.transfer.sha256, artifact.transfer.length)
            if kept.is_file() and hash_file(kept) == meta:
                files[artifact.transfer.sha256] = kept
        if artifact.unpack is not None or artifact.encryption is not None:
            continue  # only the artifact itself is content-addressed by its sha256
        path = tree / artifact.name
        digest, length = hash_file(path)
        if digest != artifact.sha256 or length != artifact.length:
            raise LengthOrHashMismatchError(f"{path} does not match its manifest")
        files[digest] = path
    return files


class P2PUpdateDistribution:
    """The publisher's side: spread a published release's blobs and announce the index."""

    def __init__(self, repository: Repository, protocols: Mapping[str, Transport]) -> None:
        self.repository = repository
        self.protocols = dict(protocols)

    async def distribute_update(self, version: str) -> DistributionResult:
        from .documents import ReleaseManifest

        envelope, state = self.repository._envelope_of(version)
        if state != "published":
            raise NoSuchVersionError(f"release {version} is {state}, not published")
        manifest = envelope.parse(ReleaseManifest.from_dict)
        files = {
            sha: self.repository.blob_path(sha) for sha in self.repository.release_blobs(manifest)
        }
        locators = await _publish_all(self.protocols, files)
        announced = await self.announce()
        return DistributionResult(locators, announced)

    async def announce(self) -> tuple[str, ...]:
        """Send the newest signed index over every announcing transport; their names."""
        data = self.repository.index_bytes()
        told: list[str] = []
        if data is None:
            return ()
        for name, transport in self.protocols.items():
            if CAP_ANNOUNCE in transport.capabilities:
                await transport.announce("index", data)
                told.append(name)
        return tuple(told)

    async def retrieve_update(self, version: str, node: UpdateManager) -> UpdatePackage:
        """Fetch ``version`` into ``node`` (verified), as :meth:`UpdateDistribution.retrieve_update`."""
        return await UpdateDistribution(node, self.protocols).retrieve_update(version)
