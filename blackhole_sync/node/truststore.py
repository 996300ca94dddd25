"""TrustStore: the node's saved trusted metadata (``NODE/trust/``), as received bytes.

The node keeps the last verified root (``root.json``, plus every root version it walked as
``<N>.root.json``), the last verified index (``index.json``) and the manifests it verified
(``manifests/<version>.json``). The bytes are stored exactly as received, so they can be
re-verified later and served to peers byte for byte.

This module does no verification: the caller verifies first (python-tuf's order: the
:class:`~blackhole_sync.documents.TrustedState` accepts the bytes) and persists after, through
:class:`TrustStore`, each file atomically (temporary file, fsync, rename, directory fsync).
Reads are capped at the document type's size limit (``MAX_SIZES``).

:class:`SignedManifest` pairs a manifest model with the exact bytes it was parsed from; the
install transaction takes one, so the model it acts on and the bytes it stores cannot
disagree.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from attrs import field, frozen

from .._fsutil import write_atomic
from ..documents import MAX_SIZES, Envelope, ReleaseManifest, TrustedState, strict_loads
from ..errors import FormatError, NoSuchVersionError
from .layout import NodeLayout

__all__ = ["SignedManifest", "TrustStore"]


@frozen
class SignedManifest:
    """A release manifest and the exact bytes (its signed envelope) it was parsed from.

    Made only by parsing the bytes (:meth:`from_bytes`) or by taking both from a
    :class:`~blackhole_sync.documents.TrustedState` that verified them (:meth:`from_trusted`),
    so ``manifest`` is always the model of ``raw`` without a second parse to compare.
    """

    manifest: ReleaseManifest
    raw: bytes = field(repr=False)

    @property
    def version(self) -> str:
        return self.manifest.version

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedManifest:
        """Parse stored or received manifest bytes: a signed envelope, or a bare ``signed``
        object (signatures are not checked here: the bytes were verified before they were
        stored)."""
        obj = strict_loads(data, max_size=MAX_SIZES["release"])
        if isinstance(obj, dict) and "signed" in obj:
            envelope = Envelope.from_bytes(data, expected_type="release")
            return cls(envelope.parse(ReleaseManifest.from_dict), data)
        return cls(ReleaseManifest.from_dict(obj), data)

    @classmethod
    def from_trusted(cls, state: TrustedState, version: str) -> SignedManifest:
        """The manifest of ``version`` a trusted state accepted, with its bytes (no parse)."""
        return cls(state.manifest(version), state.manifest_bytes(version))


def _read_capped(path: Path, kind: str) -> bytes:
    cap = MAX_SIZES[kind]
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise FormatError(f"{path.name}: stored {kind} document is over {cap} bytes")
    return data


class TrustStore:
    """Load and save the trusted documents of one node (see the module docstring)."""

    def __init__(self, layout: NodeLayout) -> None:
        self.layout = layout

    # -- root ---------------------------------------------------------------------------------

    def root_bytes(self) -> bytes:
        """The newest trusted root (always present on a node: ``node init`` writes it)."""
        return _read_capped(self.layout.trust_root, "root")

    def save_root(self, data: bytes, version: int | None = None) -> None:
        """Keep ``data`` as the newest root; with its ``version``, first as ``<N>.root.json``
        too (``node init`` stores the operator's root without it: it is not parsed there)."""
        self._ensure_dirs()
        if version is not None:
            _write_if_changed(self.layout.trust_root_version(version), data)
        _write_if_changed(self.layout.trust_root, data)

    def root_versions(self) -> list[int]:
        """The root versions kept as ``<N>.root.json``, ascending."""
        numbers = (self.layout.root_version_of(n) for n in os.listdir(self.layout.trust_dir))
        return sorted(n for n in numbers if n is not None)

    def root_version_bytes(self, version: int) -> bytes:
        return _read_capped(self.layout.trust_root_version(version), "root")

    # -- index --------------------------------------------------------------------------------

    def index_bytes(self) -> bytes | None:
        """The last verified index, None before the first check."""
        try:
            return _read_capped(self.layout.trust_index, "index")
        except FileNotFoundError:
            return None

    def save_index(self, data: bytes) -> None:
        self._ensure_dirs()
        _write_if_changed(self.layout.trust_index, data)

    # -- manifests ----------------------------------------------------------------------------

    def manifest_bytes(self, version: str) -> bytes | None:
        """The stored manifest of ``version``, None when there is none."""
        try:
            return _read_capped(self.layout.trust_manifest(version), "release")
        except FileNotFoundError:
            return None

    def manifest(self, version: str) -> SignedManifest:
        """The stored manifest of ``version``, parsed. Raises NoSuchVersionError / FormatError."""
        data = self.manifest_bytes(version)
        if data is None:
            raise NoSuchVersionError(f"no stored manifest for {version}")
        return SignedManifest.from_bytes(data)

    def manifest_versions(self) -> list[str]:
        """Versions with a stored manifest, sorted by name."""
        folder = self.layout.trust_manifests_dir
        if not folder.is_dir():
            return []
        return sorted(p.name.removesuffix(".json") for p in folder.glob("*.json"))

    def save_manifest(self, version: str, data: bytes) -> None:
        self._ensure_dirs()
        write_atomic(self.layout.trust_manifest(version), data, mode=0o644)

    def remove_manifest(self, version: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.layout.trust_manifest(version))

    # -- coordination documents ---------------------------------------------------------------

    def coordination_bytes(self, relpath: str, kind: str) -> bytes | None:
        """A stored coordination document (verified before it was saved), None if absent."""
        try:
            return _read_capped(self.layout.trust_coordination(relpath), kind)
        except FileNotFoundError:
            return None

    def save_coordination(self, relpath: str, data: bytes) -> None:
        path = self.layout.trust_coordination(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=0o644)

    # -- a whole trusted state ----------------------------------------------------------------

    def save_state(self, state: TrustedState) -> None:
        """Persist a verified state's root and index (manifests: :meth:`save_manifest`)."""
        self.save_root(state.root_bytes, state.root.version)
        if state.index_bytes is not None:
            self.save_index(state.index_bytes)

    def _ensure_dirs(self) -> None:
        self.layout.trust_manifests_dir.mkdir(parents=True, exist_ok=True)


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` atomically unless the file already holds exactly these bytes (an
    unchanged index every agent cycle would otherwise cost three fsyncs per check)."""
    try:
        with open(path, "rb") as f:
            if f.read(len(data) + 1) == data:
                return
    except OSError:
        pass
    write_atomic(path, data, mode=0o644)
