"""Delta patches: generate, bounded apply, and update-path planning (``UpdateOptimizer``).

A patch turns the bytes of an installed artifact (the *source*) into the bytes of a newer one
(the *output*). Patches are untrusted until their sha256 matches signed metadata, and even then
a patch is only a recipe: the output is accepted only when its own sha256 matches the manifest.

Codecs
------
A codec is anything with ``name``, ``diff(old, new) -> bytes`` and
``apply(old, patch, *, max_output) -> bytes`` (:class:`PatchCodec`); plugins add codecs through
the ``blackhole_sync_patch_codecs`` hook and :func:`codec_table` merges them with the built-ins.
Built-in:

``bsdiff4``
    bsdiff4 1.3 as shipped (``BSDIFF40``: bz2 streams). Decoded here with bounded bz2
    decompression, never with ``bsdiff4.patch`` (which decompresses without a bound).
``bsdiff4-lzma`` (the default)
    bsdiff4's raw control / diff / extra streams, each recompressed with a raw LZMA2 stream
    (no container overhead on tiny patches), in this container (integers little-endian)::

        magic        8 bytes   b"BHDLZ\\x00\\x00\\x01"
        output_len   u64       length of the output
        3 x stream   u8 method, u64 raw length, u64 compressed length   (control, diff, extra)
        the three compressed streams, back to back, and nothing after them

    The control stream is stored column-wise (all ``x``, then all ``y``, then all ``z``) which
    compresses better than bsdiff's 24-byte rows. Methods: 0 stored, 1 raw LZMA2,
    2 raw LZMA2 tuned for 8-byte fields (lc=0, lp=3, pb=3), 3 raw LZMA2 with pb=0.

Both built-ins share one bounded decoder: declared sizes are checked against bounds derived
from ``max_output`` before anything is decompressed, each stream is decompressed with
``max_length`` and refused when it grows past its declared size, and every control tuple is
validated (non-negative lengths, reads inside the source, sums equal to the declared sizes)
before ``bsdiff4.core.patch`` sees it.

File API
--------
:func:`apply_patch` is what the installer uses. It checks, in this order: the source's sha256
(:class:`~blackhole_sync.errors.PatchSourceMismatchError`), the patch's length and sha256
(:class:`~blackhole_sync.errors.LengthOrHashMismatchError`, a security refusal), the declared
output length (:class:`~blackhole_sync.errors.PatchOutputError`); then it applies the patch in
a child interpreter whose address space (``RLIMIT_AS``), CPU time and file size are limited,
under a timeout, into a temporary file beside ``output``; finally the output's length and
sha256 must match the manifest or the file is removed. Nothing is written outside
``output.parent`` and no partial output survives a failure.
"""

from __future__ import annotations

import base64
import bz2
import heapq
import itertools
import json
import lzma
import os
import pickle
import resource
import struct
import subprocess
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import attrs
import bsdiff4.core  # type: ignore[import-untyped]
import semver
from attrs import field, frozen

from .._fsutil import fsync_fd, replace, sha256, sha256_hex
from ..errors import (
    LengthOrHashMismatchError,
    MissingPluginError,
    NoSuchVersionError,
    PatchError,
    PatchFormatError,
    PatchOutputError,
    PatchSourceMismatchError,
)

__all__ = [
    "BUILTIN_CODECS",
    "DEFAULT_CANDIDATES",
    "DEFAULT_CODEC",
    "DEFAULT_DIFF_MEMORY_BUDGET",
    "ApplyLimits",
    "AvailableUpdates",
    "Bsdiff4Codec",
    "Bsdiff4LzmaCodec",
    "DeltaEdge",
    "DeltaPatch",
    "FullDownload",
    "MemberDelta",
    "PatchCodec",
    "SizedPatchCodec",
    "UpdateOptimizer",
    "UpdatePath",
    "apply_patch",
    "apply_patch_bytes",
    "codec_table",
    "codecs",
    "diff_memory_needed",
    "generate_delta",
    "get_codec",
    "member_deltas",
]

MiB = 1024 * 1024
GiB = 1024 * MiB

