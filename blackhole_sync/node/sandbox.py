"""UpdateSandbox: the design's "test installation", run on a staged tree before the switch.

A sandbox is a private scratch directory holding *copies* (never hard links) of the staged
tree and of the node's data, so a self-test can write freely. The release's self-test command
runs there through a small launcher (``python -c``, stdlib only) that, before it executes the
command:

- ``isolate_network``: enters a new network namespace (``unshare(CLONE_NEWNET)``) and brings
  its loopback up, so the self-test reaches nothing, not even the host's 127.0.0.1 services;
- ``isolate_filesystem``: enters a new mount namespace (``unshare(CLONE_NEWNS)``), makes every
  mount private, bind-mounts the sandbox onto itself and remounts every other mount
  read-only, so nothing outside the sandbox is writable;
- sets ``RLIMIT_AS`` (the memory limit) and ``RLIMIT_CORE`` = 0 in the forked command, then
  waits for it to report its exit status and peak RSS.

Namespaces need root (or CAP_SYS_ADMIN). Where they cannot be entered, the run still happens
and its result says ``isolated=False`` with the reason: it never pretends.

Anomalies: a nonzero exit, death by a signal, a timeout (the process group is killed), memory
(an allocation refused under the limit, or a peak near it), and files written outside the
sandbox (found by snapshotting the watched paths -- by default the original staged tree and
data directory, plus any the caller adds such as the node directory -- before and after).
A run with any anomaly fails; :func:`run_sandbox_test` raises :class:`SandboxError`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from attrs import define, frozen

from ..documents import Command
from ..errors import SandboxError
from ..fetch import HealthCheck
from .commands import CheckResult, one_line, run_plugin_check, run_process

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "Anomaly",
    "IsolationStatus",
    "Sandbox",
    "TestResult",
    "UpdateSandbox",
    "ValidationResult",
    "run_sandbox_test",
]

#: RLIMIT_AS for a self-test unless the caller sets another (None: no limit).
DEFAULT_MEMORY_LIMIT = 2 * 1024**3
#: Entries snapshotted per watched path; beyond it the snapshot is marked incomplete.
MAX_WATCHED_ENTRIES = 50_000
#: A peak RSS at or above this fraction of the memory limit is a memory anomaly.
_MEMORY_NEAR_LIMIT = 0.9
_MEMORY_MARKERS = (
    b"MemoryError",
    b"Cannot allocate memory",
    b"out of memory",
    b"Out of memory",
    b"std::bad_alloc",
    b"memory allocation of",
    b"failed to allocate",
)


# -- results ---------------------------------------------------------------------------------


@frozen
class IsolationStatus:
    """Whether one kind of isolation was requested and actually in force."""

    kind: str  # "network" | "filesystem"
    requested: bool
    isolated: bool
    detail: str = ""

    def describe(self) -> str:
        if not self.requested:
            return f"{self.kind}: not requested"
        state = "isolated" if self.isolated else "not isolated"
        return f"{self.kind}: {state}" + (f" ({self.detail})" if self.detail else "")


@frozen
class Anomaly:
    kind: str  # "exit-status" | "signal" | "timeout" | "memory" | "outside-write" | "check"
    detail: str
    path: str | None = None


@frozen
class TestResult:
    """One self-test run in a sandbox."""

    __test__ = False  # not a pytest class

    passed: bool
    exit_code: int | None
    timed_out: bool
    duration: float
    output: bytes
    anomalies: tuple[Anomaly, ...]
    network: IsolationStatus
    filesystem: IsolationStatus
    peak_rss: int | None = None  # bytes, of the self-test process
    checks: tuple[CheckResult, ...] = ()

    @property
    def reason(self) -> str | None:
        if self.passed:
            return None
        parts = [f"{a.kind}: {a.detail}" for a in self.anomalies] or ["failed"]
        return one_line("sandbox self-test failed: " + "; ".join(parts))


@frozen
class ValidationResult:
    valid: bool
    reasons: tuple[str, ...]
    anomalies: tuple[Anomaly, ...]
    isolation: tuple[IsolationStatus, ...]


@define
class Sandbox:
    """A scratch directory: ``root/tree`` (the staged tree), ``root/data``, ``root/tmp``."""

    root: Path
    tree: Path
    data: Path
    watch_paths: tuple[Path, ...]
    network_requested: bool = False
    filesystem_requested: bool = False
    last_result: TestResult | None = None
    closed: bool = False

    async def aclose(self) -> None:
        """Remove the scratch directory (idempotent)."""
        if not self.closed:
            self.closed = True
            await anyio.to_thread.run_sync(_rmtree, self.root)

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()


def _rmtree(path: Path) -> None:
    root = os.path.abspath(path)

    def onerror(func: Any, p: str, exc: BaseException) -> None:
        # A self-test may leave read-only directories behind: make them writable -- inside
        # the sandbox only. The sandbox's own parent (the system temporary directory) is never
        # touched: chmod-ing it 0700 would lock every other user out of /tmp.
        try:
            parent = os.path.dirname(os.path.abspath(p))
            if parent != root and not parent.startswith(root + os.sep):
                return
            os.chmod(parent, 0o700)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=onerror)
    else:
        shutil.rmtree(path, onerror=lambda f, p, e: onerror(f, p, e[1]))


# -- snapshots of watched paths --------------------------------------------------------------

_Snapshot = dict[str, tuple[int, int, int, int, int]]


def _snapshot(paths: Sequence[Path], exclude: Path) -> tuple[_Snapshot, bool]:
    """lstat of every entry under ``paths`` (not following links), skipping ``exclude``."""
    snap: _Snapshot = {}
    complete = True
    excluded = str(exclude)

    def record(p: str) -> bool:
        try:
            st = os.lstat(p)
        except OSError:
            return False
        snap[p] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_mode)
        return stat.S_ISDIR(st.st_mode)

    for base in paths:
        stack = [os.path.abspath(base)]
        count = 0
        while stack:
            p = stack.pop()
            if p == excluded or p.startswith(excluded + os.sep):
                continue
            count += 1
            if count > MAX_WATCHED_ENTRIES:
                complete = False
                break
            if record(p):
                try:
                    with os.scandir(p) as it:
                        stack.extend(e.path for e in it)
                except OSError:
                    pass
    return snap, complete


def _diff_snapshots(before: _Snapshot, after: _Snapshot) -> list[Anomaly]:
    anomalies: list[Anomaly] = []
    for p in sorted(before.keys() | after.keys()):
        old, new = before.get(p), after.get(p)
        if old == new:
            continue
        if old is None:
            what = "created"
        elif new is None:
            what = "removed"
        elif stat.S_ISDIR(new[4]) and old[2:] == new[2:]:
            continue  # a directory's times move when an entry below changes: reported there
        else:
            what = "modified"
        anomalies.append(Anomaly("outside-write", f"{what} outside the sandbox: {p}", p))
        if len(anomalies) >= 100:
            break
    return anomalies


# -- the launcher (runs in a child; stdlib only) ---------------------------------------------

_LAUNCHER = "from blackhole_sync.node.sandbox import _launcher_main; _launcher_main()"

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_NOATIME = 1024
_MS_NODIRATIME = 2048
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_RELATIME = 1 << 21
_ST_TO_MS = (
    (os.ST_NOSUID, _MS_NOSUID),
    (os.ST_NODEV, _MS_NODEV),
    (os.ST_NOEXEC, _MS_NOEXEC),
    (getattr(os, "ST_NOATIME", 1024), _MS_NOATIME),
    (getattr(os, "ST_NODIRATIME", 2048), _MS_NODIRATIME),
    (getattr(os, "ST_RELATIME", 4096), _MS_RELATIME),
)


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _mount(libc: Any, source: str | None, target: str, flags: int) -> None:
    import ctypes

    src = None if source is None else os.fsencode(source)
    if libc.mount(src, os.fsencode(target), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read(4 << 20).splitlines():
            fields = line.split(b" ")
            if len(fields) > 4:
                raw = fields[4].decode("utf-8", "surrogateescape")
                for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                    raw = raw.replace(esc, ch)
                points.append(raw)
    return points


def _isolate_filesystem_here(libc: Any, root: str) -> tuple[bool, str]:
    """In this (single-threaded) process: new mount namespace, all read-only except ``root``."""
    import ctypes

    if libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        return False, f"unshare(CLONE_NEWNS) failed: {os.strerror(err)}"
    try:
        _mount(libc, None, "/", _MS_REC | _MS_PRIVATE)
        _mount(libc, root, root, _MS_BIND | _MS_REC)
    except OSError as exc:
        return False, f"mount failed: {exc}"
    failed: list[str] = []
    for point in dict.fromkeys(_mount_points()):
        if point == root or point.startswith(root.rstrip("/") + "/"):
            continue
        try:
            flags = os.statvfs(point).f_flag
        except OSError:
            flags = 0
        keep = sum(ms for st, ms in _ST_TO_MS if flags & st)
        try:
            _mount(libc, None, point, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | keep)
        except OSError as exc:
            failed.append(f"{point} ({exc.strerror})")
    if failed:
        return False, "could not make read-only: " + ", ".join(failed[:5])
    return True, "mount namespace, everything outside the sandbox read-only"


def _isolate_network_here(libc: Any) -> tuple[bool, str]:
    import ctypes
    import fcntl
    import socket
    import struct

    if libc.unshare(_CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        return False, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}"
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, req)[:18])[1]
            fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))
    except OSError as exc:
        return True, f"new network namespace; loopback left down ({exc.strerror})"
    return True, "new network namespace with only loopback"


def _launcher_main() -> None:
    """Entry point of the launcher process: ``python -c _LAUNCHER SPEC_JSON``."""
    import resource

    spec = json.loads(sys.argv[1])
    root: str = spec["root"]
    status: dict[str, Any] = {}
    libc = _libc()
    if spec["filesystem"]:
        ok, detail = _isolate_filesystem_here(libc, root)
        status["filesystem"] = {"isolated": ok, "detail": detail}
    if spec["network"]:
        ok, detail = _isolate_network_here(libc)
        status["network"] = {"isolated": ok, "detail": detail}
    with open(spec["status_path"], "w", encoding="utf-8") as f:
        json.dump(status, f)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the self-test
        try:
            limit = spec["memory_limit"]
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.chdir(spec["cwd"])
            os.execvpe(spec["argv"][0], spec["argv"], spec["env"])  # noqa: S606 - argv, no shell
        except BaseException as exc:  # noqa: BLE001 - report and leave the forked child
            os.write(2, f"sandbox: cannot run {spec['argv'][0]!r}: {exc}\n".encode())
        finally:
            os._exit(127)
    _, wstatus, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(wstatus)
    status["exit_code"] = code
    status["maxrss"] = usage.ru_maxrss * 1024
    with open(spec["status_path"], "w", encoding="utf-8") as f:
        json.dump(status, f)
    os._exit(code if code >= 0 else 128 - code)


# -- the sandbox -----------------------------------------------------------------------------


class UpdateSandbox:
    """Creates sandboxes and runs self-tests in them (the design's UpdateSandbox).

    ``scratch_dir``: where sandboxes are made (default: the system temporary directory; the
    store passes a directory on the node's own filesystem). ``watch_paths``: extra paths whose
    modification by a self-test is an anomaly (e.g. the node directory). ``checks``: plugin
    self-tests (``blackhole_sync_self_tests``), run after the command with ``check_timeout``.
    ``require_isolation``: make unavailable isolation a failure instead of a note.
    """

    def __init__(
        self,
        *,
        scratch_dir: Path | None = None,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
        watch_paths: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        checks: Sequence[HealthCheck] = (),
        check_timeout: float = 60,
        require_isolation: bool = False,
    ) -> None:
        self.scratch_dir = scratch_dir
        self.memory_limit = memory_limit
        self.watch_paths = tuple(watch_paths)
        self.env = dict(env or {})
        self.checks = tuple(checks)
        self.check_timeout = check_timeout
        self.require_isolation = require_isolation

    async def create_sandbox(self, staged_tree: Path, data_dir: Path | None = None) -> Sandbox:
        """Copy ``staged_tree`` (symlinks kept as links) and ``data_dir`` into a fresh 0700
        scratch directory."""
        if not staged_tree.is_dir():
            raise ValueError(f"staged tree {staged_tree} is not a directory")
        if self.scratch_dir is not None:
            self.scratch_dir.mkdir(parents=True, exist_ok=True)
        root = Path(
            tempfile.mkdtemp(prefix="sandbox-", dir=self.scratch_dir)
        ).resolve()  # mkdtemp: mode 0700
        try:
            tree, data = root / "tree", root / "data"

            def copy() -> None:
                shutil.copytree(staged_tree, tree, symlinks=True)
                if data_dir is not None and data_dir.exists():
                    shutil.copytree(data_dir, data, symlinks=True)
                else:
                    data.mkdir()
                for sub in ("tmp", "home"):
                    (root / sub).mkdir()

            await anyio.to_thread.run_sync(copy)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_rmtree, root)
            raise
        watched = [staged_tree.resolve(), *(p.resolve() for p in self.watch_paths)]
        if data_dir is not None:
            watched.append(data_dir.resolve())
        return Sandbox(root, tree, data, tuple(dict.fromkeys(watched)))

    async def isolate_filesystem(self, sandbox: Sandbox) -> IsolationStatus:
        """Ask for a private mount namespace with everything but the sandbox read-only.
        Probes once and returns whether it is available here."""
        sandbox.filesystem_requested = True
        return (await self._probe(sandbox, network=False, filesystem=True))[1]

    async def isolate_network(self, sandbox: Sandbox) -> IsolationStatus:
        """Ask for a new network namespace (loopback only). Probes once; returns availability."""
        sandbox.network_requested = True
        return (await self._probe(sandbox, network=True, filesystem=False))[0]

    async def _probe(
        self, sandbox: Sandbox, *, network: bool, filesystem: bool
    ) -> tuple[IsolationStatus, IsolationStatus]:
        argv = (sys.executable, "-c", "pass")
        _, _, _, status = await self._launch(
            sandbox, argv, timeout=30, network=network, filesystem=filesystem
        )
        return _statuses(status, network, filesystem)

    async def _launch(
        self,
        sandbox: Sandbox,
        argv: Sequence[str],
        *,
        timeout: float,  # noqa: ASYNC109 - the command's own limit
        network: bool,
        filesystem: bool,
    ) -> tuple[int | None, bool, Any, dict[str, Any]]:
        status_path = sandbox.root / "tmp" / ".sandbox-status.json"
        status_path.unlink(missing_ok=True)
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "HOME": str(sandbox.root / "home"),
            "TMPDIR": str(sandbox.root / "tmp"),
            "BLACKHOLE_SYNC_SANDBOX": str(sandbox.root),
            "BLACKHOLE_SYNC_TREE": str(sandbox.tree),
            "BLACKHOLE_SYNC_DATA": str(sandbox.data),
            **self.env,
        }
        spec = {
            "root": str(sandbox.root),
            "status_path": str(status_path),
            "network": network,
            "filesystem": filesystem,
            "memory_limit": self.memory_limit,
            "cwd": str(sandbox.tree),
            "argv": list(argv),
            "env": env,
        }
        outcome = await run_process(
            [sys.executable, "-c", _LAUNCHER, json.dumps(spec)],
            cwd=sandbox.tree,
            env=None,
            timeout=timeout,
        )
        try:
            status = json.loads(status_path.read_bytes()[: 1 << 16])
        except (OSError, ValueError):
            status = {}
        if not isinstance(status, dict):
            status = {}
        return outcome.exit_code, outcome.timed_out, outcome, status

    async def test_update(
        self, sandbox: Sandbox, command: Command, *, version: str = ""
    ) -> TestResult:
        """Run the release's self-test command in the sandbox (cwd: the copied tree), then any
        plugin self-tests; collect anomalies. Never raises for a failed test."""
        if sandbox.closed:
            raise RuntimeError("sandbox is closed")
        before, complete = await anyio.to_thread.run_sync(
            _snapshot, sandbox.watch_paths, sandbox.root
        )
        exit_code, timed_out, outcome, status = await self._launch(
            sandbox,
            command.argv,
            timeout=command.timeout,
            network=sandbox.network_requested,
            filesystem=sandbox.filesystem_requested,
        )
        after, _ = await anyio.to_thread.run_sync(_snapshot, sandbox.watch_paths, sandbox.root)
        network, filesystem = _statuses(
            status, sandbox.network_requested, sandbox.filesystem_requested
        )
        peak = status.get("maxrss")
        peak_rss = peak if isinstance(peak, int) else None
        anomalies: list[Anomaly] = []
        if timed_out:
            anomalies.append(
                Anomaly("timeout", f"no exit within {command.timeout}s; process group killed")
            )
        elif exit_code is not None and exit_code != 0:
            inner = status.get("exit_code")
            if isinstance(inner, int) and inner < 0:
                anomalies.append(Anomaly("signal", f"killed by signal {-inner}"))
            else:
                anomalies.append(Anomaly("exit-status", f"exit status {exit_code}"))
        if self.memory_limit is not None and (
            any(m in outcome.output for m in _MEMORY_MARKERS)
            or (peak_rss is not None and peak_rss >= self.memory_limit * _MEMORY_NEAR_LIMIT)
        ):
            anomalies.append(
                Anomaly(
                    "memory",
                    f"memory limit of {self.memory_limit} bytes reached"
                    + (f" (peak RSS {peak_rss} bytes)" if peak_rss is not None else ""),
                )
            )
        anomalies.extend(_diff_snapshots(before, after))
        if not complete:
            anomalies.append(Anomaly("outside-write", "watched paths too large to snapshot fully"))
        if self.require_isolation:
            for iso in (network, filesystem):
                if iso.requested and not iso.isolated:
                    anomalies.append(Anomaly("isolation", iso.describe()))
        checks: list[CheckResult] = []
        for check in self.checks:
            checked = await run_plugin_check(check, sandbox.root, version, self.check_timeout)
            checks.append(checked)
            if not checked.ok:
                anomalies.append(Anomaly("check", f"{checked.name}: {checked.reason}"))
        tail = outcome.output.decode("utf-8", "replace").strip().splitlines()[-1:]
        if anomalies and tail and anomalies[0].kind in ("exit-status", "signal"):
            first = anomalies[0]
            anomalies[0] = Anomaly(first.kind, one_line(f"{first.detail}: {tail[0]}", 300))
        result = TestResult(
            passed=not anomalies,
            exit_code=None if timed_out else exit_code,
            timed_out=timed_out,
            duration=outcome.duration,
            output=outcome.output,
            anomalies=tuple(anomalies),
            network=network,
            filesystem=filesystem,
            peak_rss=peak_rss,
            checks=tuple(checks),
        )
        sandbox.last_result = result
        return result

    async def validate_behavior(self, sandbox: Sandbox) -> ValidationResult:
        """Judge the last test run: exited 0 in time, no anomaly."""
        result = sandbox.last_result
        if result is None:
            raise RuntimeError("validate_behavior before test_update")
        reasons = tuple(f"{a.kind}: {a.detail}" for a in result.anomalies)
        return ValidationResult(
            valid=result.passed,
            reasons=reasons,
            anomalies=result.anomalies,
            isolation=(result.network, result.filesystem),
        )

    async def detect_anomalies(self, sandbox: Sandbox) -> list[Anomaly]:
        """Anomalies of the last test run (empty before any run)."""
        return [] if sandbox.last_result is None else list(sandbox.last_result.anomalies)

    async def destroy_sandbox(self, sandbox: Sandbox) -> None:
        await sandbox.aclose()


def _statuses(
    status: Mapping[str, Any], network: bool, filesystem: bool
) -> tuple[IsolationStatus, IsolationStatus]:
    def one(kind: str, requested: bool) -> IsolationStatus:
        if not requested:
            return IsolationStatus(kind, False, False)
        entry = status.get(kind)
        if not isinstance(entry, Mapping):
            return IsolationStatus(kind, True, False, "the launcher did not report")
        return IsolationStatus(
            kind, True, entry.get("isolated") is True, str(entry.get("detail", ""))
        )

    return one("network", network), one("filesystem", filesystem)


async def run_sandbox_test(
    tree: Path,
    data_dir: Path | None,
    command: Command,
    *,
    isolate_network: bool = True,
    isolate_filesystem: bool = True,
    version: str = "",
    scratch_dir: Path | None = None,
    watch_paths: Sequence[Path] = (),
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
    checks: Sequence[HealthCheck] = (),
    env: Mapping[str, str] | None = None,
) -> TestResult:
    """Create a sandbox, run ``command`` in it, remove it. Raises :class:`SandboxError`
    (one line) when the test failed; returns the passing result otherwise.

    ``checks`` are plugin self-tests (``blackhole_sync_self_tests``); each is called with the
    sandbox root as ``node_dir`` (holding ``tree/`` and ``data/``) after the command ran.
    Isolation that is unavailable here is reported in the result, not a failure."""
    box = UpdateSandbox(
        scratch_dir=scratch_dir,
        memory_limit=memory_limit,
        watch_paths=watch_paths,
        checks=checks,
        env=env,
    )
    async with await box.create_sandbox(tree, data_dir) as sandbox:
        sandbox.network_requested = isolate_network
        sandbox.filesystem_requested = isolate_filesystem
        result = await box.test_update(sandbox, command, version=version)
    if not result.passed:
        raise SandboxError(result.reason)
    return result
