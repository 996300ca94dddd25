"""Raw LZMA2 streams inside our patch containers: encoded whole, decoded under a bound.

Both of our containers (``bsdiff4-lzma`` and ``hdiffpatch``) store each of their streams as a
raw LZMA2 stream (no .xz container: no overhead on tiny patches) or stored as is. A container
declares each stream's raw length; the decoder's dictionary size is *derived from that
declared length* on both sides (never read from patch bytes), and decoding stops with a
:class:`~blackhole_sync.errors.PatchFormatError` the moment a stream would grow past its
declared length. Two decoders:

* :func:`bounded_decompress` -- a whole stream at once, into at most ``cap`` bytes;
* :class:`StreamDecoder` -- incrementally, ``read(n)`` at a time, for a consumer that streams
  (HDiffPatch's C patcher pulls its input in small pieces).
"""

from __future__ import annotations

import bz2
import lzma
from collections.abc import Mapping

from ...errors import PatchFormatError, PatchOutputError

__all__ = ["StreamDecoder", "bounded_decompress", "dict_size", "lzma_filters"]

_MIN_DICT = 4096


def dict_size(raw_len: int, cap: int) -> int:
    """The LZMA2 dictionary for a stream of ``raw_len`` bytes: the next power of two, capped."""
    size = _MIN_DICT
    while size < raw_len and size < cap:
        size *= 2
    return min(size, cap) if cap >= _MIN_DICT else _MIN_DICT


def lzma_filters(
    options: Mapping[str, int],
    raw_len: int,
    cap: int,
    *,
    preset: int | None,
    x86: bool = False,
) -> list[dict[str, int]]:
    """The raw filter chain of one stream: optional x86 branch converter, then LZMA2.

    ``options`` are LZMA2's literal/position options (``lc``, ``lp``, ``pb``); ``preset`` only
    when encoding (the decoder needs the dictionary size and the options, nothing else).
    """
    spec: dict[str, int] = {"id": lzma.FILTER_LZMA2}
    if preset is not None:
        spec["preset"] = preset
    spec["dict_size"] = dict_size(raw_len, cap)
    spec.update(options)
    return [{"id": lzma.FILTER_X86}, spec] if x86 else [spec]


def bounded_decompress(
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


class StreamDecoder:
    """Decodes one stored or raw-LZMA2 stream incrementally, never past its declared length.

    ``filters`` is None for a stored stream (then ``body`` must be exactly ``raw_len`` bytes).
    :meth:`finish` checks that the stream was consumed exactly: every declared byte read, and
    the compressed body ends where its end marker is.
    """

    def __init__(
        self, body: memoryview, raw_len: int, filters: list[dict[str, int]] | None
    ) -> None:
        if filters is None and len(body) != raw_len:
            raise PatchFormatError("stored stream length differs from its raw length")
        self.raw_len = raw_len
        self.produced = 0
        self._body = body
        self._fed = False
        try:
            self._dec = (
                None
                if filters is None
                else lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
            )
        except (lzma.LZMAError, ValueError) as e:
            raise PatchFormatError(f"bad stream options: {e}") from e

    def read(self, n: int) -> bytes:
        """The next ``n`` raw bytes; PatchFormatError when the stream cannot give them."""
        if n < 0 or n > self.raw_len - self.produced:
            raise PatchFormatError("read past the end of a stream")
        if self._dec is None:
            out = bytes(self._body[self.produced : self.produced + n])
            self.produced += n
            return out
        parts: list[bytes] = []
        need = n
        stalls = 0
        try:
            while need:
                data = b"" if self._fed else bytes(self._body)
                self._fed = True
                chunk = self._dec.decompress(data, max_length=need)
                if chunk:
                    parts.append(chunk)
                    need -= len(chunk)
                    stalls = 0
                else:
                    stalls += 1
                    if self._dec.eof or stalls > 4:
                        raise PatchFormatError("a stream ends before its declared length")
        except (lzma.LZMAError, EOFError) as e:
            raise PatchFormatError(f"corrupt LZMA stream: {e}") from e
        self.produced += n
        return b"".join(parts)

    def finish(self) -> None:
        if self.produced != self.raw_len:
            raise PatchFormatError("a stream was not fully consumed")
        if self._dec is None or not len(self._body):
            return
        if not self._fed:
            raise PatchFormatError("a compressed stream was never read")
        try:
            rest = b"" if self._dec.eof else self._dec.decompress(b"", max_length=1)
        except (lzma.LZMAError, EOFError) as e:
            raise PatchFormatError(f"corrupt LZMA stream: {e}") from e
        if rest or not self._dec.eof:
            raise PatchFormatError("a stream is longer than its declared length")
        if self._dec.unused_data:
            raise PatchFormatError("trailing bytes after a compressed stream")
