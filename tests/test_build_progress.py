"""Hole 8: ``release build`` of a large artifact said nothing for minutes and left its scratch
files in ``REPO/.bhsync/tmp`` for good.

Each long step is now reported on stderr (plain lines when stderr is not a terminal, a live
display when it is, nothing with ``--json``), and the scratch space is emptied when a build
fails, is interrupted, or -- for a build that was killed -- by the next build.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from cli_helpers import BIN, ENV, bhs, bhs_json, write_artifact

from blackhole_sync.release import RepoLayout
from blackhole_sync.testing import run as run_process, scaled, spawn

MiB = 1024 * 1024


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A 1-of-1 repository (one person's keys) with nothing published."""
    keys = tmp_path / "keys"
    keys.mkdir()
    bhs("key", "generate", keys / "k")
    repo = tmp_path / "repo"
    pub, key = keys / "k.pub", keys / "k"
    bhs("repo", "init", repo, "--root-key", pub, "--root-threshold", "1", "--release-key", pub,
        "--release-threshold", "1", "--index-key", pub, "--sign-with", key)  # fmt: skip
    return repo


def publish(repo: Path, version: str, *artifacts: Path) -> None:
    key = repo.parent / "keys" / "k"
    args: list[str | os.PathLike[str]] = []
    for a in artifacts:
        args += ["--artifact", a]
    bhs_json("release", "build", repo, "--version", version, *args)
    bhs("release", "sign", repo, "--version", version, "--key", key)
    bhs("release", "publish", repo, "--version", version, "--index-key", key)


def compressible(path: Path, size: int, *, seed: int = 1) -> Path:
    """``size`` bytes of text-like data (compression has real work to do)."""
    import random

    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(3, 9)).hex().encode() for _ in range(2000)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=64)) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out[:size]))
    return path


def leftovers(repo: Path) -> list[str]:
    tmp = repo / ".bhsync" / "tmp"
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) if tmp.exists() else []


def test_large_build_reports_each_long_step_as_plain_lines(repo: Path, tmp_path: Path) -> None:
    v1 = compressible(tmp_path / "v1" / "app", 6 * MiB)
    publish(repo, "1.0.0", v1)
    v2 = tmp_path / "v2" / "app"
    v2.parent.mkdir()
    data = bytearray(v1.read_bytes())
    data[MiB : MiB + 16] = b"a changed line!!"
    v2.write_bytes(bytes(data))
    tree = tmp_path / "v2" / "web"
    for i in range(3):
        compressible(tree / f"page{i}.html", 100_000, seed=i)
    result = bhs("release", "build", repo, "--version", "1.1.0", "--artifact", v2,
                 "--artifact", tree)  # fmt: skip
    lines = result.err.splitlines()
    for step in ("compressing app", "hashing app", "diffing app against 1.0.0", "packing web.tar"):
        started = [line for line in lines if step in line and line.endswith("...")]
        ended = [line for line in lines if step in line and "done in" in line]
        assert started and ended, f"no progress for {step!r}:\n{result.err}"
    assert all(line.startswith("blackhole-sync: ") for line in lines), result.err
    assert "(6.0 MiB)" in result.err
    # small inputs are not worth a line: the 100 kB pages are not hashed aloud
    assert "page0" not in result.err
    assert result.out.startswith("built draft 1.1.0")
    assert leftovers(repo) == []


def test_json_build_reports_nothing(repo: Path, tmp_path: Path) -> None:
    app = compressible(tmp_path / "app", 5 * MiB)
    result = bhs("release", "build", repo, "--version", "1.0.0", "--artifact", app, "--json")
    assert result.err == ""
    assert result.json()["version"] == "1.0.0"


def test_build_on_a_terminal_shows_a_live_display(repo: Path, tmp_path: Path) -> None:
    app = compressible(tmp_path / "app", 5 * MiB)
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = run_process(
            [BIN, "release", "build", str(repo), "--version", "1.0.0", "--artifact", str(app)],
            stderr=slave, env=ENV, timeout=300,
        )  # fmt: skip
    finally:
        os.close(slave)
        reader.join(timeout=scaled(10))
        os.close(master)
    shown = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, shown
    assert "compressing app" in shown and "hashing app" in shown
    assert "\x1b[" in shown, "no terminal control sequences: not a live display"
    assert "blackhole-sync: compressing" not in shown  # not the plain lines


