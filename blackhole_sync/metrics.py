"""Update metrics: download speed and progress, retries, install timings, errors, resources.

:class:`UpdateMetrics` is the design's ``UpdateMetrics`` for one update on one node. It is
fed by the update manager: :class:`MetricsObserver` turns the transports'
:class:`~blackhole_sync.fetch.transport.ProgressEvent` stream (and ``fetch_with_fallback``'s
failures) into download metrics; :meth:`UpdateMetrics.step` times install steps and takes a
resource sample at each boundary; :class:`ResourceSampler` measures the process's CPU, memory
and disk I/O with psutil, on demand (cheap: a few ``/proc`` reads per sample) or from an
optional background task (:meth:`ResourceSampler.run`). :meth:`UpdateMetrics.snapshot`
returns a JSON-serialisable dict for ``node status --json`` and the update history.

Progress is in basis points (10000 = done), speeds in bytes per second, times in seconds.
psutil and anyio are imported when a sampler is made or run: reading the metrics a node saved
(``node status``) loads neither.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from attrs import define, field, frozen

if TYPE_CHECKING:
    import psutil  # type: ignore[import-untyped, unused-ignore]
    from anyio.abc import TaskStatus

    from .fetch import Locator, ProgressEvent

__all__ = [
    "ArtifactProgress",
    "MetricsObserver",
    "ResourceSampler",
    "ResourceUsage",
    "SpeedMeter",
    "UpdateMetrics",
]

#: The moving window of :class:`SpeedMeter`, in seconds.
SPEED_WINDOW: Final = 5.0
#: Errors and source failures kept per update (the oldest are dropped beyond).
MAX_RECORDED_ERRORS: Final = 100

Clock = Callable[[], float]


def _round(x: float, digits: int = 3) -> float:
    return round(x, digits)


class SpeedMeter:
    """Moving average of a byte rate over the last ``window`` seconds."""

    def __init__(self, window: float = SPEED_WINDOW, *, clock: Clock = time.monotonic) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._clock = clock
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self.total = 0
        self._first: float | None = None

    def add(self, nbytes: int) -> None:
        now = self._clock()
        if self._first is None:
            self._first = now
        self.total += nbytes
        self._samples.append((now, nbytes))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    def rate(self) -> float:
        """Bytes per second over the window (since the first byte, if that is more recent)."""
        if self._first is None:
            return 0.0
        now = self._clock()
        self._trim(now)
        span = min(self.window, now - self._first)
        if span <= 0:
            return 0.0
        return sum(n for _, n in self._samples) / span

    def average(self) -> float:
        """Bytes per second since the first byte."""
        if self._first is None:
            return 0.0
        span = self._clock() - self._first
        return self.total / span if span > 0 else 0.0


@define
class ArtifactProgress:
    """Download progress of one artifact (or patch)."""

    name: str
    total: int | None = None
    received: int = 0
    #: The source delivering it, once the fetch names one: the node's source URL (a peer
    #: transport's locator when it came from a peer).
    source: str = ""
    done: bool = False

    @property
    def progress_bp(self) -> int | None:
        if not self.total:
            return 10_000 if self.done else None
        return min(10_000, self.received * 10_000 // self.total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "received": self.received,
            "total": self.total,
            "progress_bp": self.progress_bp,
            "source": self.source,
            "done": self.done,
        }


# -- resource sampling ----------------------------------------------------------------------


@frozen
class ResourceUsage:
    """What a :class:`ResourceSampler` measured between start and stop (or so far).

    CPU is a percentage of one core (can exceed 100 with several threads); memory is the
    resident set size in bytes; disk I/O counts what the kernel accounts to the process
    (``None`` where the platform does not report it).
    """

    duration: float
    samples: int
    cpu_percent_mean: float
    cpu_percent_max: float
    memory_rss_start: int
    memory_rss_max: int
    read_bytes: int | None
    write_bytes: int | None
    read_count: int | None
    write_count: int | None

    @property
    def iops(self) -> float | None:
        """Read and write operations per second over the measurement."""
        if self.read_count is None or self.write_count is None or self.duration <= 0:
            return None
        return (self.read_count + self.write_count) / self.duration

    def to_dict(self) -> dict[str, Any]:
        iops = self.iops
        return {
            "duration": _round(self.duration),
            "samples": self.samples,
            "cpu_percent_mean": _round(self.cpu_percent_mean, 1),
            "cpu_percent_max": _round(self.cpu_percent_max, 1),
            "memory_rss_start": self.memory_rss_start,
            "memory_rss_max": self.memory_rss_max,
            "disk_read_bytes": self.read_bytes,
            "disk_write_bytes": self.write_bytes,
            "disk_read_count": self.read_count,
            "disk_write_count": self.write_count,
            "disk_iops": None if iops is None else _round(iops, 1),
        }


def _io(proc: psutil.Process) -> tuple[int, int, int, int] | None:
    import psutil  # loaded by the sampler already

    try:
        c = proc.io_counters()  # absent on macOS; may be denied in some containers
    except (AttributeError, psutil.Error, OSError, NotImplementedError):
        return None
    return (c.read_bytes, c.write_bytes, c.read_count, c.write_count)


def _cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class ResourceSampler:
    """Samples this process's CPU, memory and disk I/O (psutil) between start and stop.

    ``start()`` takes the baseline; ``sample()`` takes a sample now (call it at step
    boundaries); ``stop()`` takes a last one and returns :class:`ResourceUsage`. For
    periodic sampling, start :meth:`run` in a task group and cancel it before ``stop()``.
    Each sample costs a few reads of ``/proc`` on Linux.
    """

    def __init__(self, pid: int | None = None, *, clock: Clock = time.monotonic) -> None:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        self._proc = psutil.Process(pid)
        self._clock = clock
        self._running = False
        self._reset()

    def _reset(self) -> None:
        self._t0 = 0.0
        self._t_last = 0.0
        self._cpu0 = 0.0
        self._cpu_last = 0.0
        self._io0: tuple[int, int, int, int] | None = None
        self._io_last: tuple[int, int, int, int] | None = None
        self._rss0 = 0
        self._rss_max = 0
        self._cpu_max = 0.0
        self._samples = 0
        self._t_end: float | None = None

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Take the baseline (restarts a sampler that was used before)."""
        self._reset()
        now = self._clock()
        self._t0 = self._t_last = now
        self._cpu0 = self._cpu_last = _cpu_seconds(self._proc)
        self._io0 = self._io_last = _io(self._proc)
        self._rss0 = self._rss_max = int(self._proc.memory_info().rss)
        self._running = True

    def sample(self) -> None:
        """Take one sample now. Does nothing unless started."""
        if not self._running:
            return
        now = self._clock()
        cpu = _cpu_seconds(self._proc)
        dt = now - self._t_last
        if dt > 0:
            self._cpu_max = max(self._cpu_max, (cpu - self._cpu_last) * 100.0 / dt)
        self._t_last, self._cpu_last = now, cpu
        self._rss_max = max(self._rss_max, int(self._proc.memory_info().rss))
        io = _io(self._proc)
        if io is not None:
            self._io_last = io
        self._samples += 1

    def usage(self) -> ResourceUsage:
        """What was measured so far (up to the last sample)."""
        duration = (self._t_end if self._t_end is not None else self._t_last) - self._t0
        cpu_used = self._cpu_last - self._cpu0
        mean = cpu_used * 100.0 / duration if duration > 0 else 0.0
        io: tuple[int | None, ...] = (None, None, None, None)
        if self._io0 is not None and self._io_last is not None:
            io = tuple(b - a for a, b in zip(self._io0, self._io_last, strict=True))
        return ResourceUsage(
            duration=duration,
            samples=self._samples,
            cpu_percent_mean=mean,
            cpu_percent_max=max(self._cpu_max, mean),
            memory_rss_start=self._rss0,
            memory_rss_max=self._rss_max,
            read_bytes=io[0],
            write_bytes=io[1],
            read_count=io[2],
            write_count=io[3],
        )

    def stop(self) -> ResourceUsage:
        """Take a last sample, stop, and return the usage."""
        if self._running:
            self.sample()
            self._t_end = self._t_last
            self._running = False
        return self.usage()

    async def run(
        self,
        interval: float = 1.0,
        *,
        task_status: TaskStatus[None] | None = None,
    ) -> None:
        """Sample every ``interval`` seconds until cancelled (``tg.start(sampler.run)``).

        Starts the sampler if it is not running.
        """
        import anyio

        if interval <= 0:
            raise ValueError("interval must be positive")
        if not self._running:
            self.start()
        if task_status is not None:
            task_status.started()
        while True:
            await anyio.sleep(interval)
            self.sample()