DEFAULT_CODEC = "bsdiff4-lzma"
#: Codecs tried by :func:`generate_delta` by default; the smallest patch wins, ties to the first.
DEFAULT_CANDIDATES: tuple[str, ...] = ("bsdiff4-lzma", "bsdiff4")
#: bsdiff's diff needs about 17 x old + 1 x new bytes; refuse to diff above this by default.
DEFAULT_DIFF_MEMORY_BUDGET = 2 * GiB

_HEAD_BYTES = 4096  # how much of a patch's start ``declared_output_length`` may look at
_CHUNK = 1 * MiB
_TUPLE = 24  # one bsdiff control tuple: three 8-byte sign-magnitude integers
_SIGN = 1 << 63


# -- codecs ---------------------------------------------------------------------------------


@runtime_checkable
class PatchCodec(Protocol):
    """A patch format. Implementations must be picklable (they are sent to the apply worker).

    ``apply`` must raise :class:`~blackhole_sync.errors.PatchFormatError` on a malformed patch
    and :class:`~blackhole_sync.errors.PatchOutputError` when the output would exceed
    ``max_output`` bytes -- before allocating it.
    """

    name: str

    def diff(self, old: bytes, new: bytes) -> bytes: ...

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes: ...


@runtime_checkable
class SizedPatchCodec(PatchCodec, Protocol):
    """A codec whose patches declare their output length in a header (optional extension)."""

    def declared_output_length(self, head: bytes) -> int:
        """Return the output length declared by a patch, given its first bytes (up to 4 KiB)."""
        ...


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


def _bounded_decompress(
    decompressor: lzma.LZMADecompressor | bz2.BZ2Decompressor,
    data: bytes,
    size: int | None,
    cap: int,
) -> bytes:
    """Decompress one whole stream into at most ``cap`` bytes (exactly ``size`` if given)."""
    limit = cap if size is None else min(size, cap)
    chunks: list[bytes] = []
    total = stalls = 0
    pending = data
    try:
        while True:
            chunk = decompressor.decompress(pending, max_length=limit + 1 - total)
            pending = b""
            total += len(chunk)
            if total > limit:
                if size is not None and size <= cap:
                    raise PatchFormatError("a stream decompresses past its declared size")
                raise PatchOutputError("a stream decompresses past the output bound")
            chunks.append(chunk)
            if decompressor.eof:
                break
            if decompressor.needs_input:
                raise PatchFormatError("truncated compressed stream")
            stalls = 0 if chunk else stalls + 1
            if stalls > 8:
                raise PatchFormatError("compressed stream makes no progress")
    except (lzma.LZMAError, OSError, EOFError, ValueError) as e:
        raise PatchFormatError(f"corrupt compressed stream: {e}") from e
    if decompressor.unused_data:
        raise PatchFormatError("trailing bytes after a compressed stream")
    if size is not None and total != size:
        raise PatchFormatError("a stream is shorter than its declared size")
    return b"".join(chunks)


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


def _check_declared(output_len: int, max_output: int) -> None:
    if output_len > max_output:
        raise PatchOutputError(
            f"patch declares {output_len} output bytes, more than the allowed {max_output}"
        )


