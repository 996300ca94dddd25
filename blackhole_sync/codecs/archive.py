"""Release archives (tar, compressed tar, zip): the one reader, and the builder's writer.

Both sides read an archive through :func:`iter_entries` and nothing else: the release builder
to list the members it signs (:func:`list_members`), to split an archive into files for
per-member deltas (:func:`extract_files`) and to lay out its sandbox tree; the node to install
it (:func:`extract_archive`). An archive is untrusted input even after its own sha256 matched:
it is what the release keys signed, but a mistake or a compromised build machine must still not
be able to write outside the directory it is extracted into. :func:`iter_entries` therefore
refuses -- never rewrites -- with :class:`UnsafePathError`:

* absolute names, ``..``/``.``/empty components, backslashes, drive letters, NUL and control
  characters (:func:`~blackhole_sync.documents.check_safe_path` on the name as stored: a zip
  entry's ``orig_filename``, never ``zipfile``'s cleaned-up ``filename``; one leading ``./`` is
  the only thing dropped);
* symbolic and hard links, devices, FIFOs, sparse files and any other special type;
* setuid/setgid/sticky bits, and encrypted zip entries;
* a name that appears twice (also after dropping ``./``), and a name used both as a file and as
  a directory (``a`` a file, ``a/b`` a member);
* more than :data:`MAX_ENTRIES` entries.

A malformed or truncated archive is a :class:`FormatError`; a member that yields more bytes
than its header declares is a :class:`LengthExceededError`. :func:`extract_archive` adds the
node's rules:

* it writes only into a directory it creates itself (fresh, empty, 0700), opening every path
  component relative to its parent's descriptor with ``O_NOFOLLOW`` and every file with
  ``O_CREAT | O_EXCL`` -- nothing is ever followed or replaced;
* it refuses any entry not listed in the signed manifest (``artifact.unpack.members``), and any
  listed member that is missing, of another type or mode, length or sha256 --
  :class:`UnsafePathError` / :class:`LengthOrHashMismatchError`;
* it reads each member with a cap of its declared length (a decompression bomb stops there);
* it applies the manifest's modes, not the archive's or the umask's.

On any error the partly extracted directory is removed before the exception propagates.

:func:`pack_directory` is the writer: a deterministic, uncompressed tar of a directory (sorted
entries, mtime 0, owner 0, no links or special bits), so that the same tree packs to the same
bytes and deltas between directory releases stay small.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO

from .._fsutil import CHUNK, fsync_fd, remove_tree, sha256
from ..documents import Member, Unpack, check_safe_path
from ..errors import (
    FormatError,
    LengthExceededError,
    LengthOrHashMismatchError,
    UnsafePathError,
)

__all__ = [
    "ARCHIVE_SUFFIXES",
    "ArchiveEntry",
    "MAX_ENTRIES",
    "archive_format",
    "extract_archive",
    "extract_files",
    "iter_entries",
    "list_members",
    "pack_directory",
]

#: Most entries an archive may have (a manifest lists each one).
MAX_ENTRIES = 100_000
#: File name suffix -> unpack format, longest first.
ARCHIVE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".tar.xz", "tar.xz"),
    (".txz", "tar.xz"),
    (".tar.bz2", "tar.bz2"),
    (".tbz2", "tar.bz2"),
    (".tar", "tar"),
    (".zip", "zip"),
)

_TAR_COMPRESSION = {"tar": "", "tar.gz": "gz", "tar.xz": "xz", "tar.bz2": "bz2"}
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
#: What tarfile, zipfile and their decompressors raise on malformed input (zipfile decodes a
#: name flagged UTF-8 strictly).
_MALFORMED = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    UnicodeDecodeError,
)
#: zipfile on an unsupported compression method or feature.
_UNSUPPORTED = (NotImplementedError, RuntimeError)


def archive_format(name: str) -> str:
    """The unpack format of an archive file name (``ValueError`` if none fits)."""
    lower = name.lower()
    for suffix, fmt in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return fmt
    raise ValueError(f"{name!r} is not a tar or zip archive (cannot mark it to unpack)")


class ArchiveEntry:
    """One entry as read from an archive: checked name, kind, permission bits, declared size."""

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
        self.mode = mode  # permission bits (never special bits); None when the archive has none
        self.size = size  # declared in the header (0 for a directory)
        self.opener = opener  # files only; valid until the iteration moves on

    def chunks(self, cap: int) -> Iterator[bytes]:
        """The member's bytes in chunks; :class:`LengthExceededError` past ``cap`` bytes."""
        if self.opener is None:
            raise ValueError(f"archive member {self.name!r} is a directory")
        read = 0
        try:
            with self.opener() as handle:
                while chunk := handle.read(min(CHUNK, cap - read + 1)):
                    read += len(chunk)
                    if read > cap:
                        raise LengthExceededError(
                            f"archive member {self.name!r} expands past {cap} bytes"
                        )
                    yield chunk
        except _MALFORMED as exc:
            raise FormatError(f"malformed archive: {exc}") from exc
        except _UNSUPPORTED as exc:
            raise FormatError(f"unsupported archive entry: {exc}") from exc


