"""Hostile patches: each refused with a typed error, nothing written outside staging.

Every file-API test puts the inputs in ``inputs/`` and the output in ``staging/``; after a
refusal ``staging/`` is empty and no other file in the tree changed. Applies run in a real
child interpreter (``apply_patch``); nothing is mocked.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import bsdiff4.core
import pytest

from blackhole_sync.codecs import delta as D
from blackhole_sync.codecs.delta.bsdiff import _to_columns
from blackhole_sync.codecs.delta.streams import dict_size
from blackhole_sync.errors import (
    LengthOrHashMismatchError,
    PatchError,
    PatchFormatError,
    PatchOutputError,
    PatchSourceMismatchError,
    SecurityError,
)

BOMB = 300 * 1024 * 1024
OLD = bytes(range(256)) * 64
NEW = OLD[:5000] + b"changed!" + OLD[5000:]


def _dict(n: int) -> int:
    return dict_size(n, 64 * 1024 * 1024)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tuples(*rows: tuple[int, int, int]) -> bytes:
    return b"".join(bsdiff4.core.encode_int64(v) for row in rows for v in row)


def lzma_raw(data: bytes, preset: int = 6) -> bytes:
    return lzma.compress(
        data,
        format=lzma.FORMAT_RAW,
        filters=[{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": _dict(len(data))}],
    )


def container(
    output_len: int, streams: list[tuple[int, int, bytes]], magic: bytes = D.Bsdiff4LzmaCodec.MAGIC
) -> bytes:
    """A bsdiff4-lzma container by hand: streams are (method, declared raw length, body)."""
    head = magic + struct.pack("<Q", output_len)
    for method, raw_len, body in streams:
        head += struct.pack("<BQQ", method, raw_len, len(body))
    return head + b"".join(body for _, _, body in streams)


def columns(control: bytes) -> bytes:
    return _to_columns(control)


@pytest.fixture(scope="module")
def lzma_bomb() -> bytes:
    """A ~46 KB raw LZMA2 stream that expands to 300 MiB of zeros."""
    return lzma.compress(
        bytes(BOMB),
        format=lzma.FORMAT_RAW,
        filters=[{"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": 1 << 20}],
    )


@pytest.fixture(scope="module")
def bz2_bomb() -> bytes:
    """A ~2 KB bz2 stream that expands to 300 MiB of zeros."""
    return bz2.compress(bytes(BOMB), 1)


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inputs = root / "inputs"
        self.staging = root / "staging"
        self.inputs.mkdir()
        self.staging.mkdir(mode=0o700)
        (root / "outside.txt").write_bytes(b"keep me")
        self.source = self.inputs / "source"
        self.source.write_bytes(OLD)

    def snapshot(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }

    def apply(self, patch: bytes, **overrides: object) -> None:
        path = self.inputs / "patch"
        path.write_bytes(patch)
        kwargs: dict[str, object] = {
            "source_sha256": sha(OLD),
            "patch_sha256": sha(patch),
            "patch_length": len(patch),
            "output_sha256": sha(NEW),
            "output_length": len(NEW),
            "codec": "bsdiff4-lzma",
        }
        kwargs.update(overrides)
        before = self.snapshot()
        try:
            D.apply_patch(self.source, path, self.staging / "out", **kwargs)  # type: ignore[arg-type]
        finally:
            if not (self.staging / "out").exists():
                assert list(self.staging.iterdir()) == [], "partial output left in staging"
                assert self.snapshot() == before, "something outside staging changed"


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    yield Tree(tmp_path)


# -- malformed -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["bsdiff4", "bsdiff4-lzma"])
@pytest.mark.parametrize("cut", [0, 7, 20, 40, 60, -1, -5])
def test_truncated_patch_is_a_format_error(tree: Tree, codec: str, cut: int) -> None:
    patch = D.get_codec(codec).diff(OLD, NEW)[:cut]
    with pytest.raises(PatchFormatError):
        tree.apply(patch, codec=codec)


@pytest.mark.parametrize("codec", ["bsdiff4", "bsdiff4-lzma"])
def test_wrong_magic_is_a_format_error(tree: Tree, codec: str) -> None:
    patch = D.get_codec(codec).diff(OLD, NEW)
    with pytest.raises(PatchFormatError, match="not a"):
        tree.apply(b"BSDIFF41" + patch[8:], codec=codec)
    other = "bsdiff4" if codec == "bsdiff4-lzma" else "bsdiff4-lzma"
    with pytest.raises(PatchFormatError):
        tree.apply(patch, codec=other)


def test_trailing_bytes_after_the_streams_are_a_format_error(tree: Tree) -> None:
    patch = D.get_codec("bsdiff4-lzma").diff(OLD, NEW)
    with pytest.raises(PatchFormatError):
        tree.apply(patch + b"\0")


@pytest.mark.parametrize(
    ("name", "rows", "diff_len", "extra_len"),
    [
        ("negative add length", [(-1, 10, 0)], 0, 10),
        ("negative extra length", [(5, -5, 0)], 5, 0),
        ("add reads past the source end", [(10, 0, len(OLD) - 5), (10, 0, 0)], 20, 0),
        ("seek before the source start", [(0, 0, -100), (10, 0, 0)], 10, 0),
        ("writes past the output", [(len(NEW) - 1, 0, -len(NEW) + 1), (0, 2, 0)], len(NEW) - 1, 1),
        ("sums short of the output", [(10, 0, 0)], 10, 0),
        ("sums disagree with the streams", [(10, len(NEW) - 10, 0)], 20, len(NEW) - 20),
    ],
)
def test_bad_control_tuples_are_refused_before_bsdiff_sees_them(
    tree: Tree, name: str, rows: list[tuple[int, int, int]], diff_len: int, extra_len: int
) -> None:
    out_len = len(NEW)
    control = tuples(*rows)
    diff, extra = bytes(diff_len), bytes(extra_len)
    if diff_len + extra_len != out_len:  # make the stream sums agree so the tuple check runs
        extra = bytes(out_len - diff_len)
    patch = container(
        out_len, [(0, len(control), columns(control)), (0, len(diff), diff), (0, len(extra), extra)]
    )
    with pytest.raises(PatchFormatError):
        tree.apply(patch)
    # the same tuples in plain BSDIFF40 are refused by our bounded decoder too
    shipped = D.Bsdiff4Codec().encode(out_len, control, diff, extra)
    with pytest.raises(PatchFormatError):
        tree.apply(shipped, codec="bsdiff4")


def test_control_stream_not_a_whole_number_of_tuples(tree: Tree) -> None:
    control = tuples((len(NEW), 0, 0)) + b"\0"
    patch = container(len(NEW), [(0, 25, control), (0, len(NEW), bytes(len(NEW))), (0, 0, b"")])
    with pytest.raises(PatchFormatError, match="tuples"):
        tree.apply(patch)


def test_corrupted_lzma_stream_is_a_format_error(tree: Tree) -> None:
    patch = bytearray(D.get_codec("bsdiff4-lzma").diff(OLD, NEW))
    body = D.Bsdiff4LzmaCodec.HEADER
    for i in range(body, len(patch)):
        patch[i] ^= 0x5A
    with pytest.raises(PatchFormatError):
        tree.apply(bytes(patch))


def test_unknown_stream_method_is_a_format_error(tree: Tree) -> None:
    patch = container(len(NEW), [(9, 0, b""), (0, len(NEW), bytes(len(NEW))), (0, 0, b"")])
    with pytest.raises(PatchFormatError, match="method"):
        tree.apply(patch)


# -- wrong source, wrong patch ----------------------------------------------------------------


def test_patch_applied_to_the_wrong_source_is_refused_before_any_apply(tree: Tree) -> None:
    tree.source.write_bytes(OLD[:-1] + b"X")
    # garbage patch: were it applied first, this would be a format error instead
    with pytest.raises(PatchSourceMismatchError):
        tree.apply(b"garbage")


def test_patch_with_a_wrong_sha256_is_a_security_refusal(tree: Tree) -> None:
    patch = D.get_codec("bsdiff4-lzma").diff(OLD, NEW)
    with pytest.raises(LengthOrHashMismatchError) as info:
        tree.apply(patch, patch_sha256=sha(patch + b"x"))
    assert isinstance(info.value, SecurityError)
    with pytest.raises(LengthOrHashMismatchError):
        tree.apply(patch, patch_length=len(patch) - 1)


def test_output_with_the_wrong_sha256_is_discarded(tree: Tree) -> None:
    patch = D.get_codec("bsdiff4-lzma").diff(OLD, NEW)
    with pytest.raises(PatchOutputError, match="sha256"):
        tree.apply(patch, output_sha256=sha(b"something else"))


def test_failed_apply_leaves_an_existing_output_untouched(tree: Tree) -> None:
    (tree.staging / "out").write_bytes(b"previous")
    with pytest.raises(PatchSourceMismatchError):
        tree.apply(b"x", source_sha256=sha(b"nope"))
    patch = D.get_codec("bsdiff4-lzma").diff(OLD, NEW)
    with pytest.raises(PatchOutputError):
        tree.apply(patch, output_sha256=sha(b"nope"))
    assert (tree.staging / "out").read_bytes() == b"previous"
    assert [p.name for p in tree.staging.iterdir()] == ["out"]


# -- huge outputs and bombs ---------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["bsdiff4", "bsdiff4-lzma"])
def test_declared_huge_output_is_refused_without_allocating(tree: Tree, codec: str) -> None:
    patch = bytearray(D.get_codec(codec).diff(OLD, NEW))
    at = 8 if codec == "bsdiff4-lzma" else 24  # where each format keeps the output length
    patch[at : at + 8] = struct.pack("<Q", 1 << 60)
    with pytest.raises(PatchOutputError, match="declares"):
        tree.apply(bytes(patch), codec=codec)
    tracemalloc.start()
    try:
        with pytest.raises(PatchOutputError):
            D.apply_patch_bytes(OLD, bytes(patch), codec=codec, max_output=1 << 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_lzma_bomb_past_its_declared_size_is_refused_in_bounded_memory(
    tree: Tree, lzma_bomb: bytes
) -> None:
    # declares a 1000-byte diff stream; the stream would inflate to 300 MiB
    patch = container(1000, [(0, 0, b""), (1, 1000, lzma_bomb), (0, 0, b"")])
    assert len(patch) < 64 * 1024
    limits = D.ApplyLimits(memory_base=160 * 1024 * 1024)  # far below 300 MiB
    with pytest.raises(PatchFormatError, match="past its declared size"):
        tree.apply(patch, output_length=1000, limits=limits)
    tracemalloc.start()
    try:
        with pytest.raises(PatchFormatError):
            D.apply_patch_bytes(b"", patch, codec="bsdiff4-lzma", max_output=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_lzma_bomb_that_declares_its_300_mib_is_refused_by_the_manifest_bound(
    tree: Tree, lzma_bomb: bytes
) -> None:
    patch = container(
        BOMB, [(0, 24, columns(tuples((BOMB, 0, 0)))), (1, BOMB, lzma_bomb), (0, 0, b"")]
    )
    with pytest.raises(PatchOutputError, match="declares"):
        tree.apply(patch)


def test_bsdiff4_bomb_is_refused_in_bounded_memory(tree: Tree, bz2_bomb: bytes) -> None:
    # bsdiff4.diff(b"", zeros) by hand: one tuple of BOMB extra bytes, bz2 of the zeros
    control = bz2.compress(tuples((0, BOMB, 0)))
    empty = bz2.compress(b"")
    honest = b"BSDIFF40" + struct.pack("<QQQ", len(control), len(empty), BOMB)
    honest += control + empty + bz2_bomb
    assert len(honest) < 4096
    with pytest.raises(PatchOutputError, match="declares"):
        tree.apply(honest, codec="bsdiff4")
    # the same bomb lying about its output length: decompression stops at the bound
    liar = b"BSDIFF40" + struct.pack("<QQQ", len(control), len(empty), len(NEW))
    liar += control + empty + bz2_bomb
    limits = D.ApplyLimits(memory_base=160 * 1024 * 1024)
    with pytest.raises(PatchOutputError, match="past the output bound"):
        tree.apply(liar, codec="bsdiff4", limits=limits)
    tracemalloc.start()
    try:
        with pytest.raises(PatchOutputError):
            D.apply_patch_bytes(OLD, liar, codec="bsdiff4", max_output=len(NEW))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_apply_past_the_memory_bound_is_refused(tree: Tree) -> None:
    # an honest 64 MiB output, but the child's address space cannot hold it: typed refusal
    size = 64 * 1024 * 1024
    zeros = bytes(size)
    body = lzma_raw(zeros, preset=0)
    patch = container(size, [(0, 24, columns(tuples((0, size, 0)))), (0, 0, b""), (1, size, body)])
    assert D.apply_patch_bytes(OLD, patch, codec="bsdiff4-lzma", max_output=size) == zeros
    limits = D.ApplyLimits(memory_base=1024 * 1024, memory_per_output_byte=0)
    with pytest.raises(PatchOutputError, match="memory bound"):
        tree.apply(patch, output_length=size, output_sha256=sha(zeros), limits=limits)


def test_apply_timeout_is_a_patch_error(tree: Tree) -> None:
    patch = D.get_codec("bsdiff4-lzma").diff(OLD, NEW)
    with pytest.raises(PatchError, match="timed out"):
        tree.apply(patch, limits=D.ApplyLimits(timeout=0.001))
