"""Artifacts travel compressed: the ``transfer`` record, bounded decompression, the blobs a node
keeps for its peers, and the node's choice between a delta and the full (compressed) download.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from blackhole_sync.codecs import compress_file, decompress_file
from blackhole_sync.documents import Artifact, Envelope, ReleaseManifest, Transfer
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import FormatError, LengthOrHashMismatchError
from blackhole_sync.manager import UpdateManager, init_node
from blackhole_sync.mirror import export_mirror
from blackhole_sync.node.store import NodeStore
from blackhole_sync.release import Repository
from blackhole_sync.testing import run as run_process

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_like(size: int, seed: int = 0) -> bytes:
    """Compressible bytes that still differ everywhere (like a binary's strings and code)."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(2, 9)) for _ in range(3000)]
    return b"".join(rnd.choice(words) for _ in range(size // 5))[:size]


# -- compress / decompress ---------------------------------------------------------------------


def test_round_trip_and_only_when_it_saves_bytes(tmp_path: Path) -> None:
    data = text_like(MiB)
    (tmp_path / "in").write_bytes(data)
    blob = compress_file(tmp_path / "in", tmp_path / "z")
    assert blob is not None and blob.codec == "zstd" and blob.length < len(data)
    assert (blob.sha256, blob.length) == (
        sha((tmp_path / "z").read_bytes()),
        len((tmp_path / "z").read_bytes()),
    )
    assert decompress_file(
        tmp_path / "z", tmp_path / "out", codec="zstd", output_length=len(data)
    ) == (sha(data), len(data))
    assert (tmp_path / "out").read_bytes() == data
    (tmp_path / "random").write_bytes(random.Random(1).randbytes(MiB))  # does not compress
    assert compress_file(tmp_path / "random", tmp_path / "z2") is None
    assert not (tmp_path / "z2").exists()
    (tmp_path / "small").write_bytes(b"a" * 1000)  # under MIN_BYTES
    assert compress_file(tmp_path / "small", tmp_path / "z3") is None


def test_a_blob_declaring_another_length_is_refused_before_decoding(tmp_path: Path) -> None:
    data = text_like(MiB)
    (tmp_path / "in").write_bytes(data)
    assert compress_file(tmp_path / "in", tmp_path / "z") is not None
    with pytest.raises(LengthOrHashMismatchError, match="declares"):
        decompress_file(tmp_path / "z", tmp_path / "out", codec="zstd", output_length=len(data) - 1)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FormatError, match="unknown transfer codec"):
        decompress_file(tmp_path / "z", tmp_path / "out", codec="brotli", output_length=len(data))
    (tmp_path / "junk").write_bytes(b"not zstd at all")
    with pytest.raises(FormatError):
        decompress_file(tmp_path / "junk", tmp_path / "out", codec="zstd", output_length=10)


def lying_bomb(real: int, claimed: int) -> bytes:
    """A zstd frame of ``real`` zero bytes whose header claims ``claimed`` bytes."""
    import zstandard

    frame = zstandard.ZstdCompressor(level=19, write_content_size=False).compress(bytes(real))
    fhd = frame[4]
    assert fhd >> 6 == 0 and not fhd & 0x20  # no content size, a window descriptor
    return frame[:4] + bytes([fhd | 0x80]) + frame[5:6] + claimed.to_bytes(4, "little") + frame[6:]


_BOMB = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from blackhole_sync.codecs.compress import decompress_file
    from blackhole_sync.codecs.delta.apply import _address_space_now
    import zstandard
    limit = _address_space_now() + 64 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        decompress_file(Path(sys.argv[1]), Path(sys.argv[2]), codec="zstd", output_length=int(sys.argv[3]))
        print(json.dumps("decoded"))
    except MemoryError:
        print(json.dumps("MemoryError"))
    except Exception as e:
        print(json.dumps(type(e).__name__))
    """
)


def test_a_zstd_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """1 GiB of zeros in ~40 KB, its header claiming the signed 1 MiB: decoding stops at the
    signed length, in a process that could not hold 64 MiB more than it started with."""
    bomb = lying_bomb(1024 * MiB, MiB)
    assert len(bomb) < 100_000
    (tmp_path / "bomb").write_bytes(bomb)
    proc = run_process(
        [sys.executable, "-c", _BOMB, str(tmp_path / "bomb"), str(tmp_path / "out"), str(MiB)],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    assert json.loads(proc.stdout.splitlines()[-1]) in ("LengthOrHashMismatchError", "FormatError")
    assert not (tmp_path / "out").exists()


# -- the manifest record ---------------------------------------------------------------------


def test_transfer_record_round_trips_and_is_checked() -> None:
    digest = "ab" * 32
    art = Artifact("app", 100, {"sha256": "cd" * 32}, transfer=Transfer("zstd", 40, digest))
    data = art.to_dict()
    assert data["transfer"] == {"codec": "zstd", "length": 40, "sha256": digest}
    assert Artifact.from_dict(data) == art  # the fast path
    assert Artifact.from_dict({**data, "x": 1}).transfer == art.transfer  # the full parser
    assert art.blob.sha256 == digest and art.blob.length == 40
    assert Artifact.from_dict({k: v for k, v in data.items() if k != "transfer"}).blob.length == 100
    for bad in ({"codec": "zstd", "length": 40}, {"codec": "z/std", "length": 1, "sha256": digest},
                {"codec": "zstd", "length": -1, "sha256": digest}, {"codec": "zstd", "length": 1, "sha256": "AB" * 32}):  # fmt: skip
        with pytest.raises(FormatError):
            Artifact.from_dict({**data, "transfer": bad})


# -- a node --------------------------------------------------------------------------------------


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.key = PrivateKey.generate()
        self.repo = Repository.init(
            tmp_path / "repo", root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1,
            index_key=self.key, sign_with=[self.key],
        )  # fmt: skip
        self.app = tmp_path / "app"

    def publish(self, version: str, data: bytes, **options: Any) -> ReleaseManifest:
        self.app.write_bytes(data)
        manifest = self.repo.build_release(version, [self.app], **options)
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)
        return manifest

    def node(self, name: str = "node", source: Path | None = None) -> Path:
        node = self.tmp / name
        init_node(
            node,
            root_bytes=(self.tmp / "repo" / "root.json").read_bytes(),
            sources=[str(source or self.tmp / "repo")],
        )
        return node


def update(node: Path, version: str | None = None, **kwargs: Any) -> Any:
    async def run() -> Any:
        async with UpdateManager(node, **kwargs) as manager:
            return await manager.update(version)

    return anyio.run(run)


def blobs(node: Path) -> set[str]:
    folder = node / "blobs"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_full_download_is_compressed_and_the_blob_kept_then_pruned(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    v1 = text_like(2 * MiB, 1)
    m1 = s.publish("1.0.0", v1)
    [art] = m1.artifacts
    assert art.transfer is not None and art.transfer.length < len(v1) // 2
    assert (art.length, art.sha256) == (len(v1), sha(v1))  # the installed bytes
    assert (s.repo.blobs_dir / art.transfer.sha256).is_file()
    assert not (s.repo.blobs_dir / art.sha256).exists()  # only the blob on the wire is served
    node = s.node()
    result = update(node)
    assert (result.method, result.bytes_fetched) == ("full", art.transfer.length)
    assert (node / "current" / "app").read_bytes() == v1
    assert blobs(node) == {art.transfer.sha256}

    # a delta is made between installed bytes (the old blob decompressed), and applied
    v2 = v1[:100_000] + b"changed" + v1[100_007:]
    m2 = s.publish("1.1.0", v2, delta_from=["1.0.0"])
    [record] = m2.deltas
    assert (record.codec, record.source.sha256, record.output_length) == (
        "hdiffpatch",
        sha(v1),
        len(v2),
    )
    result = update(node)
    assert (result.method, result.bytes_fetched) == ("delta", record.patch.length)
    assert (node / "current" / "app").read_bytes() == v2
    assert blobs(node) == {art.transfer.sha256, record.patch.sha256}  # current and previous

    # the node's mirror serves what peers ask for: the transfer blobs and patches
    mirrored = export_mirror(node)
    assert {art.transfer.sha256, record.patch.sha256} <= {
        p.name for p in (mirrored.path / "blobs").iterdir()
    }
    peer = s.node("peer", source=mirrored.path)
    assert update(peer, "1.0.0").method == "full"
    assert (peer / "current" / "app").read_bytes() == v1

    m3 = s.publish("1.2.0", text_like(2 * MiB, 3))
    assert update(node).method == "full"  # unrelated bytes: no delta was made
    assert m3.deltas == ()
    kept = blobs(node)
    assert art.transfer.sha256 not in kept  # 1.0.0 is neither current nor previous
    assert m3.artifacts[0].transfer is not None and m3.artifacts[0].transfer.sha256 in kept
    with NodeStore.open(node) as store:
        store.prune(2, keep_rollback_target=False)
    assert blobs(node) == kept  # current (1.2.0) and previous (1.1.0) stay
    with NodeStore.open(node) as store:
        assert store.prune(1, keep_rollback_target=False) == ["1.1.0"]
    assert blobs(node) == {m3.artifacts[0].transfer.sha256}  # pruned with its version


def test_over_the_delta_memory_budget_the_node_downloads_whole_and_says_why(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path)
    v1 = random.Random(2).randbytes(MiB)  # does not compress: a patch clearly pays off
    s.publish("1.0.0", v1)
    s.publish("1.1.0", v1[:5000] + b"new" + v1[5003:], delta_from=["1.0.0"])
    node = s.node()
    update(node, "1.0.0")
    config = node / "config.toml"
    text = config.read_text()
    assert "delta_memory_budget = 1073741824" in text
    config.write_text(
        text.replace("delta_memory_budget = 1073741824", "delta_memory_budget = 1000")
    )
    result = update(node)
    assert result.method == "full" and "delta_memory_budget" in result.method_reason
    assert result.to_dict()["method_reason"] == result.method_reason
    other = s.node("other")
    update(other, "1.0.0")
    result = update(other)
    assert (result.method, result.method_reason) == ("delta", "")


def test_a_signed_zstd_bomb_is_refused_by_the_node(tmp_path: Path) -> None:
    """Even a blob the release keys signed cannot make a node decode past the artifact's
    signed length."""
    s = Setup(tmp_path)
    s.app.write_bytes(text_like(MiB))
    manifest = s.repo.build_release("1.0.0", [s.app])
    bomb = lying_bomb(256 * MiB, MiB)
    [art] = manifest.artifacts
    evil = Artifact(
        art.name,
        MiB,
        {"sha256": "00" * 32},
        art.mode,
        transfer=Transfer("zstd", len(bomb), sha(bomb)),
    )
    doc = manifest.to_dict()
    doc["artifacts"] = [evil.to_dict()]
    draft = s.repo.draft_dir("1.0.0")
    (draft / "manifest.json").write_bytes(Envelope.of(doc, ()).raw)
    (draft / "blobs" / sha(bomb)).write_bytes(bomb)
    s.repo.sign_release("1.0.0", s.key)
    s.repo.publish_release("1.0.0", s.key)
    node = s.node()
    with pytest.raises((LengthOrHashMismatchError, FormatError)):
        update(node)
    assert not (node / "current").exists()
    assert blobs(node) == set()  # nothing unverified is kept


def test_release_build_gives_two_unrelated_64_mib_artifacts_no_delta_early(
    tmp_path: Path,
) -> None:
    """The builder used to diff such a pair for minutes; the probe says "unrelated" first."""
    import time

    s = Setup(tmp_path)
    s.publish("1.0.0", random.Random(1).randbytes(64 * MiB))
    started = time.process_time()
    manifest = s.publish("1.1.0", random.Random(2).randbytes(64 * MiB), delta_from="auto")
    assert manifest.deltas == ()
    assert manifest.artifacts[0].transfer is None  # random bytes do not compress either
    assert time.process_time() - started < 20  # hashing and copying, no diff