def _normalise(raw: str, *, is_dir: bool) -> str | None:
    """The member path for a stored name; None for the archive's own root (``./``)."""
    name = raw.rstrip("/") if is_dir else raw
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

            def opener(current: tarfile.TarInfo = info) -> IO[bytes]:
                handle = tf.extractfile(current)
                if handle is None:  # pragma: no cover - regular files always have data
                    raise FormatError(f"archive member {current.name!r} has no data")
                return handle

            if kind == "dir":
                yield ArchiveEntry(name, kind, info.mode, 0, None)
            else:
                yield ArchiveEntry(name, kind, info.mode, info.size, opener)


def _zip_entries(fileobj: BinaryIO) -> Iterator[ArchiveEntry]:
    size = os.fstat(fileobj.fileno()).st_size
    with zipfile.ZipFile(fileobj) as zf:
        for info in zf.infolist():
            raw = info.orig_filename  # as stored: zipfile's .filename is cut at NUL
            if "\x00" in raw:
                raise UnsafePathError(f"archive member {raw!r}: NUL in name")
            # zipfile would seek there (a negative offset is an OSError, not a format error)
            if not 0 <= info.header_offset < size:
                raise FormatError(f"malformed archive: member {raw!r} lies outside the file")
            if info.flag_bits & 0x1:
                raise UnsafePathError(f"archive member {raw!r} is encrypted")
            unix = info.external_attr >> 16 if info.create_system == 3 else 0
            ftype = stat.S_IFMT(unix)
            is_dir = raw.endswith("/")
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                what = "a link" if ftype == stat.S_IFLNK else "a device or special file"
                raise UnsafePathError(f"archive member {raw!r} is {what}")
            if ftype == stat.S_IFDIR:
                is_dir = True
            elif ftype == stat.S_IFREG and is_dir:
                raise UnsafePathError(f"archive member {raw!r}: file mode on a directory name")
            name = _normalise(raw, is_dir=is_dir)
            if name is None:
                continue

            def opener(current: zipfile.ZipInfo = info) -> IO[bytes]:
                handle: IO[bytes] = zf.open(current)
                return handle

            yield ArchiveEntry(
                name,
                "dir" if is_dir else "file",
                unix & 0o7777 if unix else None,
                0 if is_dir else info.file_size,
                None if is_dir else opener,
            )


def iter_entries(src: Path, fmt: str, *, max_entries: int = MAX_ENTRIES) -> Iterator[ArchiveEntry]:
    """Entries of an archive in stored order, each checked by the rules of the module docstring.

    Read an entry's data (:meth:`ArchiveEntry.chunks`) before asking for the next one: tar
    archives are read as a stream.
    """
    if fmt not in Unpack.FORMATS:
        raise FormatError(f"unknown archive format {fmt!r}")
    kinds: dict[str, str] = {}  # every name seen -> "file" | "dir"
    parents: set[str] = set()  # every directory a name implies
    try:
        with open(src, "rb") as fileobj:
            entries = _zip_entries(fileobj) if fmt == "zip" else _tar_entries(fileobj, fmt)
            for entry in entries:
                _check_entry(entry, kinds, parents)
                if len(kinds) > max_entries:
                    raise FormatError(f"archive has more than {max_entries} entries")
                yield entry
    except _MALFORMED as exc:
        raise FormatError(f"malformed archive: {exc}") from exc
    except _UNSUPPORTED as exc:
        raise FormatError(f"unsupported archive entry: {exc}") from exc