class _BsdiffFamily:
    """Shared by the built-in codecs: one raw bsdiff, several encodings of its streams."""

    name: str = ""

    def encode(self, output_len: int, control: bytes, diff: bytes, extra: bytes) -> bytes:
        raise NotImplementedError

    def decode(self, patch: bytes, *, max_output: int) -> _RawPatch:
        raise NotImplementedError

    def declared_output_length(self, head: bytes) -> int:
        raise NotImplementedError

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
        _check_declared(output_len, max_output)
        if len_control + len_diff > len(patch) - self.HEADER:
            raise PatchFormatError("BSDIFF40 patch is truncated")
        at = self.HEADER
        cap_control, cap_diff, cap_extra = _stream_bounds(output_len)
        control = _bounded_decompress(
            bz2.BZ2Decompressor(), patch[at : at + len_control], None, cap_control
        )
        at += len_control
        diff = _bounded_decompress(bz2.BZ2Decompressor(), patch[at : at + len_diff], None, cap_diff)
        at += len_diff
        extra = _bounded_decompress(
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
_MAX_DICT = 64 * MiB


def _dict_size(raw_len: int) -> int:
    """LZMA2 dictionary size, derived from the declared raw length on both sides."""
    size = 4096
    while size < raw_len and size < _MAX_DICT:
        size *= 2
    return size


def _lzma_filters(method: int, raw_len: int, *, preset: int | None) -> list[dict[str, int]]:
    spec: dict[str, int] = {"id": lzma.FILTER_LZMA2, "dict_size": _dict_size(raw_len)}
    if preset is not None:
        spec = {"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": _dict_size(raw_len)}
    spec.update(_METHOD_OPTIONS[method])
    return [spec]


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
                filters=_lzma_filters(method, len(data), preset=self.PRESET),
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
        _check_declared(output_len, max_output)
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
                format=lzma.FORMAT_RAW, filters=_lzma_filters(method, raw_len, preset=None)
            )
            raws.append(_bounded_decompress(decompressor, body, raw_len, raw_len))
        return _RawPatch(output_len, _from_columns(raws[0]), raws[1], raws[2])


BUILTIN_CODECS: tuple[PatchCodec, ...] = (Bsdiff4LzmaCodec(), Bsdiff4Codec())

#: The built-in codecs by name. Use :func:`codec_table` to include plugin codecs.
codecs: dict[str, PatchCodec] = {c.name: c for c in BUILTIN_CODECS}


def codec_table(extra: Iterable[PatchCodec] = ()) -> dict[str, PatchCodec]:
    """Merge the built-in codecs with plugin ones; a name given twice is refused (ValueError)."""
    table = dict(codecs)
    for codec in extra:
        if not isinstance(codec, PatchCodec) or not isinstance(codec.name, str) or not codec.name:
            raise TypeError(f"{codec!r} is not a PatchCodec")
        if codec.name in table:
            raise ValueError(f"patch codec {codec.name!r} is registered twice")
        table[codec.name] = codec
    return table


def get_codec(name: str, table: Mapping[str, PatchCodec] | None = None) -> PatchCodec:
    """The codec called ``name``; MissingPluginError when no installed codec has that name."""
    table = codecs if table is None else table
    try:
        return table[name]
    except KeyError:
        raise MissingPluginError(
            f"no patch codec named {name!r}; install a plugin that provides it through the "
            "'blackhole_sync_patch_codecs' hook (entry-point group 'blackhole_sync')"
        ) from None


def _resolve(codec: str | PatchCodec, table: Mapping[str, PatchCodec] | None) -> PatchCodec:
    return get_codec(codec, table) if isinstance(codec, str) else codec


# -- records --------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return sha256_hex(data)


@frozen
class DeltaPatch:
    """A generated patch and what it connects (the fields a manifest's delta entry carries)."""

    from_sha256: str
    from_length: int
    to_sha256: str
    to_length: int
    codec: str
    patch_sha256: str
    patch_length: int
    patch: bytes = field(repr=False)

    @classmethod
    def from_bytes(cls, old: bytes, new: bytes, patch: bytes, codec: str) -> DeltaPatch:
        return cls(
            from_sha256=_sha256(old),
            from_length=len(old),
            to_sha256=_sha256(new),
            to_length=len(new),
            codec=codec,
            patch_sha256=_sha256(patch),
            patch_length=len(patch),
            patch=patch,
        )

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the patch bytes to ``path`` (a new file) atomically."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.patch)
                fh.flush()
                fsync_fd(fh.fileno())
            replace(tmp, target, sync=False)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@frozen
class ApplyLimits:
    """Bounds of one patch apply (all configurable; defaults suit artifacts up to ~1 GiB).

    The child's address space is ``memory_base + memory_per_output_byte * output_length +
    source length``; it gets ``cpu_seconds`` of CPU and ``timeout`` seconds of wall time.
    """

    memory_base: int = 256 * MiB
    memory_per_output_byte: int = 4
    timeout: float = 300.0
    cpu_seconds: int = 300

    def address_space(self, source_length: int, output_length: int) -> int:
        return self.memory_base + self.memory_per_output_byte * output_length + source_length


# -- applying -------------------------------------------------------------------------------