def test_failed_build_removes_its_scratch_files(repo: Path, tmp_path: Path) -> None:
    app = compressible(tmp_path / "app", 5 * MiB)
    result = bhs("release", "build", repo, "--version", "1.0.0", "--artifact", app,
                 "--self-test", "false", expect=None)  # fmt: skip
    assert result.code != 0
    assert "sandbox false" in result.err and "failed after" in result.err
    assert leftovers(repo) == []
    assert not (repo / ".bhsync" / "drafts" / "1.0.0").exists()
    # a directory holding a link is refused while it is packed: nothing left either
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"a" * 1000)
    (tree / "link").symlink_to("a")
    bhs("release", "build", repo, "--version", "1.0.0", "--artifact", app, "--artifact", tree,
        expect=3)  # fmt: skip
    assert leftovers(repo) == []


def _wait_for_self_test(repo: Path, proc: subprocess.Popen[str]) -> None:
    """Until the build sits in its sandboxed self-test (its blobs in tmp/)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + scaled(240)
    for line in proc.stderr:  # the plain progress lines: wait for the sandbox step
        if "sandbox sh -c sleep 600" in line and line.rstrip().endswith("..."):
            break
        assert time.monotonic() < deadline, "the build never reached its self-test"
    else:
        raise AssertionError(f"the build ended early: {proc.wait()}")
    assert leftovers(repo), "a running build has files in tmp/"


def _slow_build(app: Path, repo: Path, version: str, marker: str) -> list[str]:
    return [BIN, "release", "build", str(repo), "--version", version, "--artifact", str(app),
            "--self-test", f"sh -c 'sleep 600; : {marker}'"]  # fmt: skip


def _marked(marker: str) -> list[int]:
    """Processes whose command line carries ``marker`` (the sandbox's launcher and the
    self-test of a build started by this test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def _kill_marked(marker: str) -> None:
    """SIGKILL, by pid, what this test started and a SIGKILLed build left running."""
    for pid in _marked(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _reap(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """The exit status and the rest of stderr (``spawn`` closes the pipes afterwards)."""
    assert proc.stderr is not None
    err = proc.stderr.read()
    return proc.wait(timeout=scaled(60)), err


def test_killed_build_leaves_files_the_next_build_removes(repo: Path, tmp_path: Path) -> None:
    app = compressible(tmp_path / "app", 5 * MiB)
    marker = f"bhs-killed-build-{uuid.uuid4().hex}"
    try:
        with spawn(_slow_build(app, repo, "1.0.0", marker), env=ENV) as proc:
            _wait_for_self_test(repo, proc)
            proc.kill()  # SIGKILL: nothing of the build's own runs
            _reap(proc)
    finally:
        _kill_marked(marker)
    left = leftovers(repo)
    assert left, "SIGKILL leaves the build's scratch files"
    # a later build, of anything, removes them first
    other = write_artifact(tmp_path / "other", 1000)
    bhs("release", "build", repo, "--version", "0.9.0", "--artifact", other)
    assert leftovers(repo) == []
    # and the killed version was never a draft: it builds now
    bhs("release", "build", repo, "--version", "1.0.0", "--artifact", app, "--no-sandbox")


def test_sigterm_interrupts_a_build_and_removes_its_scratch_files(
    repo: Path, tmp_path: Path
) -> None:
    app = compressible(tmp_path / "app", 5 * MiB)
    marker = f"bhs-terminated-build-{uuid.uuid4().hex}"
    try:
        with spawn(_slow_build(app, repo, "1.0.0", marker), env=ENV) as proc:
            _wait_for_self_test(repo, proc)
            proc.send_signal(signal.SIGTERM)
            code, err = _reap(proc)
        # an interrupted build stops its sandboxed self-test too
        time.sleep(0.5)
        assert _marked(marker) == []
    finally:
        _kill_marked(marker)
    assert code != 0
    assert err.strip().splitlines()[-1].startswith("blackhole-sync:")
    assert "Traceback" not in err
    assert leftovers(repo) == []
    assert not (repo / ".bhsync" / "drafts" / "1.0.0").exists()


def test_a_build_never_removes_the_files_of_one_still_running(repo: Path, tmp_path: Path) -> None:
    layout = RepoLayout.open(repo)
    with layout.scratch_session() as tmp:
        running = tmp / "build-of-another-process"
        running.mkdir()
        (running / "blob").write_bytes(b"in use")
        app = write_artifact(tmp_path / "app", 1000)
        bhs("release", "build", repo, "--version", "1.0.0", "--artifact", app)
        assert (running / "blob").read_bytes() == b"in use"
    # once that build is gone, its files are leftovers: the next build removes them
    bhs("release", "build", repo, "--version", "1.0.1", "--artifact", app)
    assert leftovers(repo) == []
