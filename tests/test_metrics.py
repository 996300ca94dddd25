"""Update metrics from real transfers (the local transport) and a real resource sampler."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import anyio
import pytest

from blackhole_sync.errors import LengthOrHashMismatchError
from blackhole_sync.fetch.local import LocalTransport, path_to_url
from blackhole_sync.fetch.transport import (
    Locator,
    ProgressEvent,
    VerifyingSink,
    fetch_with_fallback,
)
from blackhole_sync.metrics import (
    MetricsObserver,
    ResourceSampler,
    SpeedMeter,
    UpdateMetrics,
)


class FakeClock:
    """A controllable monotonic clock (for exact speed arithmetic only)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_snapshot_from_a_real_fetch_with_a_failing_source(tmp_path: Path) -> None:
    payload = os.urandom(600_000)
    good = tmp_path / "good.bin"
    good.write_bytes(payload)
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(os.urandom(len(payload)))  # right length, wrong bytes
    missing = tmp_path / "missing.bin"

    metrics = UpdateMetrics(version="1.1.0", from_version="1.0.0", sampler=ResourceSampler())
    metrics.method = "full"
    metrics.start_install()
    transport = LocalTransport(chunk_size=64 * 1024)
    observer = MetricsObserver(metrics, "node-bin", total=len(payload))
    candidates = [
        (transport, Locator("url", path_to_url(missing))),
        (transport, Locator("url", path_to_url(corrupt))),
        (transport, Locator("url", path_to_url(good))),
    ]
    with metrics.step("download"), (tmp_path / "staged").open("w+b") as f:
        sink = VerifyingSink(
            f,
            max_length=len(payload),
            expected_length=len(payload),
            expected_sha256=hashlib.sha256(payload).hexdigest(),
            progress=observer,
            source="test",
        )
        used = await fetch_with_fallback(candidates, sink, on_failure=observer.on_failure)
        observer.done()
    assert used.value == path_to_url(good)
    with metrics.step("verify"):
        assert (
            hashlib.sha256((tmp_path / "staged").read_bytes()).digest()
            == hashlib.sha256(payload).digest()
        )
    with pytest.raises(RuntimeError), metrics.step("switch"):
        raise RuntimeError("disk on fire")
    metrics.finish_install(False)

    snap = json.loads(json.dumps(metrics.snapshot()))  # JSON-serialisable
    assert snap["version"] == "1.1.0" and snap["from_version"] == "1.0.0"
    assert snap["method"] == "full"
    dl = snap["download"]
    assert dl["progress_bp"] == 10_000
    assert dl["bytes_fetched"] == 2 * len(payload)  # the corrupt copy crossed the wire too
    assert dl["retries"] == 2
    assert [f["source"] for f in dl["source_failures"]] == [
        f"url:{path_to_url(missing)}",
        f"url:{path_to_url(corrupt)}",
    ]
    assert "BlobNotFoundError" in dl["source_failures"][0]["error"]
    assert LengthOrHashMismatchError.__name__ in dl["source_failures"][1]["error"]
    [artifact] = dl["artifacts"]
    assert artifact == {
        "name": "node-bin",
        "received": len(payload),
        "total": len(payload),
        "progress_bp": 10_000,
        "source": path_to_url(good),  # the URL of the source that delivered it
        "done": True,
    }
    assert dl["average_speed"] > 0
    inst = snap["install"]
    assert inst["success"] is False
    assert inst["errors"] == ["switch: RuntimeError: disk on fire"]
    assert set(inst["steps"]) == {"download", "verify", "switch"}
    assert inst["duration"] >= inst["steps"]["download"]
    system = snap["system"]
    res = system["resources"]
    assert res["samples"] >= 6  # two per step plus the final one
    assert res["memory_rss_max"] >= res["memory_rss_start"] > 0
    assert system["memory_usage_during_update"] == res["memory_rss_max"]
    assert system["cpu_usage_during_update"] >= 0
    if res["disk_read_count"] is not None:  # Linux reports per-process I/O
        assert res["disk_read_count"] > 0


def test_progress_in_basis_points_over_several_artifacts() -> None:
    metrics = UpdateMetrics(version="2.0.0")
    assert metrics.download_progress is None
    metrics.on_progress(ProgressEvent(received=250, total=1000, source="s1"), "a")
    metrics.on_progress(ProgressEvent(received=0, total=3000, source="s2"), "b")
    assert metrics.download_progress == 625  # 250 of 4000
    metrics.on_progress(ProgressEvent(received=3000, total=3000, source="s2"), "b")
    assert metrics.download_progress == 8125
    assert metrics.bytes_by_source == {"s1": 250, "s2": 3000}
    # a sink reset (next source) restarts the count but keeps the bytes fetched
    metrics.on_progress(ProgressEvent(received=100, total=1000, source="s3"), "a")
    assert metrics.artifacts["a"].received == 100
    assert metrics.bytes_fetched == 3350