def _hash_file(path: Path, *, cap: int | None = None) -> tuple[str, int]:
    digest = sha256()
    total = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            total += len(chunk)
            if cap is not None and total > cap:
                return "", total
            digest.update(chunk)
    return digest.hexdigest(), total


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(_HEAD_BYTES)


def apply_patch_bytes(
    old: bytes,
    patch: bytes,
    *,
    codec: str | PatchCodec = DEFAULT_CODEC,
    max_output: int,
    source_sha256: str | None = None,
    output_sha256: str | None = None,
    table: Mapping[str, PatchCodec] | None = None,
) -> bytes:
    """Apply ``patch`` in this process (decompression is bounded, memory is not otherwise).

    For small inputs and tests; the installer uses :func:`apply_patch`.
    """
    impl = _resolve(codec, table)
    if source_sha256 is not None and _sha256(old) != source_sha256:
        raise PatchSourceMismatchError("the source is not the one the patch was made from")
    if isinstance(impl, SizedPatchCodec):
        _check_declared(impl.declared_output_length(patch[:_HEAD_BYTES]), max_output)
    out = impl.apply(old, patch, max_output=max_output)
    if len(out) > max_output:
        raise PatchOutputError("patch produced more bytes than allowed")
    if output_sha256 is not None and _sha256(out) != output_sha256:
        raise PatchOutputError("patch output does not match the expected sha256")
    return out


_ERRORS: dict[str, type[PatchError]] = {
    cls.__name__: cls
    for cls in (PatchError, PatchFormatError, PatchOutputError, PatchSourceMismatchError)
}


def apply_patch(
    source: str | os.PathLike[str],
    patch: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    source_sha256: str,
    patch_sha256: str,
    patch_length: int,
    output_sha256: str,
    output_length: int,
    codec: str | PatchCodec = DEFAULT_CODEC,
    table: Mapping[str, PatchCodec] | None = None,
    limits: ApplyLimits | None = None,
) -> None:
    """Apply the patch file to the source file, writing ``output`` (inside its staging dir).

    The expected values come from signed metadata. Raises PatchSourceMismatchError,
    LengthOrHashMismatchError, PatchFormatError, PatchOutputError or PatchError; on any failure
    ``output`` is not created (an existing file there is left as it was).
    """
    source, patch, output = Path(source), Path(patch), Path(output)
    limits = ApplyLimits() if limits is None else limits
    impl = _resolve(codec, table)
    if not output.parent.is_dir():
        raise ValueError(f"output directory {output.parent} does not exist")

    digest, source_length = _hash_file(source)
    if digest != source_sha256:
        raise PatchSourceMismatchError(f"{source} is not the source this patch was made from")

    if os.stat(patch).st_size != patch_length:
        raise LengthOrHashMismatchError(f"patch {patch} has the wrong length")
    digest, _ = _hash_file(patch, cap=patch_length)
    if digest != patch_sha256:
        raise LengthOrHashMismatchError(f"patch {patch} does not match its signed sha256")

    if isinstance(impl, SizedPatchCodec):
        _check_declared(impl.declared_output_length(_read_head(patch)), output_length)

    request = {
        "source": os.fspath(source.absolute()),
        "source_sha256": source_sha256,
        "patch": os.fspath(patch.absolute()),
        "patch_sha256": patch_sha256,
        "max_output": output_length,
        "address_space": limits.address_space(source_length, output_length),
        "cpu_seconds": limits.cpu_seconds,
    }
    if isinstance(impl, _BsdiffFamily) and codecs.get(impl.name) == impl:
        request["codec"] = impl.name
    else:
        request["codec_pickle"] = base64.b64encode(pickle.dumps(impl)).decode("ascii")

    fd, tmp_name = _mkstemp(output)
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        request["output"] = tmp_name
        _run_worker(request, limits.timeout)
        digest, length = _hash_file(tmp, cap=output_length)
        if length != output_length or digest != output_sha256:
            raise PatchOutputError("patch output does not match the expected length and sha256")
        with open(tmp, "rb") as fh:
            fsync_fd(fh.fileno())
        replace(tmp, output, sync=False)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mkstemp(output: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)


