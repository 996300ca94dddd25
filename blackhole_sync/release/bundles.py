"""Release bundles: a draft carried to a release key holder, signed there, and merged back.

RAUC, mender-artifact and TUF users sign on the machine that holds the key. ``release export``
writes a draft release as a *bundle*, one JSON file::

    {"_type": "release-bundle", "format": 1, "version": "1.2.0",
     "root": <the repository's newest root envelope>,
     "release": <the draft manifest envelope, with the signatures collected so far>}

The holder signs it where it is (``release sign BUNDLE.json --key KEY``: :func:`sign_bundle`)
and sends it back; ``release import REPO BUNDLE.json...`` (:func:`import_bundles`) merges the
signatures into the draft. Nobody holds two keys, nobody edits JSON.

Trust stays with the repository: the root inside a bundle only tells a holder whether their
key belongs to the release role (a key outside it is refused before anything is written). On
import every signature is checked against the repository's own newest root -- a key of its
release role, a signature that verifies over the draft's exact bytes -- and counted once per
distinct key. A bundle whose manifest is not the draft's, a signature by a key outside the role,
or one that does not verify refuses the whole import (:class:`SignatureError`): nothing is
written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from .._fsutil import write_atomic
from ..documents import (
    MAX_SIZES,
    Envelope,
    ReleaseManifest,
    Root,
    Signature,
    Signer,
    canonical_bytes,
    strict_loads,
)
from ..errors import ConflictError, FormatError, SignatureError
from .drafts import release_signers
from .layout import RepoLayout, read_limited

__all__ = [
    "BUNDLE_MAX",
    "BUNDLE_TYPE",
    "Bundle",
    "bundle_info",
    "export_bundle",
    "import_bundles",
    "sign_bundle",
]

BUNDLE_TYPE = "release-bundle"
_FORMAT = 1
#: Largest bundle read: a root and a release manifest at their caps, and some slack.
BUNDLE_MAX = MAX_SIZES["root"] + MAX_SIZES["release"] + 64 * 1024


@frozen
class Bundle:
    """A draft release with the root it was exported under."""

    version: str
    root: Envelope
    release: Envelope

    @property
    def root_model(self) -> Root:
        return self.root.parse(Root.from_dict)

    @property
    def manifest(self) -> ReleaseManifest:
        return self.release.parse(ReleaseManifest.from_dict)

    def signers(self) -> list[str]:
        """Key ids of the bundle root's release role whose signatures verify, each once."""
        return release_signers(self.root_model, self.release)

    def to_bytes(self) -> bytes:
        obj = {
            "_type": BUNDLE_TYPE,
            "format": _FORMAT,
            "version": self.version,
            "root": strict_loads(self.root.raw, max_size=MAX_SIZES["root"]),
            "release": strict_loads(self.release.raw, max_size=MAX_SIZES["release"]),
        }
        return canonical_bytes(obj) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "bundle") -> Bundle:
        """Parse strictly; :class:`FormatError` for anything that is not a release bundle."""
        obj = strict_loads(data, max_size=BUNDLE_MAX)
        if not isinstance(obj, dict) or obj.get("_type") != BUNDLE_TYPE:
            raise FormatError(f"{what} is not a release bundle (made by release export)")
        if obj.get("format") != _FORMAT or set(obj) != {
            "_type",
            "format",
            "version",
            "root",
            "release",
        }:
            raise FormatError(f"{what}: unknown bundle format")
        if not isinstance(obj["root"], dict) or not isinstance(obj["release"], dict):
            raise FormatError(f"{what}: root and release must be signed documents")
        root = Envelope.from_bytes(canonical_bytes(obj["root"]), expected_type="root")
        release = Envelope.from_bytes(canonical_bytes(obj["release"]), expected_type="release")
        root.parse(Root.from_dict)
        manifest = release.parse(ReleaseManifest.from_dict)
        if obj["version"] != manifest.version:
            raise FormatError(f"{what}: says version {obj['version']!r}, holds {manifest.version}")
        return cls(manifest.version, root, release)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Bundle:
        return cls.from_bytes(read_limited(Path(path), BUNDLE_MAX), str(path))