def test_moving_download_speed() -> None:
    clock = FakeClock()
    meter = SpeedMeter(window=5.0, clock=clock)
    assert meter.rate() == 0.0
    meter.add(1000)
    clock.now += 1
    meter.add(1000)
    assert meter.rate() == pytest.approx(2000.0)  # over the 1 s since the first byte
    clock.now += 4
    meter.add(3000)
    assert meter.rate() == pytest.approx(5000 / 5)
    clock.now += 10  # nothing for a while: the window empties
    assert meter.rate() == 0.0
    assert meter.average() == pytest.approx(5000 / 15)


def test_network_coverage_and_propagation() -> None:
    clock = FakeClock()
    metrics = UpdateMetrics(version="1.1.0", clock=clock)
    assert metrics.network_update_coverage is None
    metrics.record_peer_status("n1", "1.1.0")
    clock.now += 1800
    metrics.record_peer_status("n2", "1.1.0")
    metrics.record_peer_status("n3", "1.0.0")
    metrics.record_peer_status("n4", "1.0.0")
    assert metrics.network_update_coverage == 5000
    assert metrics.update_propagation_speed == pytest.approx(4.0)  # 2 nodes in half an hour
    snap = metrics.snapshot()["network"]
    assert snap["peer_update_status"]["n3"] == "1.0.0"


def test_resource_sampler_measures_work() -> None:
    sampler = ResourceSampler()
    sampler.sample()  # before start: ignored
    sampler.start()
    block = bytearray(8 * 1024 * 1024)  # touch memory
    for i in range(0, len(block), 4096):
        block[i] = 1
    digest = hashlib.sha256()
    for _ in range(40):
        digest.update(block)  # burn some CPU
        sampler.sample()
    usage = sampler.stop()
    assert usage.samples == 41
    assert usage.duration > 0
    assert usage.cpu_percent_max >= usage.cpu_percent_mean > 0
    assert usage.memory_rss_max >= usage.memory_rss_start
    d = usage.to_dict()
    assert set(d) >= {"cpu_percent_mean", "memory_rss_max", "disk_iops"}
    assert not sampler.running
    assert sampler.stop() == usage  # stopping twice changes nothing


@pytest.mark.anyio
async def test_resource_sampler_background_task() -> None:
    sampler = ResourceSampler()
    async with anyio.create_task_group() as tg:
        await tg.start(sampler.run, 0.01)
        assert sampler.running
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    usage = sampler.stop()
    assert usage.samples >= 3


@pytest.mark.anyio
async def test_cancellation_in_a_step_is_not_an_error() -> None:
    metrics = UpdateMetrics()
    with anyio.move_on_after(0.01):
        with metrics.step("wait"):
            await anyio.sleep(5)
    assert metrics.installation_errors == []
    assert "wait" in metrics.steps


def test_step_boundaries_without_with() -> None:
    """The installer reports step names as it goes (store's ``progress(step)``)."""
    clock = FakeClock()
    metrics = UpdateMetrics(version="1.1.0", clock=clock, sampler=ResourceSampler())
    metrics.start_install()
    metrics.step("verify")
    clock.now += 2
    metrics.step("switch")
    clock.now += 3
    metrics.finish_install()
    assert metrics.steps == {"verify": 2.0, "switch": 3.0}
    assert metrics.installation_duration == 5.0
    assert metrics.installation_success is True
    assert metrics.snapshot()["system"]["resources"]["samples"] >= 4


def test_caller_counted_download_and_reset() -> None:
    clock = FakeClock()
    metrics = UpdateMetrics(clock=clock)
    metrics.start_download("1.1.0")
    metrics.on_progress(ProgressEvent(received=500, total=1000, source="abc123"))
    metrics.on_progress(ProgressEvent(received=1000, total=1000, source="abc123"))
    clock.now += 4
    metrics.finish_download(bytes_fetched=1200)
    snap = metrics.snapshot()["download"]
    assert snap["bytes_fetched"] == 1200
    assert snap["duration"] == 4.0
    assert [a["name"] for a in snap["artifacts"]] == ["abc123"]  # keyed by the event source
    metrics.finish_install(False, "boom", duration=7.5)
    assert metrics.installation_duration == 7.5
    assert metrics.installation_errors == ["boom"]
    metrics.reset("1.2.0", "1.1.0")
    assert metrics.version == "1.2.0" and metrics.bytes_fetched == 0
    assert metrics.snapshot()["install"] == {
        "duration": None,
        "success": None,
        "errors": [],
        "steps": {},
    }
