"""Edge cache: a node's verified holdings, laid out as a repository its neighbours can use.

:func:`export_mirror` fills ``NODE/mirror/`` with the repository layout of ARCHITECTURE.md
section 5 -- ``root.json``, ``<N>.root.json``, ``index.json``, ``manifests/<v>.json`` and
``blobs/<sha256>`` -- from what the node has already verified: its trusted documents (as
received bytes), the files of its installed versions and the transfer blobs it keeps
(``NODE/blobs``: compressed artifacts, patches), hard-linked (or copied across file systems)
under their sha256. Any HTTP origin serves that directory as a mirror
(``blackhole-sync node serve``). A neighbour trusts none of it more than an origin: every byte
is verified against signed metadata on arrival, so a stale or tampered mirror costs a retry,
never an install.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from attrs import frozen

from ._fsutil import hash_file, replace, write_atomic
from .documents import Envelope, ReleaseManifest
from .node.blobs import blob_digests

__all__ = ["MirrorResult", "export_mirror"]

_ROOT_NAME = re.compile(r"[1-9][0-9]{0,18}\.root\.json")


@frozen
class MirrorResult:
    path: Path
    documents: int
    blobs: int
    removed: int


def _link_or_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        write_atomic(tmp, src.read_bytes())
    replace(tmp, dest, sync=False)


def export_mirror(
    node_dir: str | os.PathLike[str], target: str | os.PathLike[str] | None = None
) -> MirrorResult:
    """Write (or refresh) the node's mirror directory; returns what it holds.

    Blobs are added only after their bytes re-hash to the sha256 in a stored manifest; blobs
    no longer held are removed. Documents are copied byte for byte from ``NODE/trust``.
    """
    node = Path(node_dir)
    out = Path(target) if target is not None else node / "mirror"
    trust = node / "trust"
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    (out / "blobs").mkdir(exist_ok=True)
    documents = 0
    for path in sorted(trust.iterdir()):
        if path.name in ("root.json", "index.json") or _ROOT_NAME.fullmatch(path.name):
            write_atomic(out / path.name, path.read_bytes())
            documents += 1
    wanted_manifests: set[str] = set()
    blobs: dict[str, Path] = {}
    manifests_dir = trust / "manifests"
    for path in sorted(manifests_dir.glob("*.json")) if manifests_dir.is_dir() else ():
        data = path.read_bytes()
        write_atomic(out / "manifests" / path.name, data)
        wanted_manifests.add(path.name)
        documents += 1
        version_dir = node / "versions" / path.name[: -len(".json")]
        if not version_dir.is_dir():
            continue
        manifest = Envelope.from_bytes(data, expected_type="release").parse(
            ReleaseManifest.from_dict
        )
        for artifact in manifest.artifacts:
            if artifact.unpack is not None or artifact.encryption is not None:
                continue  # the archive or ciphertext itself is not kept on the node
            source = version_dir / artifact.name
            if not source.is_file() or source.is_symlink():
                continue
            digest, length = hash_file(source)
            if digest == artifact.sha256 and length == artifact.length:
                blobs[digest] = source
        for digest in sorted(blob_digests([manifest])):  # compressed artifacts, patches
            kept = node / "blobs" / digest
            if kept.is_file() and not kept.is_symlink() and hash_file(kept)[0] == digest:
                blobs[digest] = kept
    for digest, source in blobs.items():
        dest = out / "blobs" / digest
        if not dest.exists():
            _link_or_copy(source, dest)
    removed = 0
    for stale in (out / "blobs").iterdir():
        if stale.name not in blobs:
            stale.unlink()
            removed += 1
    for stale in (out / "manifests").iterdir():
        if stale.name not in wanted_manifests:
            stale.unlink()
            removed += 1
    return MirrorResult(out, documents, len(blobs), removed)
