"""The one home of the byte and file primitives: sha256, fsync, atomic replace and write.

Everything that must survive a crash goes through here: data is written to a temporary name,
fsynced, renamed over the final name, and the directory is fsynced. Copies stream in bounded
chunks (never a whole file in memory) and avoid ``sendfile``/``copy_file_range`` so that the
bytes pass through ``write`` where fault-injection tests can reach them.

A project test (``tests/test_single_home.py``) fails when ``hashlib.sha256(``, ``os.fsync(`` or
``os.replace(`` appear anywhere else in the library: one implementation, one place to get the
durability rules right (a directory fsync that the file system refuses with EINVAL or ENOTSUP, as
some network and FUSE file systems do, is not an error: there is nothing more it can make durable).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import signal
import stat
from pathlib import Path

__all__ = [
    "CHUNK",
    "CRASH_ENV",
    "checkpoint",
    "copy_file",
    "fsync_dir",
    "fsync_fd",
    "fsync_file",
    "hash_file",
    "remove_tree",
    "replace",
    "sha256",
    "sha256_hex",
    "tree_size",
    "write_atomic",
]

#: Read/write chunk size for streaming copies and hashing.
CHUNK = 1024 * 1024


def sha256(data: bytes = b"") -> hashlib._Hash:
    """A new incremental sha256 (the only hash the trust model uses)."""
    return hashlib.sha256(data)


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def fsync_fd(fd: int) -> None:
    """Flush an open file's data and metadata to stable storage."""
    os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (renames, creations, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # it cannot sync directories
            raise
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, sync: bool = True) -> None:
    """Rename ``src`` over ``dst`` atomically; with ``sync``, fsync ``dst``'s directory after.

    ``sync=False`` is for callers that rename several entries of one directory and sync it once.
    """
    os.replace(src, dst)
    if sync:
        fsync_dir(Path(dst).parent)


def hash_file(path: Path, *, fsync: bool = False) -> tuple[str, int]:
    """(sha256 hex, length) of a regular file, read in chunks; never follows a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        digest = hashlib.sha256()
        length = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = os.readv(fd, [buf])
            if not n:
                break
            digest.update(view[:n])
            length += n
        if fsync:
            os.fsync(fd)
        return digest.hexdigest(), length
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def copy_file(src: Path, dst: Path, *, mode: int = 0o600, fsync: bool = True) -> int:
    """Copy ``src`` to a new file ``dst`` (refusing to follow or replace anything). Returns bytes."""
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            total = 0
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                n = os.readv(sfd, [buf])
                if not n:
                    break
                _write_all(dfd, view[:n])
                total += n
            if fsync:
                os.fsync(dfd)
            return total
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync, rename, fsync the directory.

    With ``exclusive`` the final step is a hard link, which fails with :class:`FileExistsError`
    when ``path`` exists (atomic create-if-absent).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            _write_all(fd, memoryview(data))
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree, even one with read-only directories. No symlink follow."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    if not st.st_mode & stat.S_IWUSR or not st.st_mode & stat.S_IXUSR:
        os.chmod(path, 0o700)
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            remove_tree(Path(entry.path))
        else:
            os.unlink(entry.path)
    os.rmdir(path)


def tree_size(path: Path) -> int:
    """Bytes of regular files under ``path`` (0 when it does not exist)."""
    total = 0
    if not path.exists():
        return 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


#: Environment variable naming the crash checkpoint at which the process kills itself.
CRASH_ENV = "BLACKHOLE_SYNC_CRASH_AT"


def checkpoint(name: str) -> None:
    """A named crash point: SIGKILL this process here when ``BLACKHOLE_SYNC_CRASH_AT=name``.

    Crash-injection tests set the variable in a subprocess; otherwise this costs one lookup.
    """
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
