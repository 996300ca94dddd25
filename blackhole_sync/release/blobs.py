"""The content-addressed blob directory of a repository (``blobs/<sha256>``).

Artifacts, ciphertexts and patches are stored under their own sha256, written through a
temporary file, fsynced and renamed into place: a blob's name is a promise about its bytes, so a
half-written file never carries one.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from .._fsutil import CHUNK, fsync_fd, hash_file, replace, sha256
from ..documents import MetaFile
from ..errors import LengthOrHashMismatchError

__all__ = ["BlobStore", "check_blob", "store_blob"]

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def store_blob(src: Path, blobs: Path) -> MetaFile:
    """Copy ``src`` into ``blobs/<sha256>``, hashing while copying; its length and sha256."""
    tmp = blobs / f".in-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        digest = sha256()
        length = 0
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fin:
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                length += len(chunk)
            out.flush()
            fsync_fd(out.fileno())
        meta = MetaFile(length, {"sha256": digest.hexdigest()})
        replace(tmp, blobs / meta.sha256)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return meta


def check_blob(path: Path, meta: MetaFile, what: str) -> None:
    """:class:`LengthOrHashMismatchError` unless ``path`` holds exactly ``meta``'s bytes."""
    if not path.is_file():
        raise LengthOrHashMismatchError(f"{what}: blob {meta.sha256[:16]}... is missing")
    if hash_file(path) != (meta.sha256, meta.length):
        raise LengthOrHashMismatchError(f"{what}: blob {meta.sha256[:16]}... differs")


class BlobStore:
    """The content-addressed blob directory of a repository (``blobs/<sha256>``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, src: str | os.PathLike[str]) -> MetaFile:
        """Add a file; returns its length and sha256 (the blob's name)."""
        return store_blob(Path(src), self.root)

    def verify(self, meta: MetaFile) -> bool:
        """True when the stored blob has ``meta``'s length and sha256; raises otherwise."""
        check_blob(self.path(meta.sha256), meta, "blob store")
        return True