def _run_worker(request: dict[str, object], timeout: float) -> None:
    code = "from blackhole_sync.codecs.delta import _worker_main; _worker_main()"
    try:
        proc = subprocess.run(
            [sys.executable, "-P", "-c", code],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
            close_fds=True,
        )
    except subprocess.TimeoutExpired as e:
        raise PatchError(f"patch apply timed out after {timeout} s") from e
    if proc.returncode == 0:
        return
    try:
        report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        cls = _ERRORS.get(report["error"], PatchError)
        message = str(report["message"])
    except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError):
        cls = PatchError
        message = f"patch worker exited with status {proc.returncode}"
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        if tail:
            message += f": {tail[0][:300]}"
    raise cls(message)


def _worker_main() -> None:
    """The apply worker: reads one JSON request on stdin, writes the output file, exits.

    Errors are reported as one JSON line on stdout and exit status 3.
    """
    request = json.loads(sys.stdin.buffer.read())
    try:
        _worker_apply(request)
    except PatchError as e:
        _report(type(e).__name__, str(e))
    except MemoryError:
        _report("PatchOutputError", "patch apply exceeded its memory bound")
    sys.exit(0)


def _report(name: str, message: str) -> None:
    sys.stdout.write(json.dumps({"error": name, "message": message}) + "\n")
    sys.stdout.flush()
    sys.exit(3)


