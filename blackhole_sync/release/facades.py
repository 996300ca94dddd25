"""The design's release-side facades over one :class:`~blackhole_sync.release.Repository`.

* :class:`UpdateServer`: release builder, manifest generator, signing service, blob store and
  distribution (publish each blob and announce each new index over the transports given).
* :class:`UpdateSigning`: the release role's keys and threshold, one holder's signature,
  signature checks (:class:`SignatureVerification`), key rotation and revocation.

They add no rules of their own: every check is the repository's, the builder's or the drafts'.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from attrs import frozen

from .._fsutil import hash_file, write_atomic
from ..clock import utcnow
from ..documents import (
    Index,
    PrivateKey,
    PublicKey,
    ReleaseManifest,
    Root,
    format_time,
    parse_version,
)
from .blobs import BlobStore
from .builder import SandboxRunner
from .drafts import check_release_blobs, release_blobs, release_signers
from .repository import Repository

if TYPE_CHECKING:
    from ..fetch import Transport

__all__ = ["SignatureVerification", "UpdateServer", "UpdateSigning"]


class UpdateServer:
    """The design's ``UpdateServer``: release builder, manifest generator, signing service,
    blob store and distribution, over one :class:`Repository`.

    ``transports`` (opened by the caller) receive every published blob (``publish``) and the
    new index (``announce("index", ...)``) when they declare those capabilities.
    """

    def __init__(
        self,
        repository: Repository,
        *,
        transports: Sequence[Transport] = (),
        sandbox: SandboxRunner | None = None,
    ) -> None:
        self.repository = repository
        self.transports = tuple(transports)
        self.sandbox = sandbox
        self.blob_store = BlobStore(repository.blobs_dir)

    # release builder / manifest generator
    async def build_release(
        self, version: str, artifacts: Sequence[str | os.PathLike[str]], **options: Any
    ) -> ReleaseManifest:
        return await self.repository.abuild_release(
            version, artifacts, sandbox=self.sandbox, **options
        )

    def generate_manifest(self, version: str) -> dict[str, Any]:
        """The manifest of ``version`` as signed, with its state and signers."""
        return self.repository.show_release(version)

    # signing service
    def sign_update(self, version: str, key: PrivateKey) -> bool:
        return self.repository.sign_release(version, key)

    def verify_signatures(self, version: str) -> dict[str, Any]:
        info = self.repository.show_release(version)
        return {k: info[k] for k in ("signatures", "threshold", "signed_by")}

    def rotate_signing_keys(self, **changes: Any) -> Root:
        return self.repository.rotate(**changes)

    @staticmethod
    def calculate_checksum(path: str | os.PathLike[str]) -> str:
        return hash_file(Path(path))[0]

    async def validate_update(self, version: str) -> bool:
        """Version, threshold and blob checks of a draft (the checks publishing repeats)."""
        repo = self.repository
        parse_version(version, "release version")
        env = repo.draft_envelope(version)
        repo.root().verify_role(env, "release")
        manifest = env.parse(ReleaseManifest.from_dict)
        await anyio.to_thread.run_sync(check_release_blobs, repo, version, manifest)
        return True

    async def publish_update(
        self, version: str, index_key: PrivateKey, *, now: _dt.datetime | None = None
    ) -> Index:
        """Validate, publish, distribute the blobs and announce the new index."""
        await self.validate_update(version)
        index = await anyio.to_thread.run_sync(
            lambda: self.repository.publish_release(version, index_key, now=now)
        )
        await self.distribute_update(version)
        await self.announce_update()
        return index

    async def distribute_update(self, version: str) -> None:
        """Publish every blob of ``version`` on each transport that can publish."""
        from ..fetch import CAP_PUBLISH  # the fetch layer only when distributing

        env, _state = self.repository.release_envelope(version)
        manifest = env.parse(ReleaseManifest.from_dict)
        for transport in self.transports:
            if CAP_PUBLISH not in transport.capabilities:
                continue
            for sha in release_blobs(manifest):
                await transport.publish(self.blob_store.path(sha), sha256=sha)

    async def announce_update(self) -> None:
        """Announce the current signed index on each transport that can announce."""
        from ..fetch import CAP_ANNOUNCE

        data = self.repository.index_bytes()
        if data is None:
            return
        for transport in self.transports:
            if CAP_ANNOUNCE in transport.capabilities:
                await transport.announce("index", data)


@frozen
class SignatureVerification:
    """Who validly signed a release, against the release role of the newest root."""

    version: str
    signed_by: tuple[str, ...]  # key ids of the release role whose signatures verify
    required: int

    @property
    def valid(self) -> bool:
        return len(self.signed_by) >= self.required


class UpdateSigning:
    """The design's UpdateSigning: the release role's keys, threshold and key management.

    Signing adds one key holder's signature to a draft (each holder signs separately, with
    their own key); key rotation and revocation are root changes, so they need the root
    keys' signatures (``sign_with``) under both the old and the new root thresholds.
    """

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    @property
    def required_signatures(self) -> int:
        return self.repository.root().roles["release"].threshold

    @property
    def trusted_keys(self) -> list[PublicKey]:
        _role, keys = self.repository.root().role_keys("release")
        return list(keys.values())

    def sign_update(self, version: str, key: PrivateKey) -> bool:
        """Add ``key``'s signature to draft ``version``; False when it had signed already."""
        return self.repository.sign_release(version, key)

    def verify_signatures(self, version: str) -> SignatureVerification:
        root = self.repository.root()
        env, _state = self.repository.release_envelope(version)
        signers = release_signers(root, env)
        return SignatureVerification(version, tuple(signers), root.roles["release"].threshold)

    def rotate_signing_keys(
        self,
        new_keys: Sequence[PublicKey],
        *,
        sign_with: Sequence[PrivateKey],
        threshold: int | None = None,
    ) -> Root:
        """Replace the release keys (and optionally the threshold) in a new root version."""
        return self.repository.rotate(
            sign_with=sign_with, release_keys=new_keys, release_threshold=threshold
        )

    def revoke_key(
        self, key: PublicKey | str, reason: str, *, sign_with: Sequence[PrivateKey]
    ) -> Root:
        """Remove a key (object or key id) from every role in a new root; record why."""
        keyid = key.keyid if isinstance(key, PublicKey) else key
        root = self.repository.rotate(sign_with=sign_with, revoke=[keyid])
        log_path = self.repository.revocations_path
        entries = json.loads(log_path.read_text()) if log_path.is_file() else []
        entries.append(
            {"keyid": keyid, "reason": reason, "root_version": root.version,
             "time": format_time(utcnow())}
        )  # fmt: skip
        write_atomic(log_path, (json.dumps(entries, indent=2) + "\n").encode())
        return root
