"""The bsdiff codecs: ``bsdiff4`` and ``bsdiff4-lzma`` (kept so nodes apply existing patches).

``bsdiff4``
    bsdiff4 1.3 as shipped (``BSDIFF40``: bz2 streams). Decoded here with bounded bz2
    decompression, never with ``bsdiff4.patch`` (which decompresses without a bound).
``bsdiff4-lzma``
    bsdiff4's raw control / diff / extra streams, each recompressed with a raw LZMA2 stream,
    in this container (integers little-endian)::

        magic        8 bytes   b"BHDLZ\\x00\\x00\\x01"
        output_len   u64       length of the output
        3 x stream   u8 method, u64 raw length, u64 compressed length   (control, diff, extra)
        the three compressed streams, back to back, and nothing after them

    The control stream is stored column-wise (all ``x``, then all ``y``, then all ``z``) which
    compresses better than bsdiff's 24-byte rows. Methods: 0 stored, 1 raw LZMA2,
    2 raw LZMA2 tuned for 8-byte fields (lc=0, lp=3, pb=3), 3 raw LZMA2 with pb=0.

Both share one bounded decoder: declared sizes are checked against bounds derived from
``max_output`` before anything is decompressed, each stream is decompressed with
``max_length`` and refused when it grows past its declared size, and every control tuple is
validated (non-negative lengths, reads inside the source, sums equal to the declared sizes)
before ``bsdiff4.core.patch`` sees it.

They are no longer what a release builder makes by default: bsdiff's diff needs 17 x old + new
bytes (:func:`diff_memory_needed`) and 3-15 x HDiffPatch's CPU for patches that were larger on
every measured pair but one. They are not streaming codecs: the apply holds the output and its
three raw streams (see :class:`~blackhole_sync.codecs.delta.apply.ApplyLimits`).
"""

from __future__ import annotations

import bz2
import itertools
import lzma
import struct
from collections.abc import Sequence

import bsdiff4.core  # type: ignore[import-untyped]
from attrs import frozen

from ...errors import PatchFormatError, PatchOutputError
from .base import MiB, check_declared
from .streams import bounded_decompress, lzma_filters

__all__ = ["Bsdiff4Codec", "Bsdiff4LzmaCodec", "diff_memory_needed"]

_TUPLE = 24  # one bsdiff control tuple: three 8-byte sign-magnitude integers
_SIGN = 1 << 63


def diff_memory_needed(old_length: int, new_length: int) -> int:
    """Peak memory of a bsdiff diff: two 8-byte suffix arrays over old, plus both inputs."""
    return 17 * old_length + new_length


@frozen
class _RawPatch:
    output_len: int
    control: bytes
    diff: bytes
    extra: bytes


def _decode_int64(raw: int) -> int:
    return -(raw & ~_SIGN) if raw & _SIGN else raw


def _check_control(raw: _RawPatch, old_len: int) -> None:
    """Refuse control tuples that would read outside the source or miscount any stream."""
    control = raw.control
    if len(control) % _TUPLE:
        raise PatchFormatError("control stream is not a whole number of tuples")
    newpos = oldpos = sum_x = sum_y = 0
    out_len = raw.output_len
    for rx, ry, rz in struct.iter_unpack("<QQQ", control):
        if rx & _SIGN or ry & _SIGN:
            raise PatchFormatError("negative length in a control tuple")
        x, y, z = rx, ry, _decode_int64(rz)
        if x > out_len - newpos:
            raise PatchFormatError("control tuple writes past the declared output length")
        if x and (oldpos < 0 or oldpos > old_len - x):
            raise PatchFormatError("control tuple reads outside the source")
        newpos += x
        oldpos += x
        sum_x += x
        if y > out_len - newpos:
            raise PatchFormatError("control tuple writes past the declared output length")
        newpos += y
        sum_y += y
        oldpos += z
        if not 0 <= oldpos <= old_len:
            raise PatchFormatError("control tuple seeks outside the source")
    if newpos != out_len:
        raise PatchFormatError("control tuples do not add up to the declared output length")
    if sum_x != len(raw.diff) or sum_y != len(raw.extra):
        raise PatchFormatError("control tuples do not add up to the diff and extra streams")


