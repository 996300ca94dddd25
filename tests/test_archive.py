"""Hostile archives: every path rule of safe extraction, for tar and zip, built by hand.

Each case must be refused with a typed error and leave nothing outside the staging dir."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from blackhole_sync.codecs.archive import extract_archive
from blackhole_sync.documents import Artifact, Member, Unpack
from blackhole_sync.errors import (
    FormatError,
    LengthExceededError,
    LengthOrHashMismatchError,
    UnsafePathError,
)

GOOD = b"#!/bin/sh\necho ok\n"


def fmember(path: str, data: bytes = GOOD, mode: int = 0o755) -> Member:
    return Member(path, mode, "file", len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def dmember(path: str, mode: int = 0o755) -> Member:
    return Member(path, mode, "dir")


# -- archive builders (raw headers, so nothing is sanitised on the way in) ----------------------


def tar_bytes(entries: Sequence[tuple[tarfile.TarInfo, bytes | None]], comp: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode=f"w:{comp}" if comp else "w", format=tarfile.GNU_FORMAT
    ) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tfile(name: str, data: bytes = GOOD, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def tspecial(
    name: str, kind: bytes, linkname: str = "", mode: int = 0o755
) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    return info, None


def zip_bytes(entries: Sequence[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def zfile(name: str, data: bytes = GOOD, mode: int = 0o100755) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir(mode=0o700)
    return path


def extract(
    tmp_path: Path, staging: Path, blob: bytes, fmt: str, members: Sequence[Member]
) -> Path:
    src = tmp_path / f"archive.{fmt}"
    src.write_bytes(blob)
    dest = staging / "x"
    extract_archive(src, Unpack(fmt, tuple(members)), dest)
    return dest


def assert_nothing_written(tmp_path: Path, staging: Path) -> None:
    assert os.listdir(staging) == []
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert outside == sorted(["staging", *(p.name for p in tmp_path.glob("archive.*"))])
    assert not Path("/tmp/evil-blackhole").exists()


# -- well-formed archives ---------------------------------------------------------------------


@pytest.mark.parametrize("comp", ["", "gz", "xz", "bz2"])
def test_tar_extracts_listed_members_with_manifest_modes(
    comp: str, tmp_path: Path, staging: Path
) -> None:
    d = tspecial("bin", tarfile.DIRTYPE, mode=0o755)
    blob = tar_bytes([d, tfile("bin/app"), tfile("README", b"hi", 0o644)], comp)
    fmt = f"tar.{comp}" if comp else "tar"
    members = [dmember("bin"), fmember("bin/app"), fmember("README", b"hi", 0o644)]
    dest = extract(tmp_path, staging, blob, fmt, members)
    assert (dest / "bin" / "app").read_bytes() == GOOD
    assert stat.S_IMODE(os.stat(dest / "bin" / "app").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest / "README").st_mode) == 0o644


def test_zip_extracts_listed_members(tmp_path: Path, staging: Path) -> None:
    blob = zip_bytes([zfile("lib/", b"", 0o040755), zfile("lib/a.so", b"x" * 5000, 0o100644)])
    members = [dmember("lib"), fmember("lib/a.so", b"x" * 5000, 0o644)]
    dest = extract(tmp_path, staging, blob, "zip", members)
    assert (dest / "lib" / "a.so").read_bytes() == b"x" * 5000


def test_tar_dot_slash_prefix_is_accepted(tmp_path: Path, staging: Path) -> None:
    blob = tar_bytes([tspecial(".", tarfile.DIRTYPE), tfile("./app")])
    dest = extract(tmp_path, staging, blob, "tar", [fmember("app")])
    assert (dest / "app").read_bytes() == GOOD


# -- hostile tar ------------------------------------------------------------------------------

TAR_CASES = {
    "absolute_name": ([tfile("/tmp/evil-blackhole")], [fmember("app")], UnsafePathError),
    "dotdot": ([tfile("../evil-blackhole")], [fmember("app")], UnsafePathError),
    "nested_dotdot": ([tfile("a/../../evil-blackhole")], [fmember("app")], UnsafePathError),
    "backslash": ([tfile("..\\evil-blackhole")], [fmember("app")], UnsafePathError),
    "symlink": (
        [tspecial("app", tarfile.SYMTYPE, "/tmp/evil-blackhole")],
        [fmember("app")],
        UnsafePathError,
    ),
    "symlink_then_write_through_it": (
        [tspecial("lib", tarfile.SYMTYPE, "/tmp"), tfile("lib/evil-blackhole")],
        [dmember("lib"), fmember("lib/evil-blackhole")],
        UnsafePathError,
    ),
    "hard_link": (
        [tfile("app"), tspecial("app2", tarfile.LNKTYPE, "/etc/passwd")],
        [fmember("app"), fmember("app2")],
        UnsafePathError,
    ),
    "char_device": ([tspecial("app", tarfile.CHRTYPE)], [fmember("app")], UnsafePathError),
    "block_device": ([tspecial("app", tarfile.BLKTYPE)], [fmember("app")], UnsafePathError),
    "fifo": ([tspecial("app", tarfile.FIFOTYPE)], [fmember("app")], UnsafePathError),
    "setuid_bit": ([tfile("app", mode=0o4755)], [fmember("app")], UnsafePathError),
    "setgid_bit": ([tfile("app", mode=0o2755)], [fmember("app")], UnsafePathError),
    "duplicate_name": ([tfile("app"), tfile("app")], [fmember("app")], UnsafePathError),
    "duplicate_after_dot_slash": (
        [tfile("app"), tfile("./app")],
        [fmember("app")],
        UnsafePathError,
    ),
    "member_not_in_manifest": ([tfile("app"), tfile("extra")], [fmember("app")], UnsafePathError),
    "member_missing": (
        [tfile("app")],
        [fmember("app"), fmember("other")],
        LengthOrHashMismatchError,
    ),
    "wrong_hash": (
        [tfile("app", b"#!/bin/sh\necho no\n")],
        [fmember("app")],
        LengthOrHashMismatchError,
    ),
    "wrong_declared_length": (
        [tfile("app", GOOD + b"more")],
        [fmember("app")],
        LengthOrHashMismatchError,
    ),
    "wrong_mode": ([tfile("app", mode=0o777)], [fmember("app")], LengthOrHashMismatchError),
    "file_where_manifest_says_dir": ([tfile("app")], [dmember("app")], UnsafePathError),
}


@pytest.mark.parametrize("case", sorted(TAR_CASES))
def test_hostile_tar_refused(case: str, tmp_path: Path, staging: Path) -> None:
    entries, members, error = TAR_CASES[case]
    blob = tar_bytes(entries)
    with pytest.raises(error):
        extract(tmp_path, staging, blob, "tar", members)
    assert_nothing_written(tmp_path, staging)


def test_tar_bomb_declaring_more_than_the_manifest_is_cut(tmp_path: Path, staging: Path) -> None:
    big = bytes(50 * 1024 * 1024)
    blob = tar_bytes([tfile("app", big)], "gz")
    assert len(blob) < 200_000
    with pytest.raises(LengthOrHashMismatchError):
        extract(tmp_path, staging, blob, "tar.gz", [fmember("app")])
    assert_nothing_written(tmp_path, staging)


def test_truncated_tar_is_a_format_error(tmp_path: Path, staging: Path) -> None:
    data = os.urandom(100_000)
    blob = tar_bytes([tfile("app", data)], "gz")[:50_000]
    member = fmember("app", data)
    with pytest.raises(FormatError):
        extract(tmp_path, staging, blob, "tar.gz", [member])
    assert_nothing_written(tmp_path, staging)


# -- hostile zip ------------------------------------------------------------------------------

ZIP_CASES = {
    "absolute_name": ([zfile("/tmp/evil-blackhole")], [fmember("app")], UnsafePathError),
    "dotdot": ([zfile("../evil-blackhole")], [fmember("app")], UnsafePathError),
    "backslash_dotdot": ([zfile("..\\evil-blackhole")], [fmember("app")], UnsafePathError),
    "drive_letter": ([zfile("C:/evil-blackhole")], [fmember("app")], UnsafePathError),
    "symlink": (
        [zfile("app", b"/tmp/evil-blackhole", 0o120777)],
        [fmember("app")],
        UnsafePathError,
    ),
    "char_device": ([zfile("app", b"", 0o020644)], [fmember("app")], UnsafePathError),
    "setuid_bit": ([zfile("app", mode=0o104755)], [fmember("app")], UnsafePathError),
    "sticky_dir": ([zfile("d/", b"", 0o041777)], [dmember("d")], UnsafePathError),
    "duplicate_name": ([zfile("app"), zfile("app")], [fmember("app")], UnsafePathError),
    "member_not_in_manifest": ([zfile("app"), zfile("extra")], [fmember("app")], UnsafePathError),
    "member_missing": ([zfile("app")], [fmember("app"), fmember("b")], LengthOrHashMismatchError),
    "wrong_hash": (
        [zfile("app", b"#!/bin/sh\necho no\n")],
        [fmember("app")],
        LengthOrHashMismatchError,
    ),
}


@pytest.mark.parametrize("case", sorted(ZIP_CASES))
def test_hostile_zip_refused(case: str, tmp_path: Path, staging: Path) -> None:
    entries, members, error = ZIP_CASES[case]
    with pytest.warns(UserWarning) if case == "duplicate_name" else _nothing():
        blob = zip_bytes(entries)
    with pytest.raises(error):
        extract(tmp_path, staging, blob, "zip", members)
    assert_nothing_written(tmp_path, staging)


def test_zip_bomb_is_cut_at_the_manifest_length(tmp_path: Path, staging: Path) -> None:
    big = bytes(50 * 1024 * 1024)
    blob = zip_bytes([zfile("app", big)])
    assert len(blob) < 200_000
    with pytest.raises((LengthOrHashMismatchError, LengthExceededError)):
        extract(tmp_path, staging, blob, "zip", [fmember("app")])
    assert_nothing_written(tmp_path, staging)


def test_encrypted_zip_entry_refused(tmp_path: Path, staging: Path) -> None:
    blob = bytearray(zip_bytes([zfile("app")]))
    # set the "encrypted" flag in the local and central headers
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = blob.find(sig)
        off = at + (6 if sig == b"PK\x03\x04" else 8)
        blob[off] |= 0x01
    with pytest.raises(UnsafePathError):
        extract(tmp_path, staging, bytes(blob), "zip", [fmember("app")])
    assert_nothing_written(tmp_path, staging)


def test_extraction_refuses_an_existing_destination(tmp_path: Path, staging: Path) -> None:
    (staging / "x").mkdir()
    with pytest.raises(FileExistsError):
        extract(tmp_path, staging, tar_bytes([tfile("app")]), "tar", [fmember("app")])


def test_store_stage_archive_installs_members(tmp_path: Path) -> None:
    from blackhole_sync.node.store import NodeStore

    blob = tar_bytes([tspecial("bin", tarfile.DIRTYPE), tfile("bin/app")], "gz")
    members = (dmember("bin"), fmember("bin/app"))
    artifact = Artifact(
        "bundle.tar.gz",
        len(blob),
        {"sha256": hashlib.sha256(blob).hexdigest()},
        unpack=Unpack("tar.gz", members),
    )
    with NodeStore.create(tmp_path / "node", root_bytes=b"{}", config_text="") as store:
        tree = store.new_staging_dir()
        src = tmp_path / "bundle.tar.gz"
        src.write_bytes(blob)
        store.stage_archive(src, artifact, tree)
        assert (tree / "bin" / "app").read_bytes() == GOOD
        assert store.check_tree(tree, [artifact]) == []
        # a second archive with the same member collides instead of overwriting
        with pytest.raises(UnsafePathError):
            store.stage_archive(src, artifact, tree)
        assert sorted(os.listdir(store.staging_dir)) == [tree.name]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