# -- the metrics of one update --------------------------------------------------------------


def _error_text(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        message = str(error)
        return f"{type(error).__name__}: {message}" if message else type(error).__name__
    return error


@define
class UpdateMetrics:
    """Metrics of one update (the design's ``UpdateMetrics``), in snake_case.

    Download: ``download_speed`` (moving, bytes/s), ``download_progress`` (basis points over
    all artifacts with a known size), ``download_retries``, per-artifact progress, bytes per
    source, source failures. Installation: ``installation_duration``,
    ``installation_success``, ``installation_errors``, step timings. System: CPU, memory and
    disk I/O during the update (:class:`ResourceSampler`). Network: peers' reported versions
    (``peer_update_status``), from which ``network_update_coverage`` and
    ``update_propagation_speed`` are computed for the target version.
    """

    version: str | None = None
    from_version: str | None = None
    clock: Clock = field(default=time.monotonic, repr=False)
    sampler: ResourceSampler | None = field(default=None, repr=False)
    artifacts: dict[str, ArtifactProgress] = field(factory=dict)
    bytes_by_source: dict[str, int] = field(factory=dict)
    download_retries: int = 0
    source_failures: list[dict[str, str]] = field(factory=list)
    method: str | None = None  # "delta" | "full" | None
    steps: dict[str, float] = field(factory=dict)
    installation_success: bool | None = None
    installation_errors: list[str] = field(factory=list)
    peer_update_status: dict[str, str] = field(factory=dict)
    _speed: SpeedMeter = field(init=False, repr=False)
    _last_received: dict[str, int] = field(init=False, factory=dict, repr=False)
    _install_start: float | None = field(init=False, default=None, repr=False)
    _install_end: float | None = field(init=False, default=None, repr=False)
    _download_start: float | None = field(init=False, default=None, repr=False)
    _download_end: float | None = field(init=False, default=None, repr=False)
    _peer_times: dict[str, float] = field(init=False, factory=dict, repr=False)
    _resources: ResourceUsage | None = field(init=False, default=None, repr=False)
    _reported_bytes: int | None = field(init=False, default=None, repr=False)
    _current_step: tuple[str, float] | None = field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self._speed = SpeedMeter(clock=self.clock)

    def reset(self, version: str | None = None, from_version: str | None = None) -> None:
        """Forget everything measured and start on a new update (the sampler is kept)."""
        sampler, clock = self.sampler, self.clock
        if sampler is not None and sampler.running:
            sampler.stop()
        self.__init__(version, from_version, clock=clock, sampler=sampler)  # type: ignore[misc]

    # -- downloads ---------------------------------------------------------------------

    def start_download(self, version: str | None = None) -> None:
        """Start the download clock (and set the target version when given)."""
        if version is not None:
            self.version = version
        self._download_start = self.clock()
        self._download_end = None

    def finish_download(
        self, bytes_fetched: int | None = None, duration: float | None = None
    ) -> None:
        """Stop the download clock. ``bytes_fetched`` / ``duration``, when the caller counted
        them itself, take precedence over what the progress events showed."""
        self._download_end = self.clock()
        if self._download_start is None or duration is not None:
            self._download_start = self._download_end - (duration or 0.0)
        if bytes_fetched is not None:
            self._reported_bytes = bytes_fetched

    def start_artifact(self, name: str, total: int | None = None) -> ArtifactProgress:
        """Declare an artifact (or patch) about to be fetched, with its expected length."""
        if self._download_start is None:
            self._download_start = self.clock()
        progress = self.artifacts.get(name)
        if progress is None:
            progress = self.artifacts[name] = ArtifactProgress(name, total)
        elif total is not None:
            progress.total = total
        return progress

    def on_progress(self, event: ProgressEvent, artifact: str | None = None) -> None:
        """Account a transport progress event, for ``artifact`` (default: ``event.source``).

        ``event.received`` counts the bytes in the sink; when it goes down the sink was
        reset for another source, and counting restarts (the bytes already fetched stay in
        the totals: they crossed the network). A resumed download's first events carry the
        kept prefix in ``event.resumed``: those bytes count as progress, not as fetched.
        """
        name = artifact if artifact is not None else event.source
        source = event.url or event.source  # the source's URL, once the fetch names it
        progress = self.start_artifact(name, event.total)
        last = self._last_received.get(name, event.resumed)
        delta = event.received - last if event.received >= last else event.received
        self._last_received[name] = event.received
        progress.received = event.received
        progress.source = source
        if delta > 0:
            self._speed.add(delta)
            self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + delta

    def finish_artifact(self, name: str) -> None:
        progress = self.start_artifact(name)
        progress.done = True
        if all(p.done for p in self.artifacts.values()):
            self._download_end = self.clock()

    def record_source_failure(self, source: str, error: BaseException | str) -> None:
        """A source failed to deliver; the next one is tried (counts as a retry)."""
        self.download_retries += 1
        if len(self.source_failures) < MAX_RECORDED_ERRORS:
            self.source_failures.append({"source": source, "error": _error_text(error)})

    def record_retry(self) -> None:
        """A retry that is not a source failure (e.g. a resumed transfer)."""
        self.download_retries += 1

    @property
    def download_speed(self) -> float:
        """Bytes per second over the last few seconds."""
        return self._speed.rate()

    @property
    def bytes_fetched(self) -> int:
        """Bytes that crossed the network (including ones discarded on a retry)."""
        if self._reported_bytes is not None:
            return self._reported_bytes
        return self._speed.total

    @property
    def download_duration(self) -> float | None:
        """Seconds from the start of the download to its end (or now); None before it began."""
        if self._download_start is None:
            return None
        end = self._download_end if self._download_end is not None else self.clock()
        return end - self._download_start

    @property
    def download_progress(self) -> int | None:
        """Basis points over all artifacts with a known size; None before any is known."""
        known = [p for p in self.artifacts.values() if p.total is not None]
        if not known:
            return (
                10_000 if self.artifacts and all(p.done for p in self.artifacts.values()) else None
            )
        total = sum(p.total or 0 for p in known)
        if total == 0:
            return 10_000
        received = sum(min(p.received, p.total or 0) for p in known)
        return min(10_000, received * 10_000 // total)

    # -- installation ------------------------------------------------------------------

    def start_install(self) -> None:
        """Start the install clock and the resource sampler (when one is attached)."""
        self._install_start = self.clock()
        if self.sampler is not None and not self.sampler.running:
            self.sampler.start()

    def finish_install(
        self,
        success: bool = True,
        error: BaseException | str | None = None,
        *,
        duration: float | None = None,
    ) -> None:
        """Stop the install clock, the current step and the sampler; record the outcome.

        ``duration``, when the caller timed the install itself, takes precedence.
        """
        self._end_step()
        self._install_end = self.clock()
        if self._install_start is None or duration is not None:
            self._install_start = self._install_end - (duration or 0.0)
        self.installation_success = success
        if error is not None:
            self.record_error(error)
        if self.sampler is not None:
            self._resources = self.sampler.stop()

    def step(self, name: str) -> _Step:
        """Mark the start of install step ``name`` (ending the previous one).

        Either call it at each step boundary (``metrics.step("switch")``; the last step
        ends at :meth:`finish_install`), or use it as a context manager
        (``with metrics.step("verify"): ...``), which ends the step on exit. A resource
        sample is taken at each boundary. In the ``with`` form an exception (not a
        cancellation) escaping the step is recorded as an installation error.
        """
        self._end_step()
        if self.sampler is not None:
            self.sampler.sample()
        self._current_step = (name, self.clock())
        return _Step(self, name)

    def _end_step(self, name: str | None = None) -> None:
        current = self._current_step
        if current is None or (name is not None and current[0] != name):
            return
        self._current_step = None
        step, t0 = current
        self.steps[step] = self.steps.get(step, 0.0) + (self.clock() - t0)
        if self.sampler is not None:
            self.sampler.sample()

    def record_error(self, error: BaseException | str) -> None:
        if len(self.installation_errors) < MAX_RECORDED_ERRORS:
            self.installation_errors.append(_error_text(error))

    @property
    def installation_duration(self) -> float | None:
        if self._install_start is None:
            return None
        end = self._install_end if self._install_end is not None else self.clock()
        return end - self._install_start

    @property
    def resources(self) -> ResourceUsage | None:
        """Resource usage: final after :meth:`finish_install`, else what was sampled so far."""
        if self._resources is not None:
            return self._resources
        if self.sampler is not None and self.sampler.running:
            return self.sampler.usage()
        return None

    # -- network -----------------------------------------------------------------------

    def record_peer_status(self, node_id: str, version: str) -> None:
        """A peer reported the version it runs (from status broadcasts)."""
        if self.peer_update_status.get(node_id) != version:
            self.peer_update_status[node_id] = version
            if version == self.version:
                self._peer_times.setdefault(node_id, self.clock())

    @property
    def network_update_coverage(self) -> int | None:
        """Basis points of known peers running the target version."""
        if not self.peer_update_status or self.version is None:
            return None
        on = sum(1 for v in self.peer_update_status.values() if v == self.version)
        return on * 10_000 // len(self.peer_update_status)

    @property
    def update_propagation_speed(self) -> float | None:
        """Peers per hour that reached the target version since the first one did."""
        times = [
            t
            for node, t in self._peer_times.items()
            if self.peer_update_status.get(node) == self.version
        ]
        if len(times) < 2:
            return None
        span = max(times) - min(times)
        return len(times) * 3600.0 / span if span > 0 else None

    # -- output ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable summary (``node status --json``, history records)."""
        res = self.resources
        res_dict = res.to_dict() if res is not None else None
        duration = self.installation_duration
        dl_duration = self.download_duration
        dl_time = None if dl_duration is None else _round(dl_duration)
        return {
            "version": self.version,
            "from_version": self.from_version,
            "method": self.method,
            "download": {
                "speed": _round(self.download_speed, 1),
                "average_speed": _round(self._speed.average(), 1),
                "progress_bp": self.download_progress,
                "bytes_fetched": self.bytes_fetched,
                "duration": dl_time,
                "retries": self.download_retries,
                "artifacts": [p.to_dict() for p in self.artifacts.values()],
                "bytes_by_source": dict(self.bytes_by_source),
                "source_failures": [dict(f) for f in self.source_failures],
            },
            "install": {
                "duration": None if duration is None else _round(duration),
                "success": self.installation_success,
                "errors": list(self.installation_errors),
                "steps": {k: _round(v) for k, v in self.steps.items()},
            },
            "system": {
                "cpu_usage_during_update": None
                if res_dict is None
                else res_dict["cpu_percent_mean"],
                "memory_usage_during_update": None if res is None else res.memory_rss_max,
                "disk_io_during_update": None if res_dict is None else res_dict["disk_iops"],
                "resources": res_dict,
            },
            "network": {
                "peer_update_status": dict(self.peer_update_status),
                "network_update_coverage_bp": self.network_update_coverage,
                "update_propagation_speed": self.update_propagation_speed,
            },
        }


class _Step:
    """What :meth:`UpdateMetrics.step` returns: usable as a context manager."""

    def __init__(self, metrics: UpdateMetrics, name: str) -> None:
        self._metrics = metrics
        self.name = name

    def __enter__(self) -> _Step:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, Exception):
            self._metrics.record_error(f"{self.name}: {_error_text(exc)}")
        self._metrics._end_step(self.name)


class MetricsObserver:
    """Turns transport progress events into :class:`UpdateMetrics` for one artifact.

    Pass it as a :class:`~blackhole_sync.fetch.transport.VerifyingSink`'s ``progress`` callback and
    :meth:`on_failure` as ``fetch_with_fallback``'s ``on_failure``::

        observer = MetricsObserver(metrics, artifact.name, total=artifact.length)
        sink = VerifyingSink(f, max_length=..., progress=observer)
        await fetch_with_fallback(candidates, sink, on_failure=observer.on_failure)
        observer.done()
    """

    def __init__(self, metrics: UpdateMetrics, artifact: str, *, total: int | None = None) -> None:
        self.metrics = metrics
        self.artifact = artifact
        metrics.start_artifact(artifact, total)

    def __call__(self, event: ProgressEvent) -> None:
        self.metrics.on_progress(event, self.artifact)

    def on_failure(self, locator: Locator, error: BaseException) -> None:
        self.metrics.record_source_failure(f"{locator.kind}:{locator.value}", error)

    def done(self) -> None:
        self.metrics.finish_artifact(self.artifact)