def _stream_bounds(output_len: int) -> tuple[int, int, int]:
    """Largest raw control, diff and extra streams a patch of this output length can need."""
    return _TUPLE * (output_len + 1), output_len, output_len


def _finish_apply(old: bytes, raw: _RawPatch) -> bytes:
    _check_control(raw, len(old))
    try:
        out: bytes = bsdiff4.core.patch(old, raw.output_len, raw.control, raw.diff, raw.extra)
    except (ValueError, RuntimeError) as e:
        raise PatchFormatError(f"bsdiff4 refused the patch: {e}") from e
    if len(out) != raw.output_len:
        raise PatchOutputError("patch produced a different length than it declared")
    return out


class _BsdiffFamily:
    """One raw bsdiff, several encodings of its streams."""

    name: str = ""

    def encode(self, output_len: int, control: bytes, diff: bytes, extra: bytes) -> bytes:
        raise NotImplementedError

    def decode(self, patch: bytes, *, max_output: int) -> _RawPatch:
        raise NotImplementedError

    def declared_output_length(self, head: bytes) -> int:
        raise NotImplementedError

    def diff_memory(self, old_len: int, new_len: int) -> int:
        """Peak memory of a diff (both inputs and the encoded streams included)."""
        return diff_memory_needed(old_len, new_len) + old_len + new_len

    def diff(self, old: bytes, new: bytes) -> bytes:
        control, diff, extra = bsdiff4.core.diff(old, new)
        return self.encode(len(new), control, diff, extra)

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes:
        return _finish_apply(old, self.decode(patch, max_output=max_output))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Bsdiff4Codec(_BsdiffFamily):
    """``BSDIFF40`` exactly as bsdiff4 1.3 writes it; decoded here under bounds."""

    name = "bsdiff4"
    MAGIC = b"BSDIFF40"
    HEADER = 32

    def encode(self, output_len: int, control: bytes, diff: bytes, extra: bytes) -> bytes:
        parts = [bz2.compress(control), bz2.compress(diff), bz2.compress(extra)]
        head = self.MAGIC + struct.pack("<QQQ", len(parts[0]), len(parts[1]), output_len)
        return head + b"".join(parts)

    def _header(self, head: bytes) -> tuple[int, int, int]:
        if len(head) < self.HEADER or head[:8] != self.MAGIC:
            raise PatchFormatError("not a BSDIFF40 patch")
        fields = struct.unpack("<QQQ", head[8:32])
        if any(f & _SIGN for f in fields):
            raise PatchFormatError("negative size in a BSDIFF40 header")
        len_control, len_diff, output_len = fields
        return len_control, len_diff, output_len

    def declared_output_length(self, head: bytes) -> int:
        return self._header(head)[2]

    def decode(self, patch: bytes, *, max_output: int) -> _RawPatch:
        len_control, len_diff, output_len = self._header(patch)
        check_declared(output_len, max_output)
        if len_control + len_diff > len(patch) - self.HEADER:
            raise PatchFormatError("BSDIFF40 patch is truncated")
        at = self.HEADER
        cap_control, cap_diff, cap_extra = _stream_bounds(output_len)
        control = bounded_decompress(
            bz2.BZ2Decompressor(), patch[at : at + len_control], None, cap_control
        )
        at += len_control
        diff = bounded_decompress(bz2.BZ2Decompressor(), patch[at : at + len_diff], None, cap_diff)
        at += len_diff
        extra = bounded_decompress(
            bz2.BZ2Decompressor(), patch[at:], None, min(cap_extra, output_len - len(diff))
        )
        return _RawPatch(output_len, control, diff, extra)


# Methods of the bsdiff4-lzma container. Never renumber: patches in the wild name them.
_STORED, _LZMA2, _LZMA2_FIELDS, _LZMA2_PB0 = 0, 1, 2, 3
_METHOD_OPTIONS: dict[int, dict[str, int]] = {
    _LZMA2: {},
    _LZMA2_FIELDS: {"lc": 0, "lp": 3, "pb": 3},
    _LZMA2_PB0: {"pb": 0},
}
#: Largest LZMA2 dictionary of a bsdiff4-lzma stream (the format fixed it at 64 MiB).
_MAX_DICT = 64 * MiB


def _filters(method: int, raw_len: int, *, preset: int | None) -> list[dict[str, int]]:
    return lzma_filters(_METHOD_OPTIONS[method], raw_len, _MAX_DICT, preset=preset)


