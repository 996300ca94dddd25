"""The trusted state machine: root chain, index and release manifests. No I/O.

:class:`TrustedState` holds the newest documents a node has verified. Every ``update_*`` method
takes the raw bytes a transport delivered, verifies them completely against the state, and
only then replaces the trusted copy; on any problem it raises and the state is unchanged. The
caller (the update manager) persists the accepted bytes atomically afterwards.

Rules enforced (ARCHITECTURE.md section 3):

* root: version N+1 only, signed by the thresholds of both root N and root N+1; the final root
  must not be expired at the reference time.
* index: signed by the index role; versions strictly increase (an identical re-delivery is a
  no-op, the same version with other bytes is a rollback attempt); not expired; a release the
  trusted index lists cannot vanish except through a withdrawal entry, and a withdrawal is
  permanent. When a root rotation changes the index role's keys, the trusted index floor is
  dropped (fast-forward recovery: a compromised index key may have pushed the version high).
* release manifest: listed in the trusted index with exactly these bytes' length and sha256,
  signed by the release role's threshold, and its version and channel are the listed ones.
  :meth:`TrustedState.listed_manifest` answers "may this manifest be fetched, and what must it
  be?" (the index entry, or the precise refusal) before any byte is fetched.

Order of checks, python-tuf's: the bytes are parsed strictly and ``signed`` is re-encoded
canonically (:meth:`Envelope.from_bytes`, no document model yet); the role's threshold is checked
over those canonical bytes with the trusted root's keys; only then is the typed model built and
its rules checked. So a document not signed by the right keys is refused as such
(:class:`SignatureError`) whatever its body holds, and no model code runs on unauthenticated
input. A manifest's index entry (length, sha256) is checked even before it is parsed. Two checks
must follow a model because the keys they need are inside it: a new root's own threshold (the
trusted root's threshold is checked first, before the model) and a locally configured root's
check against itself (it is trusted by configuration, not by signature).

All expiry checks use one reference time fixed when the state is created.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping

from .._fsutil import sha256_hex
from ..clock import utcnow
from ..errors import (
    ExpiredError,
    FormatError,
    LengthOrHashMismatchError,
    RollbackError,
    SecurityError,
    VanishedReleaseError,
    WithdrawnReleaseError,
)
from .envelope import Envelope
from .fields import MetaFile, format_time
from .index import Index
from .release import ReleaseManifest
from .root import Root

__all__ = ["MAX_ROOT_ROTATIONS", "TrustedState"]

#: Most root versions accepted in one update (bounds the root chain walk).
MAX_ROOT_ROTATIONS = 64

#: Indexes this process verified, by (trusted root bytes, index bytes): at most this many.
_VERIFIED_INDEXES_MAX = 4
_verified_indexes: dict[tuple[bytes, bytes], tuple[Envelope, Index]] = {}


class TrustedState:
    """The newest verified root, index and manifests of one node (or one verifier)."""

    def __init__(self, root_data: bytes, *, reference_time: _dt.datetime | None = None) -> None:
        """Start from a locally trusted root. It must verify with its own root threshold.

        The local root's expiry is not checked here: an expired root can still be rotated
        forward. :meth:`check_root_fresh` checks it once the root chain is walked.
        """
        self.reference_time = reference_time or utcnow()
        envelope = Envelope.from_bytes(root_data, expected_type="root")
        root = envelope.parse(Root.from_dict)  # its keys are inside: the model comes first
        root.verify_role(envelope, "root")
        self._root = root
        self._root_envelope = envelope
        self._index: Index | None = None
        self._index_envelope: Envelope | None = None
        self._manifests: dict[str, tuple[ReleaseManifest, Envelope]] = {}

    # -- accessors -------------------------------------------------------------------------

    @property
    def root(self) -> Root:
        return self._root

    @property
    def root_bytes(self) -> bytes:
        return self._root_envelope.raw

    @property
    def index(self) -> Index | None:
        return self._index

    @property
    def index_bytes(self) -> bytes | None:
        return None if self._index_envelope is None else self._index_envelope.raw

    def manifest(self, version: str) -> ReleaseManifest:
        return self._manifests[version][0]

    def manifest_bytes(self, version: str) -> bytes:
        return self._manifests[version][1].raw

    @property
    def manifests(self) -> Mapping[str, ReleaseManifest]:
        return {v: m for v, (m, _) in self._manifests.items()}

    def _authenticated(self, data: bytes, doc_type: str, role: str) -> Envelope:
        """Parse ``data`` strictly and check ``role``'s threshold under the trusted root over
        the canonical bytes of ``signed``. No document model is built: that comes after."""
        envelope = Envelope.from_bytes(data, expected_type=doc_type)
        self._root.verify_role(envelope, role)
        return envelope

    # -- root ------------------------------------------------------------------------------

    def update_root(self, data: bytes) -> Root:
        """Accept root version N+1, signed by old and new root thresholds."""
        envelope = self._authenticated(data, "root", "root")  # the trusted root's threshold
        new = envelope.parse(Root.from_dict)
        if new.version != self._root.version + 1:
            raise RollbackError(
                f"root version {new.version} does not follow trusted version {self._root.version}"
            )
        if new.network_id != self._root.network_id:
            raise SecurityError(
                f"root is for network {new.network_id!r}, not {self._root.network_id!r}"
            )
        new.verify_role(envelope, "root")  # and its own: its keys are in the model
        index_role_changed = self._root.roles["index"] != new.roles["index"] or any(
            self._root.keys.get(k) != new.keys.get(k) for k in new.roles["index"].keyids
        )
        release_role_changed = self._root.roles["release"] != new.roles["release"]
        self._root = new
        self._root_envelope = envelope
        if index_role_changed:
            # Fast-forward recovery: the old index key may be compromised and may have pushed
            # the index version to the maximum. Drop the floor; the next index starts fresh.
            self._index = None
            self._index_envelope = None
        if release_role_changed:
            # Manifests signed under the old release keys must be re-verified on next use.
            self._manifests.clear()
        return new

    def check_root_fresh(self) -> None:
        if self._root.expires <= self.reference_time:
            raise ExpiredError(
                f"root version {self._root.version} expired at {format_time(self._root.expires)}"
            )

    # -- index -----------------------------------------------------------------------------

    def _verified_index(self, data: bytes) -> tuple[Envelope, Index]:
        """``data`` authenticated as an index under the trusted root, then parsed.

        Remembered per process by (root bytes, index bytes): the same bytes under the same
        root verify the same way, and an agent checks the same index every cycle -- without
        this a check (and ``node status``) re-verified and re-parsed an index of 1,000 releases
        each time. Freshness and the rollback rules are still applied by every caller.
        """
        key = (self._root_envelope.raw, data)
        hit = _verified_indexes.get(key)
        if hit is None:
            envelope = self._authenticated(data, "index", "index")
            hit = (envelope, envelope.parse(Index.from_dict))
            if len(_verified_indexes) >= _VERIFIED_INDEXES_MAX:
                _verified_indexes.pop(next(iter(_verified_indexes)))
            _verified_indexes[key] = hit
        return hit

    def load_trusted_index(self, data: bytes) -> bool:
        """Restore the locally stored index as the rollback floor (expiry not checked).

        Returns False, keeping no floor, when the stored index no longer verifies under the
        current root (the index keys were rotated: fast-forward recovery).
        """
        try:
            envelope, index = self._verified_index(data)
        except SecurityError:
            return False
        self._index, self._index_envelope = index, envelope
        return True

    def update_index(self, data: bytes) -> Index:
        """Accept a newer index. Returns the trusted index (unchanged on identical bytes)."""
        self.check_root_fresh()
        envelope, new = self._verified_index(data)
        old = self._index
        if old is not None and self._index_envelope is not None:
            if new.version < old.version:
                raise RollbackError(
                    f"index version {new.version} is older than trusted version {old.version}"
                )
            if new.version == old.version:
                if envelope.signed_bytes != self._index_envelope.signed_bytes:
                    raise RollbackError(
                        f"index version {new.version} changed content without a new version"
                    )
                self._check_index_fresh(old)
                return old
            self._check_no_vanished(old, new)
        self._check_index_fresh(new)
        self._index, self._index_envelope = new, envelope
        return new

    def _check_index_fresh(self, index: Index) -> None:
        if index.expires <= self.reference_time:
            raise ExpiredError(
                f"index version {index.version} expired at {format_time(index.expires)}"
            )

    @staticmethod
    def _check_no_vanished(old: Index, new: Index) -> None:
        new_releases = new.all_releases()
        new_withdrawn = new.all_withdrawn()
        for version, meta in old.all_releases().items():
            if version in new_withdrawn:
                continue
            if version not in new_releases:
                raise VanishedReleaseError(
                    f"release {version} vanished from index version {new.version} "
                    "without a withdrawal entry"
                )
            if new_releases[version] != meta:
                raise RollbackError(f"release {version} changed its manifest hash in the index")
        for version in old.all_withdrawn():
            if version not in new_withdrawn:
                raise RollbackError(
                    f"withdrawn release {version} reappeared or lost its withdrawal"
                )
        for name, channel in old.channels.items():
            new_channel = new.channels.get(name)
            for version in channel.releases:
                if new_channel is not None and (
                    version in new_channel.releases or version in new_channel.withdrawn
                ):
                    continue
                if version in new_withdrawn:
                    continue
                raise VanishedReleaseError(f"release {version} moved out of channel {name!r}")

    def require_index(self) -> Index:
        if self._index is None:
            raise RuntimeError("no trusted index yet: call update_index first")
        return self._index

    # -- manifests -------------------------------------------------------------------------

    def listed_manifest(self, version: str) -> MetaFile:
        """The trusted index's entry (length and sha256) for ``version``'s manifest.

        What a fetch of that manifest is capped by and checked against. A withdrawn release
        raises :class:`WithdrawnReleaseError` (with the index's reason), one the index does not
        know raises :class:`FormatError`; neither needs a byte fetched to be refused.
        """
        index = self.require_index()
        listed = index.listing(version)
        if listed is not None:
            return listed
        reason = index.withdrawal(version)
        if reason is not None:
            raise WithdrawnReleaseError(
                f"release {version} was withdrawn" + (f": {reason}" if reason else "")
            )
        raise FormatError(f"release {version} is not listed in index version {index.version}")

    def update_manifest(
        self, version: str, data: bytes, *, allow_withdrawn: bool = False
    ) -> ReleaseManifest:
        """Accept the manifest of ``version`` as listed in the trusted index.

        The bytes must have the listed length and sha256, then meet the release role's
        threshold, then parse into a manifest of that version in the listing channel. With
        ``allow_withdrawn`` (restoring what a node stored before the withdrawal) a withdrawn
        release is accepted on its signatures alone: a withdrawal entry lists no hash.
        """
        index = self.require_index()
        if allow_withdrawn and index.withdrawal(version) is not None:
            listed = None
        else:
            listed = self.listed_manifest(version)
        if listed is not None:
            if len(data) != listed.length:
                raise LengthOrHashMismatchError(
                    f"manifest {version}: {len(data)} bytes, index lists {listed.length}"
                )
            if sha256_hex(data) != listed.sha256:
                raise LengthOrHashMismatchError(
                    f"manifest {version}: sha256 differs from the index"
                )
        envelope = self._authenticated(data, "release", "release")
        manifest = envelope.parse(ReleaseManifest.from_dict)
        if manifest.version != version:
            raise SecurityError(f"manifest says version {manifest.version}, index lists {version}")
        channel = index.channel_of(version)
        if channel != manifest.channel:
            raise SecurityError(
                f"manifest {version} is for channel {manifest.channel!r}, index lists {channel!r}"
            )
        self._manifests[version] = (manifest, envelope)
        return manifest
