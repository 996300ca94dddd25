"""Drafts and signature merging: who validly signed a release, one holder's signature added to
a draft, the blobs a release needs, and the release listings that show all three.

A release is built as a draft (``.bhsync/drafts/<version>/``: ``manifest.json``, the envelope
that collects signatures, and ``blobs/``). Each holder of a release key signs separately, with
their own key; a signature counts once per distinct key of the release role of the newest root
(a second signature by the same key replaces nothing and counts nothing). A published release's
manifest never changes, so it cannot be signed any more.
"""

from __future__ import annotations

from typing import Any

from .._fsutil import write_atomic
from ..documents import Envelope, MetaFile, ReleaseManifest, Root, Signer, sort_versions
from ..errors import ConflictError, SignatureError
from .blobs import check_blob
from .layout import RepoLayout

__all__ = [
    "check_release_blobs",
    "list_releases",
    "release_blobs",
    "release_signers",
    "show_release",
    "sign_draft",
]


def release_signers(root: Root, env: Envelope, *, role: str = "release") -> list[str]:
    """Key ids of ``root``'s ``role`` whose signatures on ``env`` verify, each once."""
    if role not in root.roles:
        return []
    _spec, keys = root.role_keys(role)
    good: list[str] = []
    for sig in env.signatures:
        key = keys.get(sig.keyid)
        if key is None or sig.keyid in good:
            continue
        try:
            signature = bytes.fromhex(sig.sig)
        except ValueError:
            continue
        if key.verify(env.signed_bytes, signature):
            good.append(sig.keyid)
    return good


def sign_draft(layout: RepoLayout, version: str, key: Signer) -> bool:
    """Add one key holder's signature to the draft. False if that key had signed already.

    :class:`SignatureError` for a key outside the release role, :class:`ConflictError` for a
    published release, :class:`~blackhole_sync.errors.NoSuchVersionError` without a draft.
    """
    with layout.locked():
        if version in layout.published():
            raise ConflictError(f"release {version} is published; its manifest cannot change")
        env = layout.draft_envelope(version)
        root = layout.root()
        if key.keyid not in root.roles["release"].keyids:
            raise SignatureError(
                f"key {key.keyid[:16]}... is not a release key of root v{root.version}"
            )
        if key.keyid in release_signers(root, env):
            return False
        kept = tuple(s for s in env.signatures if s.keyid != key.keyid)  # a bad one is replaced
        new = Envelope.of(env.signed, (*kept, key.sign(env.signed_bytes)))
        write_atomic(layout.draft_manifest_path(version), new.raw)
        return True


def release_blobs(manifest: ReleaseManifest) -> dict[str, MetaFile]:
    """sha256 -> MetaFile of every blob a release needs (artifacts/ciphertexts, patches)."""
    out: dict[str, MetaFile] = {}
    for a in manifest.artifacts:
        out[a.blob.sha256] = a.blob
    for d in manifest.deltas:
        out[d.patch.sha256] = d.patch
    return out


def check_release_blobs(layout: RepoLayout, version: str, manifest: ReleaseManifest) -> None:
    """Every blob of the release is present (in its draft or in ``blobs/``) and hashes right.

    Read in full once before publishing: what the index is about to point nodes at must be
    the bytes the release keys signed.
    """
    for meta in release_blobs(manifest).values():
        check_blob(layout.release_blob_path(version, meta.sha256), meta, f"release {version}")


def list_releases(layout: RepoLayout) -> list[dict[str, Any]]:
    """Every draft and published release, ascending by version."""
    root = layout.root()
    versions = set(layout.published()) | layout.draft_versions()
    out = []
    for version in sort_versions(versions):
        env, state = layout.release_envelope(version)
        manifest = env.parse(ReleaseManifest.from_dict)
        out.append(
            {
                "version": version,
                "channel": manifest.channel,
                "type": manifest.type,
                "critical": manifest.critical,
                "state": state,
                "signatures": len(release_signers(root, env)),
                "threshold": root.roles["release"].threshold,
            }
        )
    return out


def show_release(layout: RepoLayout, version: str) -> dict[str, Any]:
    """The manifest (as signed) with its state, signers and, once published, its hash."""
    root = layout.root()
    env, state = layout.release_envelope(version)
    signers = release_signers(root, env)
    info: dict[str, Any] = {
        "version": version,
        "state": state,
        "signatures": len(signers),
        "threshold": root.roles["release"].threshold,
        "signed_by": signers,
        "manifest": dict(env.signed),
    }
    info["manifest_length"] = info["manifest_sha256"] = None
    if state != "draft":
        meta = MetaFile.of(env.raw)
        info["manifest_length"] = meta.length
        info["manifest_sha256"] = meta.sha256
    return info
