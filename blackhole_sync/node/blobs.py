"""Transfer blobs a node keeps for its peers: ``NODE/blobs/<sha256>``.

When a node fetches a blob that is not its installed bytes -- a compressed artifact (the
manifest's ``transfer`` record) or a delta patch -- it keeps it under its sha256 after the
fetch verified it, so that it can serve, seed and pin exactly the bytes its peers will ask for
(their locators name the blob's sha256, not the installed bytes'). Kept are the blobs the
manifests of the current and the previous version name (:data:`KEEP_VERSIONS`), plus those of a
release being staged; everything else is removed when staging starts and when versions are
pruned. The disk-space check of a staging counts every blob it fetches.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from .._fsutil import copy_file
from ..documents import ReleaseManifest
from .layout import NodeLayout

__all__ = [
    "KEEP_VERSIONS",
    "blob_digests",
    "installed_blobs",
    "keep_blob",
    "kept_blobs",
    "prune_blobs",
]

#: Versions whose transfer blobs a node keeps: the current one and the one before it.
KEEP_VERSIONS = 2


def blob_digests(manifests: Iterable[ReleaseManifest]) -> set[str]:
    """sha256 of every blob the ``manifests`` name that is not installed bytes (compressed
    artifacts and patches)."""
    out: set[str] = set()
    for manifest in manifests:
        out.update(a.transfer.sha256 for a in manifest.artifacts if a.transfer is not None)
        out.update(record.patch.sha256 for record in manifest.deltas)
    return out


def keep_blob(layout: NodeLayout, src: Path, sha256: str) -> None:
    """Keep the verified blob ``src`` as ``NODE/blobs/<sha256>`` (a hard link when possible;
    ``src`` is left where it is). An existing blob of that name is kept as it is."""
    dest = layout.blob(sha256)
    if dest.exists():
        return
    layout.blobs_dir.mkdir(mode=0o755, exist_ok=True)
    try:
        os.link(src, dest)
    except FileExistsError:
        return
    except OSError:
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        copy_file(src, tmp, mode=0o644)
        os.rename(tmp, dest)  # same directory; a crash leaves a temporary name, never a blob
    os.chmod(dest, 0o644)


def kept_blobs(layout: NodeLayout) -> list[str]:
    """The digests of the blobs a node holds."""
    if not layout.blobs_dir.is_dir():
        return []
    return sorted(p.name for p in layout.blobs_dir.iterdir() if not p.name.startswith("."))


def installed_blobs(layout: NodeLayout) -> dict[str, Path]:
    """sha256 -> installed file, for the artifacts of the installed versions that travel as
    they are installed (not compressed, encrypted nor unpacked): the blob a peer asks for is
    that file, so a node can offer it without keeping a second copy. A file whose length is
    not the signed one is left out; a seeding transport hashes each file before offering it,
    so one changed since its install is refused there."""
    from ..errors import BlackholeSyncError
    from .truststore import TrustStore

    out: dict[str, Path] = {}
    trust = TrustStore(layout)
    with contextlib.suppress(OSError):
        for version_dir in sorted(layout.versions_dir.iterdir()):
            try:
                manifest = trust.manifest(version_dir.name).manifest
            except (BlackholeSyncError, OSError):
                continue  # not a version this node verified (a leftover, a staging name)
            for artifact in manifest.artifacts:
                if artifact.transfer or artifact.encryption or artifact.unpack:
                    continue
                path = version_dir / artifact.name
                with contextlib.suppress(OSError):
                    if not path.is_symlink() and path.stat().st_size == artifact.length:
                        out.setdefault(artifact.sha256, path)
    return out


def prune_blobs(layout: NodeLayout, keep: Iterable[str]) -> list[str]:
    """Remove every blob (and leftover temporary file) not named in ``keep``; the removed."""
    wanted = set(keep)
    removed: list[str] = []
    if not layout.blobs_dir.is_dir():
        return removed
    for path in sorted(layout.blobs_dir.iterdir()):
        if path.name in wanted:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.name)
    return removed