def _check_entry(entry: ArchiveEntry, kinds: dict[str, str], parents: set[str]) -> None:
    name = entry.name
    if entry.mode is not None and entry.mode & _SPECIAL_BITS:
        raise UnsafePathError(f"archive member {name!r} has setuid/setgid/sticky bits")
    if name in kinds:
        raise UnsafePathError(f"archive member {name!r} appears twice")
    if entry.kind == "file" and name in parents:
        raise UnsafePathError(f"archive member {name!r} is a file and a directory")
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if kinds.get(parent) == "file":
            raise UnsafePathError(f"archive member {name!r} lies under the file {parent!r}")
        parents.add(parent)
    kinds[name] = entry.kind


def _permissions(entry: ArchiveEntry) -> int:
    if entry.mode is None:  # a zip made elsewhere than on Unix: the usual defaults
        return 0o755 if entry.kind == "dir" else 0o644
    return stat.S_IMODE(entry.mode)


# -- the release builder's side ------------------------------------------------------------------


def list_members(path: Path, fmt: str) -> tuple[Member, ...]:
    """The manifest's member list of an archive: path, mode, type, length and sha256."""
    members: list[Member] = []
    for entry in iter_entries(path, fmt):
        mode = _permissions(entry)
        if entry.kind == "dir":
            members.append(Member(entry.name, mode, "dir"))
            continue
        digest = sha256()
        length = 0
        for chunk in entry.chunks(entry.size):
            digest.update(chunk)
            length += len(chunk)
        if length != entry.size:
            raise FormatError(f"archive member {entry.name!r} is shorter than its header says")
        members.append(Member(entry.name, mode, "file", length, {"sha256": digest.hexdigest()}))
    return tuple(members)


def extract_files(path: Path, fmt: str, dest: Path) -> dict[str, Path]:
    """Write each file member to ``dest/<n>`` (numbered, never by name); member path -> file.

    For per-member deltas: the files are compared and patched, never installed.
    """
    out: dict[str, Path] = {}
    for n, entry in enumerate(iter_entries(path, fmt)):
        if entry.kind != "file":
            continue
        target = dest / str(n)
        with open(target, "xb") as fo:
            for chunk in entry.chunks(entry.size):
                fo.write(chunk)
        out[entry.name] = target
    return out


def pack_directory(src: Path, dst: Path) -> None:
    """A deterministic uncompressed tar of ``src``'s contents (no links, no special bits)."""

    def entries(base: Path, rel: str) -> Iterator[tuple[Path, str]]:
        for child in sorted(base.iterdir(), key=lambda p: p.name):
            name = f"{rel}{child.name}"
            yield child, name
            if child.is_dir() and not child.is_symlink():
                yield from entries(child, name + "/")

    with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tf:
        for child, name in entries(src, ""):
            check_safe_path(name, f"{src.name}/{name}")
            st = child.lstat()
            if stat.S_ISLNK(st.st_mode) or not (
                stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
            ):
                raise UnsafePathError(f"{child}: links and special files cannot be released")
            if st.st_mode & _SPECIAL_BITS:
                raise UnsafePathError(f"{child}: setuid/setgid/sticky bits are not allowed")
            info = tarfile.TarInfo(name)
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = st.st_size
                with open(child, "rb") as fh:
                    tf.addfile(info, fh)


# -- the node's side -------------------------------------------------------------------------------


def _open_dir(parent: int, name: str, *, create: bool) -> int:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
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
        digest = sha256()
        written = 0
        for chunk in entry.chunks(member.length):
            written += len(chunk)
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
        fsync_fd(fd)
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
    for entry in iter_entries(src, fmt):
        seen.add(entry.name)
        member = expected.get(entry.name)
        if member is None:
            raise UnsafePathError(f"archive member {entry.name!r} is not in the manifest")
        if entry.kind != member.type:
            raise UnsafePathError(
                f"archive member {entry.name!r} is a {entry.kind}, the manifest says {member.type}"
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
    return seen
