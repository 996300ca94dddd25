"""Fuzz target: applying a patch under its bounds (``blackhole_sync.codecs.delta``).

The first byte picks a built-in codec (``hdiffpatch``, ``zstd-patch``, ``bsdiff4-lzma``,
``bsdiff4``) and how the patch is applied, the rest is the patch, applied to a fixed source:

* ``apply_patch_bytes`` -- the public in-process apply (declared length checked first,
  decompression bounded), as the release builder verifies its deltas;
* ``apply_to`` -- the streaming apply the installer's bounded worker runs for streaming
  codecs, writing into a sink.

Refusals are the library's errors (``PatchError`` and its family). Whatever the patch, the
output never exceeds ``max_output``: not returned, not written to the sink. (The installer's
:func:`~blackhole_sync.codecs.delta.apply_patch` runs the same code in a child interpreter
under address-space, CPU and file-size limits; one child per input would make fuzzing a
hundred times slower, so the target calls the code it runs.)

    python fuzz/fuzz_delta.py -max_total_time=600 -rss_limit_mb=2048 fuzz/corpus/delta
"""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["blackhole_sync.codecs"]):
    from blackhole_sync.codecs.delta import (
        BUILTIN_CODECS,
        StreamingPatchCodec,
        apply_patch_bytes,
        codec_available,
    )
    from blackhole_sync.errors import BlackholeSyncError

from _harness import fuzz_main

CODECS = [c for c in BUILTIN_CODECS if codec_available(c)]
#: The installed bytes every patch is applied to.
OLD = random.Random(7).randbytes(16 * 1024)
#: The bound every apply runs under (the manifest's output length, in the installer).
MAX_OUTPUT = 64 * 1024


class CappedSink(io.BytesIO):
    """A sink that fails the target if the codec writes past the bound."""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        assert self.tell() + len(data) <= MAX_OUTPUT, "a patch wrote past max_output"
        return super().write(data)


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    codec = CODECS[(data[0] & 0x7F) % len(CODECS)]
    streaming = bool(data[0] & 0x80) and isinstance(codec, StreamingPatchCodec)
    patch = data[1:]
    try:
        if streaming:
            sink = CappedSink()
            written = codec.apply_to(OLD, patch, max_output=MAX_OUTPUT, sink=sink)
            assert written == len(sink.getvalue()) <= MAX_OUTPUT, "apply_to miscounted"
        else:
            out = apply_patch_bytes(OLD, patch, codec=codec, max_output=MAX_OUTPUT)
            assert len(out) <= MAX_OUTPUT, "apply_patch_bytes returned more than max_output"
    except BlackholeSyncError:
        pass  # refused: what a hostile patch must get


def seeds() -> dict[str, bytes]:
    rnd = random.Random(11)
    edited = bytearray(OLD)
    for _ in range(40):
        edited[rnd.randrange(len(edited))] ^= 0x5A
    news = {
        "edit": bytes(edited),
        "grow": OLD[:8000] + rnd.randbytes(3000) + OLD[8000:],
        "shrink": OLD[:4000] + OLD[9000:],
    }
    out = {}
    for i, codec in enumerate(CODECS):
        for name, new in news.items():
            patch = codec.diff(OLD, new)
            out[f"{codec.name}-{name}"] = bytes([i]) + patch
            if isinstance(codec, StreamingPatchCodec):
                out[f"{codec.name}-{name}-streamed"] = bytes([i | 0x80]) + patch
    return out


if __name__ == "__main__":
    fuzz_main(test_one_input, seeds)
