"""Delta patches: round trips, codec registry, planning, per-member deltas.

Hostile patches (malformed, wrong source, bombs) are in test_delta_hostile.py and
test_delta_hostile_streaming.py; the selection, the probe and codec availability in
test_delta_select.py.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import bsdiff4
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from blackhole_sync.codecs import delta as D
from blackhole_sync.errors import (
    LengthOrHashMismatchError,
    MissingPluginError,
    NoSuchVersionError,
    PatchOutputError,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@st.composite
def related_pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """An old byte string and a new one made from it by a few edits (or unrelated)."""
    old = draw(st.binary(max_size=600))
    if draw(st.booleans()):
        return old, draw(st.binary(max_size=600))
    new = bytearray(old)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(new)))
        kind = draw(st.sampled_from(["insert", "delete", "copy", "flip"]))
        if kind == "insert":
            new[at:at] = draw(st.binary(max_size=40))
        elif kind == "delete":
            del new[at : at + draw(st.integers(0, 40))]
        elif kind == "copy":
            new[at:at] = old[: draw(st.integers(0, 80))]
        elif new and at < len(new):
            new[at] ^= 0xFF
    return old, bytes(new)


ALL_CODECS = ["bsdiff4", "bsdiff4-lzma", "hdiffpatch", "zstd-patch"]


@pytest.mark.parametrize("codec", ALL_CODECS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=related_pairs())
def test_round_trip_property(codec: str, pair: tuple[bytes, bytes]) -> None:
    old, new = pair
    impl = D.get_codec(codec)
    patch = impl.diff(old, new)
    assert D.apply_patch_bytes(old, patch, codec=codec, max_output=len(new)) == new


@settings(max_examples=60, deadline=None)
@given(pair=related_pairs())
def test_builtin_bsdiff4_codec_writes_bsdiff4_as_shipped(pair: tuple[bytes, bytes]) -> None:
    old, new = pair
    patch = D.get_codec("bsdiff4").diff(old, new)
    assert patch == bsdiff4.diff(old, new)
    assert bsdiff4.patch(old, patch) == new


def test_round_trip_of_empty_and_identical_inputs() -> None:
    for old, new in [(b"", b""), (b"", b"abc"), (b"abc", b""), (b"same" * 100, b"same" * 100)]:
        for codec in D.codecs:
            patch = D.get_codec(codec).diff(old, new)
            assert D.apply_patch_bytes(old, patch, codec=codec, max_output=len(new)) == new


def _binary_pair(size: int = 200_000) -> tuple[bytes, bytes]:
    import random

    rng = random.Random(7)
    old = bytes(rng.getrandbits(8) if i % 7 else i % 251 for i in range(size))
    new = bytearray(old)
    for _ in range(40):
        at = rng.randrange(len(new))
        new[at : at + 4] = rng.randbytes(4)
    new[1000:1000] = rng.randbytes(3000)
    return old, bytes(new)


def test_generate_delta_defaults_to_hdiffpatch_and_records_its_codec(tmp_path: Path) -> None:
    old, new = _binary_pair()
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    delta = D.generate_delta(tmp_path / "old", tmp_path / "new")
    assert delta is not None and delta.codec == D.DEFAULT_CODEC == "hdiffpatch"
    assert delta.patch == D.get_codec("hdiffpatch").diff(old, new)
    assert delta.patch_sha256 == sha(delta.patch)
    assert (delta.from_sha256, delta.from_length) == (sha(old), len(old))
    assert (delta.to_sha256, delta.to_length) == (sha(new), len(new))
    # named candidates: the smallest wins, ties to the first
    legacy = D.generate_delta(tmp_path / "old", tmp_path / "new", codec=["bsdiff4-lzma", "bsdiff4"])
    sizes = {c: len(D.get_codec(c).diff(old, new)) for c in ("bsdiff4-lzma", "bsdiff4")}
    assert legacy is not None and legacy.patch_length == min(sizes.values())
    assert sizes[legacy.codec] == legacy.patch_length
    only_plain = D.generate_delta(tmp_path / "old", tmp_path / "new", codec="bsdiff4")
    assert only_plain is not None and only_plain.codec == "bsdiff4"


def test_generate_delta_over_memory_budget_returns_none(tmp_path: Path) -> None:
    old, new = _binary_pair(20_000)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    need = D.get_codec("bsdiff4").diff_memory(len(old), len(new))  # type: ignore[attr-defined]
    assert need == D.diff_memory_needed(len(old), len(new)) + len(old) + len(new)
    for codec in ("bsdiff4", "hdiffpatch"):
        need = D.get_codec(codec).diff_memory(len(old), len(new))  # type: ignore[attr-defined]
        old_p, new_p = tmp_path / "old", tmp_path / "new"
        assert D.generate_delta(old_p, new_p, codec=codec, memory_budget=need - 1) is None
        assert D.generate_delta(old_p, new_p, codec=codec, memory_budget=need) is not None


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_apply_patch_file_round_trip_in_a_bounded_child(tmp_path: Path, codec: str) -> None:
    old, new = _binary_pair()
    inputs, staging = tmp_path / "inputs", tmp_path / "staging"
    inputs.mkdir()
    staging.mkdir(mode=0o700)
    (inputs / "old").write_bytes(old)
    patch = D.get_codec(codec).diff(old, new)
    (inputs / "patch").write_bytes(patch)
    D.apply_patch(
        inputs / "old",
        inputs / "patch",
        staging / "new",
        source_sha256=sha(old),
        patch_sha256=sha(patch),
        patch_length=len(patch),
        output_sha256=sha(new),
        output_length=len(new),
        codec=codec,
    )
    assert (staging / "new").read_bytes() == new
    assert os.listdir(staging) == ["new"]


class ReverseCodec:
    """A toy plugin codec: the patch is the new bytes reversed (picklable, module level)."""

    name = "reverse"

    def diff(self, old: bytes, new: bytes) -> bytes:
        return new[::-1]

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes:
        if len(patch) > max_output:
            raise PatchOutputError("too long")
        return patch[::-1]


def test_plugin_codec_merges_and_applies_in_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = D.codec_table([ReverseCodec()])
    assert set(table) == {"bsdiff4", "bsdiff4-lzma", "hdiffpatch", "zstd-patch", "reverse"}
    # the child imports this test module to unpickle the codec
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    (tmp_path / "old").write_bytes(b"old")
    (tmp_path / "patch").write_bytes(b"wen")
    D.apply_patch(
        tmp_path / "old",
        tmp_path / "patch",
        tmp_path / "out",
        source_sha256=sha(b"old"),
        patch_sha256=sha(b"wen"),
        patch_length=3,
        output_sha256=sha(b"new"),
        output_length=3,
        codec="reverse",
        table=table,
    )
    assert (tmp_path / "out").read_bytes() == b"new"


def test_codec_table_refuses_a_duplicate_name() -> None:
    class Fake(ReverseCodec):
        name = "bsdiff4"

    with pytest.raises(ValueError, match="twice"):
        D.codec_table([Fake()])
    with pytest.raises(ValueError, match="twice"):
        D.codec_table([ReverseCodec(), ReverseCodec()])
    with pytest.raises(TypeError):
        D.codec_table([object()])  # type: ignore[list-item]


def test_unknown_codec_is_a_missing_plugin() -> None:
    with pytest.raises(MissingPluginError, match="blackhole_sync_patch_codecs"):
        D.get_codec("xdelta3")


def test_optimizer_generate_and_apply_delta() -> None:
    old, new = _binary_pair(50_000)
    opt = D.UpdateOptimizer()
    delta = opt.generate_delta(old, new)
    assert delta is not None
    assert opt.apply_delta(old, delta) == new
    tampered = D.DeltaPatch(**{**_fields(delta), "patch": delta.patch[:-1] + b"\0"})
    with pytest.raises(LengthOrHashMismatchError):
        opt.apply_delta(old, tampered)


def _fields(delta: D.DeltaPatch) -> dict[str, object]:
    import attrs

    return attrs.asdict(delta)


# -- planning --------------------------------------------------------------------------------


def E(a: str, b: str, n: int, codec: str = D.DEFAULT_CODEC) -> D.DeltaEdge:
    return D.DeltaEdge(a, b, n, codec)


def test_path_prefers_the_cheapest_chain() -> None:
    avail = D.AvailableUpdates(
        full={"1.3.0": 1000},
        deltas=[
            E("1.0.0", "1.3.0", 500),
            E("1.0.0", "1.1.0", 100),
            E("1.1.0", "1.2.0", 100),
            E("1.2.0", "1.3.0", 100),
            E("1.1.0", "1.3.0", 250),
        ],
    )
    path = D.UpdateOptimizer().calculate_update_path("1.0.0", "1.3.0", available=avail)
    assert path.is_delta and path.total_bytes == 300
    assert [s.to_version for s in path.steps] == ["1.1.0", "1.2.0", "1.3.0"]  # type: ignore[union-attr]


def test_path_falls_back_to_full_when_the_chain_costs_more_than_the_fraction() -> None:
    avail = D.AvailableUpdates(full={"2.0.0": 1000}, deltas=[E("1.0.0", "2.0.0", 801)])
    path = D.UpdateOptimizer().calculate_update_path("1.0.0", "2.0.0", available=avail)
    assert path.steps == (D.FullDownload("2.0.0", 1000),) and path.total_bytes == 1000
    opt = D.UpdateOptimizer(max_chain_fraction=0.9)
    assert opt.calculate_update_path("1.0.0", "2.0.0", available=avail).total_bytes == 801


def test_path_chain_length_is_bounded() -> None:
    versions = [f"1.0.{i}" for i in range(12)]
    deltas = [E(a, b, 1) for a, b in itertools.pairwise(versions)]
    avail = D.AvailableUpdates(full={"1.0.11": 10_000}, deltas=deltas)
    assert D.UpdateOptimizer().calculate_update_path("1.0.0", "1.0.11", available=avail).steps == (
        D.FullDownload("1.0.11", 10_000),
    )
    path = D.UpdateOptimizer(max_chain=11).calculate_update_path("1.0.0", "1.0.11", available=avail)
    assert path.is_delta and len(path.steps) == 11
    # a cheaper long chain loses to a dearer short one when the long one is over the bound
    avail2 = D.AvailableUpdates(full={"1.0.11": 10_000}, deltas=[*deltas, E("1.0.0", "1.0.11", 50)])
    assert (
        D.UpdateOptimizer().calculate_update_path("1.0.0", "1.0.11", available=avail2).total_bytes
        == 50
    )


def test_path_never_goes_down_or_past_the_target_and_skips_unknown_codecs() -> None:
    avail = D.AvailableUpdates(
        full={"1.2.0": 1000},
        deltas=[
            E("1.0.0", "1.5.0", 1),
            E("1.5.0", "1.2.0", 1),
            E("1.0.0", "0.9.0", 1),
            E("0.9.0", "1.2.0", 1),
            E("1.0.0", "1.2.0", 5, codec="unknown"),
        ],
    )
    path = D.UpdateOptimizer().calculate_update_path("1.0.0", "1.2.0", available=avail)
    assert path.steps == (D.FullDownload("1.2.0", 1000),)


def test_path_excludes_a_failed_patch_and_handles_edge_cases() -> None:
    bad = E("1.0.0", "1.1.0", 10)
    avail = D.AvailableUpdates(full={"1.1.0": 1000}, deltas=[bad])
    opt = D.UpdateOptimizer()
    assert opt.calculate_update_path("1.0.0", "1.1.0", available=avail).steps == (bad,)
    assert opt.calculate_update_path("1.0.0", "1.1.0", available=avail, exclude=[bad]).steps == (
        D.FullDownload("1.1.0", 1000),
    )
    assert opt.calculate_update_path("1.1.0", "1.1.0", available=avail).total_bytes == 0
    assert opt.calculate_update_path(None, "1.1.0", available=avail).total_bytes == 1000
    assert opt.calculate_update_path("1.0.0-rc.1", "1.1.0", available=avail).total_bytes == 1000
    no_full = D.AvailableUpdates(deltas=[bad])
    assert opt.calculate_update_path("1.0.0", "1.1.0", available=no_full).total_bytes == 10
    with pytest.raises(NoSuchVersionError):
        opt.calculate_update_path("1.0.0", "1.1.0", available=D.AvailableUpdates())
    with pytest.raises(ValueError):
        opt.calculate_update_path("v1.0.0", "1.1.0", available=avail)


# -- archives ---------------------------------------------------------------------------------


def test_member_deltas_unchanged_delta_and_full(tmp_path: Path) -> None:
    old, new = _binary_pair(30_000)
    files = {
        "old/lib.so": old,
        "new/lib.so": new,
        "old/README": b"same",
        "new/README": b"same",
        "new/added.txt": b"brand new",
        "old/removed.txt": b"gone",
        "old/tiny": b"a",
        "new/tiny": b"b",
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    olds = {p.name: p for p in (tmp_path / "old").iterdir()}
    news = {p.name: p for p in (tmp_path / "new").iterdir()}
    result = D.member_deltas(olds, news)
    assert set(result) == {"lib.so", "README", "added.txt", "tiny"}
    assert result["README"].status == "unchanged" and result["README"].patch is None
    assert result["added.txt"].status == "full"
    assert result["tiny"].status == "full"  # a patch bigger than the member does not pay off
    lib = result["lib.so"]
    assert lib.status == "delta" and lib.patch is not None
    assert (lib.sha256, lib.length) == (sha(new), len(new))
    assert D.UpdateOptimizer().apply_delta(old, lib.patch) == new
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(news)