def _to_columns(control: bytes) -> bytes:
    n = len(control) // _TUPLE
    view = memoryview(control)
    return b"".join(
        b"".join(view[i * _TUPLE + col * 8 : i * _TUPLE + col * 8 + 8] for i in range(n))
        for col in range(3)
    )


def _from_columns(columns: bytes) -> bytes:
    if len(columns) % _TUPLE:
        raise PatchFormatError("control stream is not a whole number of tuples")
    n = len(columns) // _TUPLE
    cols = [struct.unpack_from(f"<{n}Q", columns, col * 8 * n) for col in range(3)]
    return struct.pack(f"<{3 * n}Q", *itertools.chain.from_iterable(zip(*cols, strict=True)))


class Bsdiff4LzmaCodec(_BsdiffFamily):
    """bsdiff4's raw streams, each in a raw LZMA2 stream, in our own bounded container."""

    name = "bsdiff4-lzma"
    MAGIC = b"BHDLZ\x00\x00\x01"
    _STREAM = struct.Struct("<BQQ")
    HEADER = 16 + 3 * _STREAM.size
    PRESET = 9 | lzma.PRESET_EXTREME
    #: Methods tried per stream when encoding (control, diff, extra); the smallest wins.
    TRIALS: tuple[tuple[int, ...], ...] = ((_LZMA2_FIELDS,), (_LZMA2, _LZMA2_PB0), (_LZMA2,))

    def _compress(self, data: bytes, methods: Sequence[int]) -> tuple[int, bytes]:
        best = (_STORED, data)
        if not data:
            return best
        for method in methods:
            packed = lzma.compress(
                data,
                format=lzma.FORMAT_RAW,
                filters=_filters(method, len(data), preset=self.PRESET),
            )
            if len(packed) < len(best[1]):
                best = (method, packed)
        return best

    def encode(self, output_len: int, control: bytes, diff: bytes, extra: bytes) -> bytes:
        streams = [_to_columns(control), diff, extra]
        head = [self.MAGIC, struct.pack("<Q", output_len)]
        bodies = []
        for data, methods in zip(streams, self.TRIALS, strict=True):
            method, packed = self._compress(data, methods)
            head.append(self._STREAM.pack(method, len(data), len(packed)))
            bodies.append(packed)
        return b"".join(head + bodies)

    def declared_output_length(self, head: bytes) -> int:
        if len(head) < 16 or head[:8] != self.MAGIC:
            raise PatchFormatError("not a bsdiff4-lzma patch")
        (output_len,) = struct.unpack_from("<Q", head, 8)
        return int(output_len)

    def decode(self, patch: bytes, *, max_output: int) -> _RawPatch:
        output_len = self.declared_output_length(patch)
        check_declared(output_len, max_output)
        if len(patch) < self.HEADER:
            raise PatchFormatError("bsdiff4-lzma patch is truncated")
        streams = [self._STREAM.unpack_from(patch, 16 + i * self._STREAM.size) for i in range(3)]
        bounds = _stream_bounds(output_len)
        for (method, raw_len, _), bound in zip(streams, bounds, strict=True):
            if method != _STORED and method not in _METHOD_OPTIONS:
                raise PatchFormatError(f"unknown stream method {method}")
            if raw_len > bound:
                raise PatchOutputError("a stream declares more bytes than the output allows")
        if streams[1][1] + streams[2][1] != output_len:
            raise PatchFormatError("diff and extra streams do not add up to the output length")
        if sum(s[2] for s in streams) != len(patch) - self.HEADER:
            raise PatchFormatError("bsdiff4-lzma stream lengths do not match the patch length")
        at = self.HEADER
        raws: list[bytes] = []
        for method, raw_len, comp_len in streams:
            body = patch[at : at + comp_len]
            at += comp_len
            if method == _STORED:
                if comp_len != raw_len:
                    raise PatchFormatError("stored stream length differs from its raw length")
                raws.append(body)
                continue
            decompressor = lzma.LZMADecompressor(
                format=lzma.FORMAT_RAW, filters=_filters(method, raw_len, preset=None)
            )
            raws.append(bounded_decompress(decompressor, body, raw_len, raw_len))
        return _RawPatch(output_len, _from_columns(raws[0]), raws[1], raws[2])
