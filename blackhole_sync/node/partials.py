"""Resumable partial downloads: ``NODE/partial/<sha256>`` (ARCHITECTURE.md section 4).

A blob download writes into ``NODE/partial/<sha256>`` (a private 0700 directory, one file per
blob, named by the sha256 the signed manifest gives) instead of straight into staging, so a
download that is interrupted -- a lost connection, every source failing, a kill, a reboot --
continues where it stopped on the next attempt. The client re-hashes the kept prefix (never
trusting it), continues by range, verifies the whole blob against the signed length and
sha256 and only then moves it into staging; bytes that do not verify are discarded. Nothing
in ``partial/`` is ever activated or served to peers.

The directory is bounded: a file untouched for :data:`MAX_PARTIAL_AGE` seconds is removed,
and together the files hold at most :data:`MAX_PARTIAL_BYTES` (the oldest are removed first
to make room for a new download; a blob larger than the whole cap is downloaded without a
partial file, as before). Pruning happens each time a download asks for its partial file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from .._fsutil import remove_tree
from ..errors import FormatError, InstallError
from .layout import NodeLayout

__all__ = ["MAX_PARTIAL_AGE", "MAX_PARTIAL_BYTES", "partial_file", "prune_partials"]

#: Seconds a partial download is kept after it last grew; older ones are removed.
MAX_PARTIAL_AGE: Final = 7 * 24 * 3600
#: Bytes all partial downloads of a node may hold together (the oldest are removed first).
MAX_PARTIAL_BYTES: Final = 16 * 1024**3


def _partial_dir(layout: NodeLayout) -> Path:
    """``NODE/partial/``, created private (0700); refused when something else is there."""
    path = layout.partial_dir
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise InstallError(f"{path} is not a directory")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def prune_partials(
    layout: NodeLayout,
    *,
    keep: Iterable[str] = (),
    room: int = 0,
    max_bytes: int = MAX_PARTIAL_BYTES,
    max_age: float = MAX_PARTIAL_AGE,
    now: float | None = None,
) -> list[str]:
    """Remove stale partial downloads; returns the names removed.

    Removed: anything that is not a regular file named by a sha256, files older than
    ``max_age`` seconds, then the oldest files until the rest plus ``room`` bytes fit in
    ``max_bytes``. Names in ``keep`` are never removed by the size cap.
    """
    directory = layout.partial_dir
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    kept = set(keep)
    removed: list[str] = []
    files: list[tuple[float, str, int]] = []
    for name in os.listdir(directory):
        path = directory / name
        try:
            info = os.lstat(path)
            layout.partial(name)  # a lowercase hex sha256, or FormatError
        except FileNotFoundError:
            continue
        except FormatError:  # not a blob name: nothing a download left
            info = None
        if info is None or not stat.S_ISREG(info.st_mode) or now - info.st_mtime > max_age:
            _remove(path)
            removed.append(name)
            continue
        files.append((info.st_mtime, name, info.st_size))
    total = sum(size for _, _, size in files) + room
    for _mtime, name, size in sorted(files):
        if total <= max_bytes:
            break
        if name in kept:
            continue
        _remove(directory / name)
        removed.append(name)
        total -= size
    return removed


def partial_file(
    layout: NodeLayout,
    sha256: str,
    length: int,
    *,
    max_bytes: int = MAX_PARTIAL_BYTES,
    max_age: float = MAX_PARTIAL_AGE,
) -> Path | None:
    """The partial file a download of blob ``sha256`` (``length`` bytes) resumes into.

    Prepares ``NODE/partial/`` and prunes it to make room; returns None when the blob is
    larger than the whole cap (it is then downloaded without a partial file).
    """
    path = layout.partial(sha256)
    if length > max_bytes:
        return None
    _partial_dir(layout)
    try:
        held = os.lstat(path).st_size
    except FileNotFoundError:
        held = 0
    prune_partials(
        layout, keep=[sha256], room=max(0, length - held), max_bytes=max_bytes, max_age=max_age
    )
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        remove_tree(path)  # never follows a symlink
