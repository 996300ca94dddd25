"""Safe extraction of release archives (tar, compressed tar, zip) marked to unpack.

An archive is untrusted input even after its own sha256 matched: it is what the release keys
signed, but a mistake or a compromised build machine must still not be able to write outside
the node's staging directory. :func:`extract_archive` therefore

* writes only into a directory it creates itself (fresh, empty, 0700), opening every path
  component relative to its parent's descriptor with ``O_NOFOLLOW`` and every file with
  ``O_CREAT | O_EXCL`` -- nothing is ever followed or replaced;
* refuses (never rewrites) absolute names, ``..``/``.``/empty components, backslashes, NUL and
  control characters, symbolic and hard links, devices, FIFOs, sparse files, setuid/setgid/sticky
  bits, encrypted zip entries, and names that appear twice -- :class:`UnsafePathError`;
* refuses any entry not listed in the signed manifest (``artifact.unpack.members``), and any
  listed member that is missing, of another type or mode, length or sha256 --
  :class:`UnsafePathError` / :class:`LengthOrHashMismatchError`;
* reads each member with a cap of its declared length (a decompression bomb stops there);
* applies the manifest's modes, not the archive's or the umask's.

On any error the partly extracted directory is removed before the exception propagates.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO

from .._fsutil import CHUNK, remove_tree
from ..documents import Member, Unpack, check_safe_path
from ..errors import (
    FormatError,
    LengthExceededError,
    LengthOrHashMismatchError,
    UnsafePathError,
)

__all__ = ["ArchiveEntry", "extract_archive", "iter_entries"]

_TAR_COMPRESSION = {"tar": "", "tar.gz": "gz", "tar.xz": "xz", "tar.bz2": "bz2"}
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


class ArchiveEntry:
    """One entry as read from an archive: normalised name, kind, permission bits, size."""

    __slots__ = ("kind", "mode", "name", "opener", "size")

    def __init__(
        self,
        name: str,
        kind: str,
        mode: int | None,
        size: int,
        opener: Callable[[], IO[bytes]] | None,
    ) -> None:
        self.name = name
        self.kind = kind  # "file" | "dir"
        self.mode = mode  # permission bits incl. special bits, None when the archive has none
        self.size = size
        self.opener = opener


def _normalise(raw: str, *, is_dir: bool) -> str | None:
    """The member path for an archive name; None for the archive's own root (``./``)."""
    name = raw
    if is_dir:
        name = name.rstrip("/")
    if name.startswith("./"):
        name = name[2:]
    if is_dir and name in ("", "."):
        return None
    return check_safe_path(name, f"archive member {raw!r}")


def _tar_entries(fileobj: BinaryIO, fmt: str) -> Iterator[ArchiveEntry]:
    mode = f"r|{_TAR_COMPRESSION[fmt]}"
    archive: tarfile.TarFile = tarfile.open(fileobj=fileobj, mode=mode)  # type: ignore[call-overload]
    with archive as tf:
        for info in tf:
            if info.issym() or info.islnk():
                raise UnsafePathError(f"archive member {info.name!r} is a link")
            if info.ischr() or info.isblk() or info.isfifo():
                raise UnsafePathError(f"archive member {info.name!r} is a device or FIFO")
            if info.issparse():
                raise UnsafePathError(f"archive member {info.name!r} is a sparse file")
            if info.isdir():
                kind = "dir"
            elif info.isreg():
                kind = "file"
            else:
                raise UnsafePathError(f"archive member {info.name!r} has an unsupported type")
            name = _normalise(info.name, is_dir=kind == "dir")
            if name is None:
                continue
            current = info

            def opener(current: tarfile.TarInfo = current) -> IO[bytes]:
                handle = tf.extractfile(current)
                if handle is None:  # pragma: no cover - regular files always have data
                    raise FormatError(f"archive member {current.name!r} has no data")
                return handle

            yield ArchiveEntry(name, kind, info.mode, info.size, opener)


def _zip_entries(fileobj: BinaryIO) -> Iterator[ArchiveEntry]:
    with zipfile.ZipFile(fileobj) as zf:
        for info in zf.infolist():
            raw = info.orig_filename
            if "\x00" in raw:
                raise UnsafePathError(f"archive member {raw!r}: NUL in name")
            if info.flag_bits & 0x1:
                raise UnsafePathError(f"archive member {raw!r} is encrypted")
            unix = info.external_attr >> 16 if info.create_system == 3 else 0
            ftype = stat.S_IFMT(unix)
            is_dir = info.is_dir()
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                what = "a link" if ftype == stat.S_IFLNK else "a device or special file"
                raise UnsafePathError(f"archive member {raw!r} is {what}")
            if ftype == stat.S_IFDIR:
                is_dir = True
            elif ftype == stat.S_IFREG and is_dir:
                raise UnsafePathError(f"archive member {raw!r}: file mode on a directory name")
            name = _normalise(info.filename, is_dir=is_dir)
            if name is None:
                continue
            mode = stat.S_IMODE(unix) if unix else None
            current = info

            def opener(current: zipfile.ZipInfo = current) -> IO[bytes]:
                handle: IO[bytes] = zf.open(current)
                return handle

            yield ArchiveEntry(name, "dir" if is_dir else "file", mode, info.file_size, opener)