def _worker_apply(request: dict[str, object]) -> None:
    max_output = int(str(request["max_output"]))
    address_space = int(str(request["address_space"]))
    cpu = int(str(request["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_output, max_output))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if "codec" in request:
        impl = get_codec(str(request["codec"]))
    else:
        # The pickle comes from our own parent process over a pipe, not from the network.
        impl = pickle.loads(base64.b64decode(str(request["codec_pickle"])))  # noqa: S301
    old = Path(str(request["source"])).read_bytes()
    if _sha256(old) != request["source_sha256"]:
        raise PatchSourceMismatchError("the source changed while the patch was being applied")
    patch = Path(str(request["patch"])).read_bytes()
    if _sha256(patch) != request["patch_sha256"]:
        raise PatchFormatError("the patch changed while it was being applied")
    out = impl.apply(old, patch, max_output=max_output)
    del old, patch
    if len(out) > max_output:
        raise PatchOutputError("patch produced more bytes than allowed")
    fd = os.open(str(request["output"]), os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    with os.fdopen(fd, "wb") as fh:
        fh.write(out)


# -- generating -----------------------------------------------------------------------------


def diff_memory_needed(old_length: int, new_length: int) -> int:
    """Peak memory of a bsdiff diff: two 8-byte suffix arrays over old, plus both inputs."""
    return 17 * old_length + new_length


def _encode_candidates(
    old: bytes, new: bytes, impls: Sequence[PatchCodec]
) -> tuple[PatchCodec, bytes]:
    raw: tuple[bytes, bytes, bytes] | None = None
    best: tuple[PatchCodec, bytes] | None = None
    for impl in impls:
        if isinstance(impl, _BsdiffFamily):
            if raw is None:
                raw = bsdiff4.core.diff(old, new)
            patch = impl.encode(len(new), *raw)
        else:
            patch = impl.diff(old, new)
        if best is None or len(patch) < len(best[1]):
            best = (impl, patch)
    if best is None:
        raise ValueError("no codec to generate a delta with")
    return best


def generate_delta(
    old_path: str | os.PathLike[str],
    new_path: str | os.PathLike[str],
    *,
    codec: str | Sequence[str] = DEFAULT_CANDIDATES,
    table: Mapping[str, PatchCodec] | None = None,
    memory_budget: int = DEFAULT_DIFF_MEMORY_BUDGET,
    verify: bool = True,
) -> DeltaPatch | None:
    """Diff two files with each candidate codec and keep the smallest patch.

    Returns None (no delta; ship the full artifact) when the diff would need more than
    ``memory_budget`` bytes (see :func:`diff_memory_needed`). With ``verify`` the patch is
    applied once and checked before it is returned.
    """
    names = [codec] if isinstance(codec, str) else list(codec)
    impls = [get_codec(n, table) for n in names]
    old_path, new_path = Path(old_path), Path(new_path)
    need = diff_memory_needed(os.stat(old_path).st_size, os.stat(new_path).st_size)
    if need > memory_budget:
        return None
    old = old_path.read_bytes()
    new = new_path.read_bytes()
    return _delta_from_bytes(old, new, impls, verify=verify)


def _delta_from_bytes(
    old: bytes, new: bytes, impls: Sequence[PatchCodec], *, verify: bool
) -> DeltaPatch:
    impl, patch = _encode_candidates(old, new, impls)
    delta = DeltaPatch.from_bytes(old, new, patch, impl.name)
    if verify:
        out = apply_patch_bytes(old, patch, codec=impl, max_output=len(new))
        if out != new:
            raise PatchOutputError(f"codec {impl.name!r} does not round-trip this pair")
    return delta


# -- archives: per-member deltas ------------------------------------------------------------


@frozen
class MemberDelta:
    """How one member of an unpacked archive gets to its new contents.

    ``status``: ``"unchanged"`` (same sha256: copy the old member), ``"delta"`` (apply
    ``patch`` to the old member of the same path) or ``"full"`` (new member, or no delta pays
    off: it must come from the full download).
    """

    path: str
    status: Literal["unchanged", "delta", "full"]
    sha256: str
    length: int
    patch: DeltaPatch | None = None


def member_deltas(
    old_members: Mapping[str, str | os.PathLike[str]],
    new_members: Mapping[str, str | os.PathLike[str]],
    *,
    codec: str | Sequence[str] = DEFAULT_CANDIDATES,
    table: Mapping[str, PatchCodec] | None = None,
    memory_budget: int = DEFAULT_DIFF_MEMORY_BUDGET,
    keep_larger: bool = False,
) -> dict[str, MemberDelta]:
    """Per-member deltas between two unpacked archives (member path -> file on disk).

    Pure: reads the files, writes nothing. Members only in the old tree are not listed.
    A patch at least as large as its member is reported "full" unless ``keep_larger``: a
    publisher that wants a complete set (every changed member patchable, so a node never
    needs the whole archive) keeps it and judges the set by its total size.
    """
    result: dict[str, MemberDelta] = {}
    for name in sorted(new_members):
        new_path = Path(new_members[name])
        digest, length = _hash_file(new_path)
        old_ref = old_members.get(name)
        if old_ref is not None and _hash_file(Path(old_ref)) == (digest, length):
            result[name] = MemberDelta(name, "unchanged", digest, length)
            continue
        delta = None
        if old_ref is not None:
            delta = generate_delta(
                old_ref, new_path, codec=codec, table=table, memory_budget=memory_budget
            )
        if delta is None or (delta.patch_length >= length and not keep_larger):
            result[name] = MemberDelta(name, "full", digest, length)
        else:
            result[name] = MemberDelta(name, "delta", digest, length, delta)
    return result


# -- planning -------------------------------------------------------------------------------


@frozen
class DeltaEdge:
    """A published patch from one version of an artifact to another."""

    from_version: str
    to_version: str
    patch_length: int
    codec: str = DEFAULT_CODEC


@frozen
class FullDownload:
    """The whole artifact of ``version``."""

    version: str
    length: int


@frozen
class AvailableUpdates:
    """What can be fetched for one artifact: full lengths by version, and delta edges."""

    full: Mapping[str, int] = field(factory=dict)
    deltas: Sequence[DeltaEdge] = ()


@frozen
class UpdatePath:
    """The plan: a chain of deltas, one full download, or nothing (already there)."""

    current: str | None
    target: str
    steps: tuple[DeltaEdge | FullDownload, ...]
    total_bytes: int

    @property
    def is_delta(self) -> bool:
        return bool(self.steps) and isinstance(self.steps[0], DeltaEdge)


@attrs.define
class UpdateOptimizer:
    """Plans how to reach a version with the fewest bytes, and makes / applies deltas.

    ``max_chain``: most deltas in one chain. ``max_chain_fraction``: a chain costing more than
    this fraction of the full artifact is not worth its risk; fetch the full artifact instead.
    """

    max_chain: int = 8
    max_chain_fraction: float = 0.8
    table: Mapping[str, PatchCodec] = field(factory=lambda: dict(codecs))
    codec: str | Sequence[str] = DEFAULT_CANDIDATES
    diff_memory_budget: int = DEFAULT_DIFF_MEMORY_BUDGET

    def calculate_update_path(
        self,
        current: str | None,
        target: str,
        *,
        available: AvailableUpdates,
        exclude: Collection[DeltaEdge] = (),
    ) -> UpdatePath:
        """The cheapest way from ``current`` to ``target`` (``exclude``: edges that failed)."""
        goal = semver.Version.parse(target)
        full_length = available.full.get(target)
        full = (
            None
            if full_length is None
            else UpdatePath(current, target, (FullDownload(target, full_length),), full_length)
        )
        if current is not None and semver.Version.parse(current) == goal:
            return UpdatePath(current, target, (), 0)
        chain = None if current is None else self._cheapest_chain(current, goal, available, exclude)
        if chain is not None:
            cost = sum(e.patch_length for e in chain)
            if full_length is None or cost <= self.max_chain_fraction * full_length:
                return UpdatePath(current, target, tuple(chain), cost)
        if full is None:
            raise NoSuchVersionError(f"no full artifact or delta chain reaches {target}")
        return full

    def _cheapest_chain(
        self,
        current: str,
        goal: semver.Version,
        available: AvailableUpdates,
        exclude: Collection[DeltaEdge],
    ) -> list[DeltaEdge] | None:
        start = semver.Version.parse(current)
        edges: dict[semver.Version, list[tuple[semver.Version, DeltaEdge]]] = {}
        for edge in available.deltas:
            if edge in exclude or edge.codec not in self.table or edge.patch_length < 0:
                continue
            a, b = semver.Version.parse(edge.from_version), semver.Version.parse(edge.to_version)
            if start <= a < b <= goal:  # only forward, never past the target
                edges.setdefault(a, []).append((b, edge))
        # Dijkstra over (version, hops) so the hop bound stays exact.
        tie = itertools.count()
        queue: list[tuple[int, int, int, semver.Version, tuple[DeltaEdge, ...]]] = [
            (0, 0, next(tie), start, ())
        ]
        settled: set[tuple[semver.Version, int]] = set()
        while queue:
            cost, hops, _, version, path = heapq.heappop(queue)
            if version == goal:
                return list(path)
            if (version, hops) in settled or hops >= self.max_chain:
                continue
            settled.add((version, hops))
            for nxt, edge in edges.get(version, ()):
                heapq.heappush(
                    queue, (cost + edge.patch_length, hops + 1, next(tie), nxt, (*path, edge))
                )
        return None

    def generate_delta(
        self, old: bytes | str | os.PathLike[str], new: bytes | str | os.PathLike[str]
    ) -> DeltaPatch | None:
        """Make a delta (bytes or file paths); None when over the diff memory budget."""
        if isinstance(old, bytes) and isinstance(new, bytes):
            if diff_memory_needed(len(old), len(new)) > self.diff_memory_budget:
                return None
            names = [self.codec] if isinstance(self.codec, str) else list(self.codec)
            impls = [get_codec(n, self.table) for n in names]
            return _delta_from_bytes(old, new, impls, verify=True)
        if isinstance(old, bytes) or isinstance(new, bytes):
            raise TypeError("pass two byte strings or two paths")
        return generate_delta(
            old, new, codec=self.codec, table=self.table, memory_budget=self.diff_memory_budget
        )

    def apply_delta(self, current: bytes, delta: DeltaPatch) -> bytes:
        """Apply ``delta`` to ``current`` in this process, checking every hash it carries."""
        if _sha256(delta.patch) != delta.patch_sha256 or len(delta.patch) != delta.patch_length:
            raise LengthOrHashMismatchError("the patch does not match its recorded sha256")
        return apply_patch_bytes(
            current,
            delta.patch,
            codec=delta.codec,
            table=self.table,
            max_output=delta.to_length,
            source_sha256=delta.from_sha256,
            output_sha256=delta.to_sha256,
        )
