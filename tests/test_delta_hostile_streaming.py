"""Hostile patches for the streaming codecs (``hdiffpatch``, ``zstd-patch``).

A patch is refused with a typed error before it can make the codec allocate more than the
manifest's output length: header claims are checked first; every decoded stream stops at its
declared length; the output is written out, never held. Applies run in the real bounded
worker (``apply_patch``: RLIMIT_AS = interpreter + inputs + output + 64 MiB), where running
out of memory would surface as "exceeded its memory bound" -- which no test here accepts.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from blackhole_sync.codecs import delta as D
from blackhole_sync.errors import PatchError, PatchFormatError, PatchOutputError
from blackhole_sync.testing import run as run_process

MiB = 1024 * 1024
STREAMING = ["hdiffpatch", "zstd-patch"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pair(seed: int = 0, size: int = 200_000) -> tuple[bytes, bytes]:
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(3, 12)) for _ in range(400)]
    old = b"".join(rnd.choice(words) for _ in range(size // 7))[:size]
    new = bytearray(
        old[:5000] + b"INSERTED" + old[5000:120_000] + rnd.randbytes(3000) + old[125_000:]
    )
    for _ in range(200):
        i = rnd.randrange(len(new))
        new[i] = (new[i] + 1) % 256
    return old, bytes(new)


@pytest.fixture(scope="module")
def patches() -> dict[str, tuple[bytes, bytes, bytes]]:
    old, new = pair()
    return {name: (old, new, D.get_codec(name).diff(old, new)) for name in STREAMING}


def apply_file(tmp_path: Path, old: bytes, patch: bytes, new: bytes, codec: str) -> None:
    """``apply_patch`` in its bounded worker, the manifest saying ``new``."""
    (tmp_path / "staging").mkdir(exist_ok=True)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "patch").write_bytes(patch)
    D.apply_patch(
        tmp_path / "old", tmp_path / "patch", tmp_path / "staging" / "out",
        source_sha256=sha(old), patch_sha256=sha(patch), patch_length=len(patch),
        output_sha256=sha(new), output_length=len(new), codec=codec,
    )  # fmt: skip


def refused(tmp_path: Path, old: bytes, patch: bytes, new: bytes, codec: str) -> PatchError:
    with pytest.raises(PatchError) as info:
        apply_file(tmp_path, old, patch, new, codec)
    assert "memory bound" not in str(info.value), "the codec ran out of its memory bound"
    assert list((tmp_path / "staging").iterdir()) == []
    return info.value


@pytest.mark.parametrize("codec", STREAMING)
def test_valid_patch_applies_in_the_bounded_worker(tmp_path: Path, patches, codec: str) -> None:  # type: ignore[no-untyped-def]
    old, new, patch = patches[codec]
    apply_file(tmp_path, old, patch, new, codec)
    assert (tmp_path / "staging" / "out").read_bytes() == new


@pytest.mark.parametrize("codec", STREAMING)
def test_output_bound_below_the_declared_length_is_refused(patches, codec: str) -> None:  # type: ignore[no-untyped-def]
    old, new, patch = patches[codec]
    with pytest.raises(PatchOutputError, match="declares"):
        D.get_codec(codec).apply(old, patch, max_output=len(new) - 1)


@pytest.mark.parametrize("codec", STREAMING)
@pytest.mark.parametrize("claim", [1 << 40, (1 << 64) - 1])
def test_header_claiming_a_huge_output_is_refused_before_allocating(
    tmp_path: Path,
    patches,
    codec: str,
    claim: int,  # type: ignore[no-untyped-def]
) -> None:
    old, new, patch = patches[codec]
    hostile = patch[:8] + struct.pack("<Q", claim) + patch[16:]
    error = refused(tmp_path, old, hostile, new, codec)
    assert isinstance(error, PatchOutputError) and "declares" in str(error)
    tracemalloc.start()
    try:
        with pytest.raises(PatchOutputError):
            D.get_codec(codec).apply(old, hostile, max_output=len(new))
        # even a manifest that allowed the claim gets no allocation of it: the rest of the
        # patch does not add up to the claimed output
        with pytest.raises(PatchError):
            D.get_codec(codec).apply(old, hostile, max_output=claim)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB


def test_hdiffpatch_stream_claiming_a_huge_raw_size_is_refused(tmp_path: Path, patches) -> None:  # type: ignore[no-untyped-def]
    old, new, patch = patches["hdiffpatch"]
    at = 28 + 32  # the first stream header: after the container head and the segment head
    method, _raw, comp = struct.unpack_from("<BQQ", patch, at)
    hostile = patch[:at] + struct.pack("<BQQ", method, 1 << 50, comp) + patch[at + 17 :]
    assert isinstance(refused(tmp_path, old, hostile, new, "hdiffpatch"), PatchOutputError)


def test_hdiffpatch_segments_outside_the_source_are_refused(tmp_path: Path, patches) -> None:  # type: ignore[no-untyped-def]
    old, new, patch = patches["hdiffpatch"]
    hostile = patch[:28] + struct.pack("<Q", len(old)) + patch[36:]  # old_off at the end of old
    assert "outside the source" in str(refused(tmp_path, old, hostile, new, "hdiffpatch"))


def test_zstd_frame_claiming_another_content_size_is_refused(tmp_path: Path, patches) -> None:  # type: ignore[no-untyped-def]
    import zstandard

    old, new, patch = patches["zstd-patch"]
    params = zstandard.ZstdCompressionParameters.from_level(3, write_content_size=True)
    bomb = zstandard.ZstdCompressor(compression_params=params).compress(bytes(64 * MiB))
    hostile = patch[:25] + bomb  # our header says len(new); the frame says 64 MiB
    assert isinstance(refused(tmp_path, old, hostile, new, "zstd-patch"), PatchOutputError)


@pytest.mark.parametrize("codec", STREAMING)
def test_truncated_patches_are_refused(tmp_path: Path, patches, codec: str) -> None:  # type: ignore[no-untyped-def]
    old, new, patch = patches[codec]
    for cut in (0, 4, 8, 20, 40, 100, len(patch) // 2, len(patch) - 1):
        with pytest.raises(PatchError):
            D.get_codec(codec).apply(old, patch[:cut], max_output=len(new))
    refused(tmp_path, old, patch[:-3], new, codec)
    refused(tmp_path, old, patch + b"\0", new, codec)  # trailing bytes


@pytest.mark.parametrize("codec", STREAMING)
def test_a_patch_for_another_source_length_is_refused(patches, codec: str) -> None:  # type: ignore[no-untyped-def]
    old, new, patch = patches[codec]
    with pytest.raises(PatchFormatError, match="another length"):
        D.get_codec(codec).apply(old + b"x", patch, max_output=len(new))


@pytest.mark.parametrize("codec", STREAMING)
def test_a_real_header_with_a_random_body_is_refused(tmp_path: Path, patches, codec: str) -> None:  # type: ignore[no-untyped-def]
    old, new, patch = patches[codec]
    head = {"hdiffpatch": 28 + 32 + 68, "zstd-patch": 25}[codec]
    for seed in range(4):
        body = random.Random(seed).randbytes(len(patch) - head)
        refused(tmp_path, old, patch[:head] + body, new, codec)
    for size in (0, 10, 100, 5000):
        with pytest.raises(PatchError):
            D.get_codec(codec).apply(old, random.Random(size).randbytes(size), max_output=len(new))


_FLIPS = textwrap.dedent(
    """
    import io, random, resource, sys
    from blackhole_sync.codecs.delta.apply import _address_space_now
    from blackhole_sync.codecs.delta.registry import codecs
    from blackhole_sync.errors import PatchError
    codec = codecs["hdiffpatch"]
    codec.prepare()
    old = open(sys.argv[1], "rb").read(); patch = open(sys.argv[2], "rb").read()
    n = int(sys.argv[3])
    limit = _address_space_now() + n + 64 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rnd = random.Random(5); bad = ok = 0
    for _ in range(300):
        p = bytearray(patch); i = rnd.randrange(len(p)); p[i] ^= 1 << rnd.randrange(8)
        sink = io.BytesIO()
        try:
            codec.apply_to(old, bytes(p), max_output=n, sink=sink); ok += 1
            assert len(sink.getvalue()) == n
        except PatchError:
            bad += 1
    print(ok, bad)
    """
)


def test_hdiffpatch_single_bit_flips_never_pass_the_bounds(tmp_path: Path, patches) -> None:  # type: ignore[no-untyped-def]
    """300 corruptions all over a valid patch, in a child whose address space allows the
    output length plus 64 MiB: each refused or (a bit that did not matter) the exact length;
    never a crash, a MemoryError or more output than declared."""
    old, new, patch = patches["hdiffpatch"]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "patch").write_bytes(patch)
    proc = run_process(
        [sys.executable, "-c", _FLIPS, str(tmp_path / "old"), str(tmp_path / "patch"), str(len(new))],
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-800:]
    ok, bad = map(int, proc.stdout.split())
    assert ok + bad == 300 and bad > 0


_PEAK = textwrap.dedent(
    """
    import hashlib, json, resource, sys
    from blackhole_sync.codecs.delta import apply_patch
    old, patch, out, codec, n, digest = sys.argv[1:7]
    sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
    apply_patch(old, patch, out, source_sha256=sha(old), patch_sha256=sha(patch),
                patch_length=len(open(patch, "rb").read()), output_sha256=digest,
                output_length=int(n), codec=codec)
    print(json.dumps(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
    """
)


@pytest.mark.parametrize("codec", STREAMING)
def test_apply_memory_is_at_most_old_plus_new_plus_64_mib(tmp_path: Path, codec: str) -> None:
    rnd = random.Random(11)
    blocks = [rnd.randbytes(64 * 1024) for _ in range(200)]
    old = b"".join(blocks[i % 200] + bytes([i % 251]) * 100 for i in range(400))  # ~26 MiB
    edited = bytearray(old)
    for _ in range(2000):
        edited[rnd.randrange(len(edited))] ^= 0x55
    new = bytes(edited[: len(edited) // 2] + rnd.randbytes(2 * MiB) + edited[len(edited) // 2 :])
    patch = D.get_codec(codec).diff(old, new)
    for name, data in (("old", old), ("patch", patch)):
        (tmp_path / name).write_bytes(data)
    proc = run_process(
        [sys.executable, "-c", _PEAK, str(tmp_path / "old"), str(tmp_path / "patch"),
         str(tmp_path / "out"), codec, str(len(new)), sha(new)],
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-800:]
    peak = json.loads(proc.stdout.splitlines()[-1])  # the apply worker's peak RSS
    assert (tmp_path / "out").read_bytes() == new
    assert peak <= len(old) + len(new) + 64 * MiB, (peak // MiB, len(old) // MiB)
