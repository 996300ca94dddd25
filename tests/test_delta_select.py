"""Choosing a delta: the early probe, the selection within its budget, codec availability,
segmented diffs and the node's planner (memory budget, missing codecs) with its reasons."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blackhole_sync.codecs import delta as D
from blackhole_sync.codecs.delta.hdiff import HDiffPatchCodec, plan_segments
from blackhole_sync.codecs.delta.zstdpatch import ZstdPatchCodec
from blackhole_sync.errors import PatchError

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def related(seed: int = 0, size: int = 200_000) -> tuple[bytes, bytes]:
    """An edited copy: insertions, a replaced block and scattered byte edits."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(3, 12)) for _ in range(400)]
    old = b"".join(rnd.choice(words) for _ in range(size // 7))[:size]
    cut = size * 6 // 10
    new = bytearray(
        old[:5000] + b"INSERTED" + old[5000:cut] + rnd.randbytes(3000) + old[cut + 5000 :]
    )
    for _ in range(200):
        i = rnd.randrange(len(new))
        new[i] = (new[i] + 1) % 256
    return old, bytes(new)


# -- the probe ----------------------------------------------------------------------------------


def test_two_unrelated_64_mib_artifacts_are_recognised_before_any_diff() -> None:
    old = random.Random(1).randbytes(64 * MiB)
    new = random.Random(2).randbytes(64 * MiB)
    started = time.process_time()
    probe = D.probe_related(old, new)
    assert not probe.related and probe.hits == 0 and probe.needles == 12
    selection = D.select_patch(old, new)
    assert time.process_time() - started < 3.0  # two probes; a diff would take minutes
    assert selection.codec is None and selection.patch is None
    assert selection.reason.startswith("unrelated") and not selection.sizes
    assert set(selection.cpu_s) == {"probe"}  # no codec ran


def test_related_inputs_pass_the_probe_quickly() -> None:
    old, new = related(size=2_000_000)
    probe = D.probe_related(old, new)
    assert probe.related and probe.hits >= 3 and probe.cpu_s < 0.5


def test_probe_edge_cases() -> None:
    assert D.probe_related(b"", b"").related
    assert not D.probe_related(b"", random.Random(0).randbytes(1000)).related  # nothing to match
    assert D.probe_related(b"x" * 1000, bytes(1000)).related  # no varied pieces: cannot judge


# -- the selection ------------------------------------------------------------------------------


def test_selection_takes_hdiffpatch_and_skips_zstd_where_it_never_wins() -> None:
    old, new = related()
    selection = D.select_patch(old, new)
    assert selection.codec == "hdiffpatch" and selection.patch is not None
    assert set(selection.sizes) == {"hdiffpatch"}
    assert "never wins" in selection.skipped["zstd-patch"]
    assert D.get_codec("hdiffpatch").apply(old, selection.patch, max_output=len(new)) == new


def test_selection_tries_zstd_where_the_reference_patch_is_poor() -> None:
    rnd = random.Random(3)
    old = rnd.randbytes(300_000)
    new = old[:100_000] + rnd.randbytes(200_000)  # two thirds of new is new
    selection = D.select_patch(old, new)
    assert set(selection.sizes) == {"hdiffpatch", "zstd-patch"}
    assert selection.codec in ("hdiffpatch", "zstd-patch") and selection.patch is not None
    assert len(selection.patch) == min(selection.sizes.values())
    assert D.get_codec(selection.codec).apply(old, selection.patch, max_output=len(new)) == new


def test_no_patch_smaller_than_new_is_no_delta() -> None:
    rnd = random.Random(4)
    old = rnd.randbytes(2000)
    new = rnd.randbytes(3000)  # unrelated, and the probe is off: the codecs run
    selection = D.select_patch(old, new, probe=False)
    assert set(selection.sizes) == {"hdiffpatch", "zstd-patch"}
    assert selection.codec is None and "no patch is smaller" in selection.reason


def test_cpu_budget_gates_the_candidates_after_the_reference() -> None:
    old, new = related()
    ticks = iter(range(0, 1000, 10))  # every codec "costs" 10 s; the reference sets 20 s
    budget = D.CreateBudget(cpu_factor=2.0, cpu_floor_s=0)
    plugin = Recorder()
    table = D.codec_table([plugin])
    selection = D.select_patch(old, new, table=table, budget=budget, cpu=lambda: float(next(ticks)))
    assert plugin.calls == 1  # 10 s spent of 20: the plugin may still start
    selection = D.select_patch(
        old, new, table=table, budget=D.CreateBudget(cpu_factor=1.0, cpu_floor_s=0),
        cpu=lambda: float(next(ticks)),
    )  # fmt: skip
    assert plugin.calls == 1 and selection.skipped["recorder"] == "no CPU budget left"


class Recorder:
    """A plugin codec that is never smaller (it only counts its calls)."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls = 0

    def diff(self, old: bytes, new: bytes) -> bytes:
        self.calls += 1
        return b"R" + new

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes:
        return patch[1:]


class Tiny:
    """A plugin codec that wins whenever new ends with old's last byte (a toy)."""

    name = "tiny"

    def diff(self, old: bytes, new: bytes) -> bytes:
        return b"T" + new[-1:] if new[:-1] == old[:-1] else b"X" + new

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes:
        return old[:-1] + patch[1:] if patch[:1] == b"T" else patch[1:]


def test_plugin_codecs_are_offered_and_win_when_smaller(tmp_path: Path) -> None:
    old, new = related()
    new = old[:-1] + b"!"
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    table = D.codec_table([Tiny()])
    result = D.make_delta(tmp_path / "old", tmp_path / "new", table=table)
    assert result.delta is not None and result.delta.codec == "tiny"
    assert result.delta.patch == b"T!" and {"hdiffpatch", "tiny"} <= set(result.selection.sizes)
    # without the plugin in the table the built-in is chosen
    plain = D.make_delta(tmp_path / "old", tmp_path / "new")
    assert plain.delta is not None and plain.delta.codec == "hdiffpatch"


def test_make_delta_refuses_before_reading_when_no_candidate_fits_memory(tmp_path: Path) -> None:
    old, new = related(size=50_000)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    result = D.make_delta(tmp_path / "old", tmp_path / "new", budget=D.CreateBudget(memory=1024))
    assert result.delta is None and "memory budget" in result.selection.reason


# -- hdiffpatch: segments ------------------------------------------------------------------------


def test_segment_plan_covers_new_and_stays_inside_old() -> None:
    segments = plan_segments(300 * MiB, 320 * MiB)
    assert sum(s.new_len for s in segments) == 320 * MiB and len(segments) == 5
    assert all(0 <= s.old_off and s.old_off + s.old_len <= 300 * MiB for s in segments)
    assert all(s.old_len <= 64 * MiB + 2 * 32 * MiB for s in segments)
    assert (
        plan_segments(10, 20) == [plan_segments(10, 20)[0]]
        and plan_segments(10, 20)[0].old_len == 10
    )


def test_a_340_mb_pair_is_planned_inside_the_2_gib_budget() -> None:
    codec = HDiffPatchCodec()
    old_len, new_len = 338_944_000, 339_886_080  # the measured ~300 MB pair
    whole = codec._peak(old_len, new_len, plan_segments(old_len, new_len, chunk=1 << 40))
    assert whole > 2 * 1024**3  # one piece would not fit ...
    assert codec.diff_memory(old_len, new_len, 2 * 1024**3) <= 2 * 1024**3  # ... segments do
    assert len(codec.segments_for(old_len, new_len, 2 * 1024**3)) == 6


def test_segmented_hdiffpatch_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    from blackhole_sync.codecs.delta import hdiff

    old, new = related(size=600_000)
    codec = HDiffPatchCodec()
    small = plan_segments(len(old), len(new), chunk=100_000, margin=50_000)
    assert len(small) > 1
    monkeypatch.setattr(hdiff, "plan_segments", lambda o, n: small)
    patch = codec.diff(old, new, memory_budget=1)  # nothing fits whole: segmented
    assert D.get_codec("hdiffpatch").apply(old, patch, max_output=len(new)) == new
    assert int.from_bytes(patch[24:28], "little") == len(small)


# -- availability --------------------------------------------------------------------------------


@pytest.fixture
def broken_hdiffpatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The hdiffpatch codec as it is when its self-test failed (another wheel version)."""
    monkeypatch.setattr(HDiffPatchCodec, "_verdict", (False, "hdiffpatch 9.0.0 is not 2.6.*"))
    yield


def test_self_tests_pass_here() -> None:
    assert HDiffPatchCodec().available() and ZstdPatchCodec().available()


def test_a_codec_whose_self_test_failed_is_never_chosen(broken_hdiffpatch: None) -> None:
    old, new = related()
    selection = D.select_patch(old, new)
    assert "hdiffpatch" not in selection.sizes
    assert selection.skipped["hdiffpatch"] == "unavailable (its self-test failed)"


def test_a_version_mismatch_fails_the_self_test(monkeypatch: pytest.MonkeyPatch) -> None:
    from blackhole_sync.codecs.delta import _hpatch

    assert _hpatch.wheel_version() == "2.6.0"
    monkeypatch.setattr(HDiffPatchCodec, "_verdict", None)
    monkeypatch.setattr(_hpatch, "wheel_version", lambda: "3.0.0")
    codec = HDiffPatchCodec()
    assert not codec.available() and "3.0.0" in codec.unavailable_reason()


def test_patches_of_an_unavailable_codec_are_not_applied(
    broken_hdiffpatch: None, tmp_path: Path
) -> None:
    old, new = related(size=20_000)
    patch = HDiffPatchCodec().diff(old, new)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "patch").write_bytes(patch)
    with pytest.raises(PatchError, match="unavailable"):
        D.apply_patch(
            tmp_path / "old", tmp_path / "patch", tmp_path / "out",
            source_sha256=sha(old), patch_sha256=sha(patch), patch_length=len(patch),
            output_sha256=sha(new), output_length=len(new), codec="hdiffpatch",
        )  # fmt: skip
    optimizer = D.UpdateOptimizer()
    avail = D.AvailableUpdates({"1.1.0": 10_000}, [D.DeltaEdge("1.0.0", "1.1.0", 100)])
    path = optimizer.calculate_update_path("1.0.0", "1.1.0", available=avail)
    assert not path.is_delta and "unavailable" in path.reason


# -- the planner: memory budget and reasons --------------------------------------------------------


def test_a_chain_over_the_apply_memory_budget_is_a_full_download_with_a_reason() -> None:
    edge = D.DeltaEdge("1.0.0", "1.1.0", 1000, "hdiffpatch", 300 * MiB, 300 * MiB)
    avail = D.AvailableUpdates({"1.1.0": 100 * MiB}, [edge])
    need = D.UpdateOptimizer().apply_memory(edge)
    limits = D.ApplyLimits()
    assert need == 64 * MiB + 300 * MiB + 1000 + 300 * MiB + limits.stream_overhead
    fits = D.UpdateOptimizer(apply_memory_budget=need)
    assert fits.calculate_update_path("1.0.0", "1.1.0", available=avail).is_delta
    over = D.UpdateOptimizer(apply_memory_budget=need - 1)
    path = over.calculate_update_path("1.0.0", "1.1.0", available=avail)
    assert not path.is_delta and "delta_memory_budget" in path.reason


def test_streaming_codecs_need_old_plus_output_plus_64_mib_the_others_more() -> None:
    limits = D.ApplyLimits()
    stream = limits.address_space(100 * MiB, 100 * MiB, streaming=True, patch_length=MiB)
    assert stream == 100 * MiB + MiB + 100 * MiB + 64 * MiB
    legacy = limits.address_space(100 * MiB, 100 * MiB, streaming=False)
    assert legacy == 100 * MiB + 256 * MiB + 4 * 100 * MiB


def test_full_download_reasons_name_the_cause() -> None:
    opt = D.UpdateOptimizer()
    avail = D.AvailableUpdates({"2.0.0": 1000}, [D.DeltaEdge("1.0.0", "2.0.0", 900)])
    assert (
        "cost more than 80%" in opt.calculate_update_path("1.0.0", "2.0.0", available=avail).reason
    )
    unknown = D.AvailableUpdates({"2.0.0": 1000}, [D.DeltaEdge("1.0.0", "2.0.0", 9, "xdelta3")])
    assert (
        "no patch codec 'xdelta3'"
        in opt.calculate_update_path("1.0.0", "2.0.0", available=unknown).reason
    )
    assert opt.calculate_update_path(
        "1.0.0", "2.0.0", available=D.AvailableUpdates({"2.0.0": 9})
    ).reason
    assert opt.calculate_update_path(None, "2.0.0", available=avail).reason == ""


def test_with_a_known_link_a_chain_slower_than_the_full_download_is_not_taken() -> None:
    edge = D.DeltaEdge("1.0.0", "1.1.0", 20_000, "hdiffpatch", 200_000, 200_000)
    avail = D.AvailableUpdates({"1.1.0": 100_000}, [edge])
    assert D.UpdateOptimizer().calculate_update_path("1.0.0", "1.1.0", available=avail).is_delta
    fast = D.UpdateOptimizer(link_bandwidth=10_000_000)  # the full blob takes 10 ms
    path = fast.calculate_update_path("1.0.0", "1.1.0", available=avail)
    assert not path.is_delta and "slower than the full download" in path.reason
    slow = D.UpdateOptimizer(link_bandwidth=50_000)  # the full blob takes 2 s, the patch 0.6 s
    assert slow.calculate_update_path("1.0.0", "1.1.0", available=avail).is_delta
    t_chain, t_full = slow.expected_seconds([edge], 100_000)
    assert t_chain < t_full


def test_a_worker_started_ahead_and_never_used_is_stopped() -> None:
    with D.ApplyWorker() as worker:
        assert worker.proc.poll() is None
    assert worker.proc.returncode is not None
