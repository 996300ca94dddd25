"""Transfer compression: artifacts travel as zstd frames when that saves bytes.

A release manifest keeps an artifact's ``length`` and ``hashes`` for the *installed* bytes and,
when its blob on the wire is compressed, adds ``transfer: {codec, length, sha256}`` for that
blob (:class:`~blackhole_sync.documents.Transfer`). Absent, the blob is the installed bytes.
Deltas are always made between installed bytes, never between transfer blobs.

Compressing (the release builder): :func:`compress_file` tries a cheap probe first -- up to
:data:`PROBE_SAMPLES` samples of :data:`PROBE_SAMPLE_BYTES` at level 3 -- so that random or
already-compressed data costs milliseconds, not a level-19 pass; then writes one zstd frame at
:data:`ZSTD_LEVEL` with the content size in its header, and keeps it only when it is smaller
than the input. Files under :data:`MIN_BYTES` are not compressed (what they would save is less
than a round trip's worth).

Decompressing (a node, or the builder reading an earlier release): :func:`decompress_file`
streams with its output bounded by the signed length: the frame must declare exactly that
length, decoding stops one byte past it (a zstd bomb is refused after ``length + 1`` bytes, in
the decoder's bounded memory: one window of at most 2 ** :data:`MAX_WINDOW_LOG` bytes), and
the result's length and sha256 are returned for the caller to check against the manifest.
The blob itself is authenticated by its signed sha256 before it is decompressed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from attrs import frozen

from .._fsutil import sha256
from ..errors import FormatError, LengthOrHashMismatchError

__all__ = [
    "MAX_WINDOW_LOG",
    "MIN_BYTES",
    "TRANSFER_CODECS",
    "ZSTD_LEVEL",
    "TransferBlob",
    "compress_file",
    "decompress_file",
]

#: Transfer codecs a node can decode.
TRANSFER_CODECS: tuple[str, ...] = ("zstd",)
#: zstd level of a transfer blob (one frame, content size written, no checksum: the manifest
#: carries sha256 of both sides).
ZSTD_LEVEL = 19
#: Artifacts smaller than this travel as they are.
MIN_BYTES = 64 * 1024
#: The probe: this many samples ...
PROBE_SAMPLES = 4
#: ... of this many bytes, spread over the file, compressed at level 3 ...
PROBE_SAMPLE_BYTES = 256 * 1024
#: ... must shrink to at most this share (basis points) of their size, else no compression.
PROBE_MAX_RATIO_BP = 9800
#: Largest zstd window a node accepts in a transfer blob (level 19 uses 2 ** 23).
MAX_WINDOW_LOG = 27

_CHUNK = 1024 * 1024


@frozen
class TransferBlob:
    """A compressed blob: its codec, length and sha256 (what ``transfer`` records)."""

    codec: str
    length: int
    sha256: str


class _HashingWriter:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = sha256()
        self.length = 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.digest.update(data)
        self.length += len(data)
        return len(data)


def _worth_compressing(src: Path, size: int) -> bool:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=3)
    taken = packed = 0
    with open(src, "rb") as fh:
        step = max(size // PROBE_SAMPLES, PROBE_SAMPLE_BYTES)
        for at in range(0, size, step):
            fh.seek(at)
            sample = fh.read(PROBE_SAMPLE_BYTES)
            taken += len(sample)
            packed += len(cctx.compress(sample))
            if taken >= PROBE_SAMPLES * PROBE_SAMPLE_BYTES:
                break
    return packed * 10_000 <= PROBE_MAX_RATIO_BP * taken


def compress_file(src: Path, dst: Path, *, level: int = ZSTD_LEVEL) -> TransferBlob | None:
    """Write ``src`` as one zstd frame to the new file ``dst``; None (and no ``dst``) when it
    would not save bytes (see the module docstring)."""
    import zstandard

    size = os.stat(src).st_size
    if size < MIN_BYTES or not _worth_compressing(src, size):
        return None
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
            writer = _HashingWriter(out)
            cctx.copy_stream(fh, writer, size=size, read_size=_CHUNK, write_size=_CHUNK)  # type: ignore[arg-type]
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    if writer.length >= size:
        dst.unlink()
        return None
    return TransferBlob("zstd", writer.length, writer.digest.hexdigest())


def decompress_file(src: Path, dst: Path, *, codec: str, output_length: int) -> tuple[str, int]:
    """Decode the transfer blob ``src`` into the new file ``dst``: (sha256, length).

    Raises :class:`~blackhole_sync.errors.LengthOrHashMismatchError` when the blob decodes to
    another length than ``output_length`` (checked in the frame header, and while decoding:
    never more than ``output_length + 1`` bytes are produced), :class:`FormatError` when it is
    not a frame this node decodes. ``dst`` is removed on failure.
    """
    import zstandard

    if codec not in TRANSFER_CODECS:
        raise FormatError(f"unknown transfer codec {codec!r} (this node knows zstd)")
    with open(src, "rb") as fh:
        try:
            params = zstandard.get_frame_parameters(fh.read(18))
        except zstandard.ZstdError as e:
            raise FormatError(f"the transfer blob is not a zstd frame: {e}") from e
        if params.content_size != output_length:
            raise LengthOrHashMismatchError(
                f"the transfer blob declares {params.content_size} bytes, the manifest "
                f"{output_length}"
            )
        if params.window_size > 1 << MAX_WINDOW_LOG:
            raise FormatError("the transfer blob asks for a larger zstd window than allowed")
        fh.seek(0)
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
        digest = sha256()
        total = 0
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                dctx.stream_reader(fh, read_size=_CHUNK, read_across_frames=False) as reader,
            ):
                while True:
                    try:
                        chunk = reader.read(min(_CHUNK, output_length + 1 - total))
                    except zstandard.ZstdError as e:
                        raise FormatError(f"the transfer blob does not decode: {e}") from e
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > output_length:
                        raise LengthOrHashMismatchError(
                            f"the transfer blob decodes past the manifest's {output_length} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
            if total != output_length:
                raise LengthOrHashMismatchError(
                    f"the transfer blob decodes to {total} bytes, the manifest says {output_length}"
                )
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
    return digest.hexdigest(), total