def iter_entries(src: Path, fmt: str) -> Iterator[ArchiveEntry]:
    """Entries of an archive, refusing links, devices and unsafe names as they are met."""
    if fmt not in Unpack.FORMATS:
        raise FormatError(f"unknown archive format {fmt!r}")
    with open(src, "rb") as fileobj:
        if fmt == "zip":
            yield from _zip_entries(fileobj)
        else:
            yield from _tar_entries(fileobj, fmt)


def _open_dir(parent: int, name: str, *, create: bool) -> int:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except (NotADirectoryError, OSError) as exc:
        raise UnsafePathError(f"cannot descend into {name!r}: {exc}") from exc


def _parent_fd(root: int, path: str) -> tuple[int, str]:
    """A descriptor of ``path``'s parent under ``root`` (created 0700 as needed), and the leaf."""
    parts = path.split("/")
    fd = os.dup(root)
    try:
        for part in parts[:-1]:
            nxt = _open_dir(fd, part, create=True)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def _write_member(root: int, entry: ArchiveEntry, member: Member) -> None:
    assert member.length is not None and member.sha256 is not None
    if entry.size != member.length:
        raise LengthOrHashMismatchError(
            f"archive member {entry.name!r} is {entry.size} bytes, the manifest says {member.length}"
        )
    assert entry.opener is not None
    parent, leaf = _parent_fd(root, entry.name)
    try:
        try:
            fd = os.open(
                leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent
            )
        except FileExistsError as exc:
            raise UnsafePathError(f"archive member {entry.name!r} appears twice") from exc
    finally:
        os.close(parent)
    try:
        digest = hashlib.sha256()
        written = 0
        with entry.opener() as handle:
            while True:
                chunk = handle.read(min(CHUNK, member.length - written + 1))
                if not chunk:
                    break
                written += len(chunk)
                if written > member.length:
                    raise LengthExceededError(
                        f"archive member {entry.name!r} expands past {member.length} bytes"
                    )
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        if written != member.length:
            raise LengthOrHashMismatchError(
                f"archive member {entry.name!r} has {written} bytes, expected {member.length}"
            )
        if digest.hexdigest() != member.sha256:
            raise LengthOrHashMismatchError(f"archive member {entry.name!r}: sha256 mismatch")
        os.fchmod(fd, member.mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def extract_archive(src: Path, unpack: Unpack, dest: Path) -> list[str]:
    """Extract ``src`` (format ``unpack.format``) into the new directory ``dest``.

    ``dest`` must not exist; it is created 0700 and removed again on any error. Every entry is
    checked against ``unpack.members`` (see the module docstring). Returns the member paths.
    """
    expected = {m.path: m for m in unpack.members}
    os.mkdir(dest, 0o700)
    try:
        root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            seen = _extract_into(root, src, unpack.format, expected)
        finally:
            os.close(root)
        missing = sorted(set(expected) - seen)
        if missing:
            raise LengthOrHashMismatchError(f"archive lacks members {missing[:5]}")
        # Directory modes last, deepest first, so read-only directories do not block writes.
        for path in sorted(expected, key=lambda p: p.count("/"), reverse=True):
            member = expected[path]
            if member.type == "dir":
                os.chmod(dest / path, member.mode)
        for dirpath, dirnames, _files in os.walk(dest):
            for d in dirnames:
                rel = os.path.relpath(os.path.join(dirpath, d), dest)
                if rel not in expected:  # implicit parent of a listed member
                    os.chmod(os.path.join(dirpath, d), 0o755)  # noqa: S103
    except BaseException:
        remove_tree(dest)
        raise
    return sorted(seen)


def _extract_into(root: int, src: Path, fmt: str, expected: dict[str, Member]) -> set[str]:
    seen: set[str] = set()
    try:
        for entry in iter_entries(src, fmt):
            if entry.name in seen:
                raise UnsafePathError(f"archive member {entry.name!r} appears twice")
            seen.add(entry.name)
            member = expected.get(entry.name)
            if member is None:
                raise UnsafePathError(f"archive member {entry.name!r} is not in the manifest")
            if entry.mode is not None and entry.mode & _SPECIAL_BITS:
                raise UnsafePathError(
                    f"archive member {entry.name!r} has setuid/setgid/sticky bits"
                )
            if entry.kind != member.type:
                raise UnsafePathError(
                    f"archive member {entry.name!r} is a {entry.kind}, the manifest says "
                    f"{member.type}"
                )
            if entry.mode is not None and stat.S_IMODE(entry.mode) != member.mode:
                raise LengthOrHashMismatchError(
                    f"archive member {entry.name!r} has mode {oct(entry.mode)}, the manifest "
                    f"says {oct(member.mode)}"
                )
            if entry.kind == "dir":
                parent, leaf = _parent_fd(root, entry.name)
                try:
                    os.close(_open_dir(parent, leaf, create=True))
                finally:
                    os.close(parent)
            else:
                _write_member(root, entry, member)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError) as exc:
        raise FormatError(f"malformed archive: {exc}") from exc
    except (NotImplementedError, RuntimeError) as exc:  # zip: unsupported compression
        raise FormatError(f"unsupported archive entry: {exc}") from exc
    return seen


def member_paths(members: Sequence[Member]) -> list[str]:
    return [m.path for m in members]
