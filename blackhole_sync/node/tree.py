"""Trees against manifests: the exact-match check, and placing verified files into a tree.

A tree (a staged tree under ``NODE/staging/``, or an installed one under ``NODE/versions/``)
must hold exactly what the manifest's artifacts for this platform say: each plain artifact
as a file by its name, each unpacked archive's members by their paths, with the listed mode,
length and sha256; nothing else, and no symbolic links. :func:`check_tree` reports every
difference; it is the one place file contents are compared with a manifest on the node.

:func:`place_file` and :func:`place_archive` put downloaded (already streamed-and-hashed)
files into a staged tree. They check names, types, lengths and collisions, not contents:
the install transaction runs :func:`check_tree` over the whole tree before anything goes live.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from .._fsutil import copy_file, fsync_dir, hash_file, remove_tree
from ..codecs import extract_archive
from ..documents import Artifact, check_safe_name
from ..errors import FormatError, InstallError, LengthOrHashMismatchError, UnsafePathError

__all__ = ["check_tree", "check_tree_shape", "place_archive", "place_file"]

#: path -> (type, mode, length, sha256) of one entry a tree must hold.
Expected = dict[str, tuple[str, int, int | None, str | None]]


def expected_entries(artifacts: Sequence[Artifact]) -> Expected:
    """What a tree must hold for ``artifacts``: path -> (type, mode, length, sha256)."""
    want: Expected = {}
    for a in artifacts:
        if a.unpack is None:
            want[a.name] = ("file", a.mode, a.length, a.sha256)
        else:
            for m in a.unpack.members:
                want[m.path] = (m.type, m.mode, m.length, m.sha256)
    return want


def check_tree(
    tree: Path, artifacts: Sequence[Artifact], *, fsync: bool = False, hashes: bool = True
) -> list[str]:
    """Problems of ``tree`` against ``artifacts`` (empty = exact match). Re-hashes every file.

    With ``fsync`` each file is flushed in the same pass that hashes it (one read, no second
    walk) and each directory after its entries: the install's check doubles as its fsync.
    With ``hashes=False`` only names, types, modes and sizes are compared
    (:func:`check_tree_shape`).
    """
    want = expected_entries(artifacts)
    problems: list[str] = []
    implicit: set[str] = set()
    for path in want:
        parts = path.split("/")
        implicit.update("/".join(parts[:i]) for i in range(1, len(parts)))
    seen: set[str] = set()
    for root, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, tree)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                problems.append(f"{rel}: unexpected symbolic link")
                continue
            spec = want.get(rel)
            if spec is None:
                if not (stat.S_ISDIR(st.st_mode) and rel in implicit):
                    problems.append(f"{rel}: not in the manifest")
                continue
            seen.add(rel)
            kind, mode, length, sha = spec
            if stat.S_IMODE(st.st_mode) != mode:
                problems.append(
                    f"{rel}: mode {oct(stat.S_IMODE(st.st_mode))}, expected {oct(mode)}"
                )
            if kind == "dir":
                if not stat.S_ISDIR(st.st_mode):
                    problems.append(f"{rel}: expected a directory")
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{rel}: expected a regular file")
                continue
            if st.st_size != length:
                problems.append(f"{rel}: {st.st_size} bytes, expected {length}")
                continue
            if not hashes:
                continue
            # The hash pass of this check: the bytes on disk against the signed manifest.
            digest, _n = hash_file(Path(full), fsync=fsync)
            if digest != sha:
                problems.append(f"{rel}: sha256 mismatch")
        if fsync:
            fsync_dir(Path(root))
    for missing in sorted(set(want) - seen):
        problems.append(f"{missing}: missing")
    return problems


def check_tree_shape(tree: Path, artifacts: Sequence[Artifact]) -> list[str]:
    """:func:`check_tree` without reading file contents: names, types, modes and sizes."""
    return check_tree(tree, artifacts, hashes=False)


def require_inside(tree: Path, parent: Path) -> None:
    """Raise :class:`UnsafePathError` unless ``tree`` is an entry directly inside ``parent``."""
    if Path(os.path.realpath(tree)).parent != Path(os.path.realpath(parent)):
        raise UnsafePathError(f"{tree} is not a directory made by new_staging_dir()")


def place_file(src: Path, artifact: Artifact, tree: Path) -> None:
    """Move the downloaded file ``src`` to ``tree/<artifact.name>`` with the manifest's mode.

    A hard link when ``src`` is on the same file system (never replacing anything), else a
    copy; ``src`` is removed. Its length must be the artifact's.
    """
    name = check_safe_name(artifact.name, "artifact name")
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{src} is not a regular file")
    if st.st_size != artifact.length:
        raise LengthOrHashMismatchError(
            f"{artifact.name}: staged file is {st.st_size} bytes, expected {artifact.length}"
        )
    dest = tree / name
    if os.path.lexists(dest):
        raise UnsafePathError(f"{artifact.name}: already staged")
    try:
        try:
            os.link(src, dest)  # never replaces; same file system
        except OSError:
            copy_file(src, dest, mode=0o600)
        os.unlink(src)
        os.chmod(dest, artifact.mode)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(dest)
        raise InstallError(f"staging {artifact.name} failed: {exc}") from exc


def place_archive(src: Path, artifact: Artifact, tree: Path, scratch: Path) -> None:
    """Extract an archive marked to unpack into ``tree`` (members at its root), safely.

    The archive is extracted into the new directory ``scratch`` first (bounded, no links out,
    see :func:`~blackhole_sync.codecs.extract_archive`); its top-level entries move into
    ``tree`` only when none collides with what is staged. ``scratch`` is always removed.
    """
    if artifact.unpack is None:
        raise FormatError(f"{artifact.name} is not marked to unpack")
    try:
        try:
            extract_archive(src, artifact.unpack, scratch)
        except OSError as exc:
            raise InstallError(f"extracting {artifact.name} failed: {exc}") from exc
        tops = sorted(os.listdir(scratch))
        for top in tops:
            if os.path.lexists(tree / top):
                raise UnsafePathError(f"{artifact.name}: {top!r} collides with staged files")
        for top in tops:
            os.rename(scratch / top, tree / top)
    finally:
        remove_tree(scratch)
