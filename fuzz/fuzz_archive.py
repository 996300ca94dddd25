"""Fuzz target: archive extraction against a signed member list (``blackhole_sync.codecs.archive``).

The first byte picks the format (tar, tar.gz, tar.xz, tar.bz2, zip), the rest is the archive.
It is read as the release builder reads one (``list_members``) and extracted as a node installs
one (``extract_archive``) against the member list of the seed archive of that format -- the
manifest a release signed. Refusals are the library's errors; beyond not crashing:

* an extraction that succeeds wrote exactly the manifest's members, with its modes, lengths
  and sha256 (nothing more, nothing else);
* a refused one left nothing behind (the destination is gone);
* nothing is ever written outside the destination, whatever the names in the archive.

    python fuzz/fuzz_archive.py -max_total_time=600 fuzz/corpus/archive
"""

from __future__ import annotations

import atexit
import hashlib
import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["blackhole_sync.codecs.archive", "tarfile", "zipfile"]):
    from blackhole_sync.codecs.archive import extract_archive, list_members
    from blackhole_sync.documents import Member, Unpack
    from blackhole_sync.errors import BlackholeSyncError

from _harness import fuzz_main

FORMATS = ["tar", "tar.gz", "tar.xz", "tar.bz2", "zip"]
#: The release tree every seed archive holds: path -> (mode, content; None for a directory).
TREE: dict[str, tuple[int, bytes | None]] = {
    "bin": (0o755, None),
    "bin/app": (0o755, b"#!/bin/sh\necho fuzz\n" * 8),
    "etc": (0o750, None),
    "etc/app.conf": (0o640, b"x = 1\n"),
    "README": (0o644, b"the fuzz world's release\n"),
}

WORK = Path(tempfile.mkdtemp(prefix="bhsync-fuzz-archive-"))
atexit.register(shutil.rmtree, WORK, True)
#: Extraction happens two levels down, so an escape by ``..`` lands where it is seen.
BASE = WORK / "a" / "b"
BASE.mkdir(parents=True)
SOURCE = BASE / "input"


def _tar(fmt: str) -> bytes:
    buffer = io.BytesIO()
    mode = {"tar": "w", "tar.gz": "w:gz", "tar.xz": "w:xz", "tar.bz2": "w:bz2"}[fmt]
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for name, (perm, content) in TREE.items():
            info = tarfile.TarInfo(name)
            info.mode = perm
            info.mtime = 0
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, (perm, content) in TREE.items():
            info = zipfile.ZipInfo(name + ("/" if content is None else ""), (1980, 1, 1, 0, 0, 0))
            kind = stat.S_IFDIR if content is None else stat.S_IFREG
            info.external_attr = (kind | perm) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content or b"")
    return buffer.getvalue()


def seed_archive(fmt: str) -> bytes:
    return _zip() if fmt == "zip" else _tar(fmt)


def _manifest(fmt: str) -> Unpack:
    """What a release signs for the seed archive of ``fmt`` (read by the builder's reader)."""
    SOURCE.write_bytes(seed_archive(fmt))
    members = list_members(SOURCE, fmt)
    assert {m.path for m in members} == set(TREE), sorted(m.path for m in members)
    return Unpack(fmt, members)


MANIFESTS = {fmt: _manifest(fmt) for fmt in FORMATS}


def _check_tree(dest: Path, expected: tuple[Member, ...]) -> None:
    found = {
        os.path.relpath(os.path.join(d, n), dest)
        for d, dirs, files in os.walk(dest)
        for n in (*dirs, *files)
    }
    assert found == {m.path for m in expected}, f"extracted {sorted(found)}"
    for member in expected:
        path = dest / member.path
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == member.mode, (member.path, oct(st.st_mode))
        if member.type == "dir":
            assert stat.S_ISDIR(st.st_mode), member.path
        else:
            assert stat.S_ISREG(st.st_mode), member.path
            data = path.read_bytes()
            assert len(data) == member.length, member.path
            assert hashlib.sha256(data).hexdigest() == member.sha256, member.path


def _clear(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):  # a read-only directory blocks its removal
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o700)
    shutil.rmtree(path)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    fmt = FORMATS[data[0] % len(FORMATS)]
    SOURCE.write_bytes(data[1:])
    try:
        list_members(SOURCE, fmt)
    except BlackholeSyncError:
        pass
    dest = BASE / "dest"
    manifest = MANIFESTS[fmt]
    try:
        extract_archive(SOURCE, manifest, dest)
    except BlackholeSyncError:
        assert not dest.exists(), "a refused extraction left its directory behind"
    else:
        _check_tree(dest, manifest.members)
        _clear(dest)
    # nothing escaped: the only entries around the destination are the fuzz input's
    assert sorted(os.listdir(BASE)) == ["input"], os.listdir(BASE)
    assert os.listdir(BASE.parent) == ["b"], os.listdir(BASE.parent)
    assert os.listdir(WORK) == ["a"], os.listdir(WORK)


def seeds() -> dict[str, bytes]:
    return {fmt: bytes([i]) + seed_archive(fmt) for i, fmt in enumerate(FORMATS)}


if __name__ == "__main__":
    fuzz_main(test_one_input, seeds)