def export_bundle(layout: RepoLayout, version: str, out: str | os.PathLike[str]) -> Bundle:
    """Write the draft of ``version`` (with its signatures so far) as a bundle at ``out``.

    :class:`~blackhole_sync.errors.NoSuchVersionError` without a draft, :class:`ConflictError`
    for a published release or an existing ``out`` (a signed bundle is never overwritten).
    """
    out = Path(out)
    if version in layout.published():
        raise ConflictError(f"release {version} is published; there is nothing left to sign")
    bundle = Bundle(version, Envelope.from_bytes(layout.root_bytes(), expected_type="root"),
                    layout.draft_envelope(version))  # fmt: skip
    try:
        write_atomic(out, bundle.to_bytes(), mode=0o644, exclusive=True)
    except FileExistsError as exc:
        raise ConflictError(f"{out} already exists") from exc
    return bundle


def sign_bundle(path: str | os.PathLike[str], key: Signer) -> bool:
    """Add ``key``'s signature to the bundle at ``path``; False if that key had signed.

    A key outside the release role of the bundle's root: :class:`SignatureError`, the file
    unchanged.
    """
    path = Path(path)
    bundle = Bundle.read(path)
    root = bundle.root_model
    if key.keyid not in root.roles["release"].keyids:
        raise SignatureError(
            f"key {key.keyid[:16]}... is not a release key of root v{root.version} "
            "(the root this bundle was exported under)"
        )
    if key.keyid in bundle.signers():
        return False
    env = bundle.release
    kept = tuple(s for s in env.signatures if s.keyid != key.keyid)  # a bad one is replaced
    signed = Envelope.of(env.signed, (*kept, key.sign(env.signed_bytes)))
    write_atomic(path, Bundle(bundle.version, bundle.root, signed).to_bytes(), mode=0o644)
    return True


def _verified_new(
    root: Root, draft: Envelope, bundle: Bundle, what: str, have: set[str]
) -> list[Signature]:
    """The bundle's signatures by keys not in ``have``; every signature is checked first, and
    any that is not a release key's or does not verify refuses the bundle."""
    if bundle.release.signed_bytes != draft.signed_bytes:
        raise SignatureError(
            f"{what}: its signatures are over another manifest than the draft of "
            f"{bundle.version} (a bundle of another build?)"
        )
    _spec, keys = root.role_keys("release")
    out: dict[str, Signature] = {}
    own = set(draft.signatures)  # the repository's own, exported with the draft
    for sig in bundle.release.signatures:  # every other one verified, even of a merged key
        if sig in own:
            continue
        key = keys.get(sig.keyid)
        if key is None:
            raise SignatureError(
                f"{what}: a signature by key {sig.keyid[:16]}..., which is not a release key "
                f"of root v{root.version}"
            )
        try:
            raw = bytes.fromhex(sig.sig)
        except ValueError:
            raw = b""
        if not key.verify(draft.signed_bytes, raw):
            raise SignatureError(
                f"{what}: the signature by key {sig.keyid[:16]}... does not verify"
            )
        if sig.keyid not in have:
            out.setdefault(sig.keyid, sig)
    return list(out.values())


def import_bundles(
    layout: RepoLayout, paths: Sequence[str | os.PathLike[str]]
) -> dict[str, list[str]]:
    """Merge the signatures of each bundle into its draft; returns version -> key ids added.

    All bundles are checked before anything is written; one bad bundle refuses them all.
    """
    bundles = [(str(p), Bundle.read(p)) for p in paths]
    with layout.locked():
        root = layout.root()
        published = layout.published()
        drafts: dict[str, Envelope] = {}
        added: dict[str, list[Signature]] = {}
        for what, bundle in bundles:
            version = bundle.version
            if version in published:
                raise ConflictError(f"{what}: release {version} is already published")
            if version not in drafts:
                drafts[version] = layout.draft_envelope(version)
                added[version] = []
            have = set(release_signers(root, drafts[version]))
            have |= {s.keyid for s in added[version]}
            added[version] += _verified_new(root, drafts[version], bundle, what, have)
        for version, sigs in added.items():
            if not sigs:
                continue
            env = drafts[version]
            new_ids = {s.keyid for s in sigs}
            kept = tuple(s for s in env.signatures if s.keyid not in new_ids)
            merged = Envelope.of(env.signed, (*kept, *sigs))
            write_atomic(layout.draft_manifest_path(version), merged.raw)
    return {version: [s.keyid for s in sigs] for version, sigs in added.items()}


def bundle_info(bundle: Bundle) -> dict[str, Any]:
    """What ``release show BUNDLE.json`` prints: the manifest and its signers so far."""
    root = bundle.root_model
    signers = bundle.signers()
    return {
        "version": bundle.version,
        "state": "bundle",
        "signatures": len(signers),
        "threshold": root.roles["release"].threshold,
        "signed_by": signers,
        "manifest": dict(bundle.release.signed),
        "manifest_length": None,
        "manifest_sha256": None,
    }
