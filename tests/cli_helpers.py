"""Helpers for the command line tests: run ``blackhole-sync`` as a user does, in subprocesses.

Everything here drives the real command (the console script of the venv running the tests),
real files and the real HTTP server (``blackhole-sync serve --port 0``). Nothing imports the
CLI module: the tests see exactly what an operator sees.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attrs import frozen

_BIN = Path(sys.executable).parent / "blackhole-sync"
BIN = str(_BIN) if _BIN.exists() else (shutil.which("blackhole-sync") or "blackhole-sync")

#: Environment for every command: no debug, no inherited proxy that could reach the network.
ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("BLACKHOLE_SYNC_DEBUG",) and not k.lower().endswith("_proxy")
}
ENV["NO_PROXY"] = "127.0.0.1,localhost"


@frozen
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        """The one JSON object the command printed on stdout (and nothing else)."""
        obj = json.loads(self.out)
        assert isinstance(obj, dict), self.out
        assert self.out.strip().count("\n") == 0, f"more than one line on stdout: {self.out!r}"
        return obj

    def __str__(self) -> str:
        return f"$ blackhole-sync {' '.join(self.args)}\n-> {self.code}\n{self.out}{self.err}"


def bhs(*args: str | os.PathLike[str], expect: int | None = 0, timeout: float = 60) -> Result:
    """Run ``blackhole-sync ARGS``; check the exit status (``expect=None``: any) and stderr.

    Whatever the outcome, stderr never carries a traceback, and a failure is exactly one line.
    """
    argv = tuple(str(a) for a in args)
    proc = subprocess.run(
        [BIN, *argv],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, str(result)
    if expect is not None:
        assert proc.returncode == expect, str(result)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) >= 1, f"a failure without an error line\n{result}"
        assert lines[-1].startswith("blackhole-sync:"), str(result)
    return result


def bhs_json(*args: str | os.PathLike[str], expect: int = 0) -> dict[str, Any]:
    return bhs(*args, "--json", expect=expect).json()


# -- keys and repositories ----------------------------------------------------------------------


@frozen
class Keys:
    """Key files made with ``key generate``: 2-of-2 root, 2-of-3 release, one index key."""

    dir: Path
    ids: dict[str, str]

    def key(self, name: str) -> Path:
        return self.dir / name

    def pub(self, name: str) -> Path:
        return self.dir / f"{name}.pub"


KEY_NAMES = ("root1", "root2", "rel1", "rel2", "rel3", "index")


def make_keys(directory: Path, names: Sequence[str] = KEY_NAMES) -> Keys:
    directory.mkdir(parents=True, exist_ok=True)
    ids = {}
    for name in names:
        out = bhs("key", "generate", directory / name).out
        ids[name] = out.strip()
    return Keys(directory, ids)


def init_repo(repo: Path, keys: Keys, *extra: str) -> None:
    bhs(
        "repo", "init", repo,
        "--root-key", keys.pub("root1"), "--root-key", keys.pub("root2"),
        "--root-threshold", "2",
        "--release-key", keys.pub("rel1"), "--release-key", keys.pub("rel2"),
        "--release-key", keys.pub("rel3"),
        "--release-threshold", "2",
        "--index-key", keys.pub("index"),
        "--sign-with", keys.key("root1"), "--sign-with", keys.key("root2"),
        *extra,
    )  # fmt: skip


def release(
    repo: Path,
    keys: Keys,
    version: str,
    *artifacts: Path,
    build: Sequence[str] = (),
    signers: Sequence[str] = ("rel1", "rel2"),
    publish: bool = True,
) -> dict[str, Any]:
    """Build, sign (each holder separately) and publish a release through the command line."""
    args: list[str | os.PathLike[str]] = ["release", "build", repo, "--version", version]
    for artifact in artifacts:
        args += ["--artifact", artifact]
    built = bhs_json(*args, *build)
    for signer in signers:
        bhs("release", "sign", repo, "--version", version, "--key", keys.key(signer))
    if publish:
        bhs("release", "publish", repo, "--version", version, "--index-key", keys.key("index"))
    return built


def write_artifact(path: Path, size: int, *, seed: int = 1, mode: int = 0o755) -> Path:
    """A deterministic pseudo-random file of ``size`` bytes."""
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    path.chmod(mode)
    return path


def small_change(src: Path, dst: Path, *, at: int | None = None) -> Path:
    """A copy of ``src`` with a few bytes changed (what a patch release looks like)."""
    data = bytearray(src.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at : at + 16] = b"patched release!"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    dst.chmod(src.stat().st_mode & 0o7777)
    return dst


# -- the server -----------------------------------------------------------------------------------


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@contextmanager
def serve(repo: Path, *extra: str, command: Sequence[str] = ("serve",)) -> Iterator[Server]:
    """``blackhole-sync serve REPO --port 0`` (or another serving ``command``, such as
    ``node serve``); yields once it printed its URL; checks exit 0 on SIGTERM."""
    proc = subprocess.Popen(
        [BIN, *command, str(repo), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        stdin=subprocess.DEVNULL,
    )
    server: Server | None = None
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith(("http://127.0.0.1:", "https://127.0.0.1:")), (
            f"serve printed {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        )
        server = Server(proc, line)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read() if proc.stderr else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert "Traceback" not in err, err
    assert code == 0, f"serve exited {code} on SIGTERM: {err}"


# -- nodes ----------------------------------------------------------------------------------------


def init_node(
    node: Path, root: Path, *sources: str | os.PathLike[str], extra: Sequence[str] = ()
) -> dict[str, Any]:
    args: list[str | os.PathLike[str]] = ["node", "init", node, "--trust", root]
    for source in sources:
        args += ["--source", source]
    return bhs_json(*args, *extra)


def status(node: Path) -> dict[str, Any]:
    return bhs_json("node", "status", node)


def snapshot(node: Path) -> dict[str, Any]:
    """What must not change when a node refuses: versions/, current, trust/ and the status."""
    files: dict[str, Any] = {}
    for sub in ("versions", "trust"):
        base = node / sub
        for path in sorted(base.rglob("*")) if base.exists() else ():
            rel = str(path.relative_to(node))
            if path.is_symlink():
                files[rel] = ("link", os.readlink(path))
            elif path.is_file():
                files[rel] = ("file", path.stat().st_mode, path.read_bytes())
            else:
                files[rel] = ("dir", path.stat().st_mode)
    current = node / "current"
    files["current"] = os.readlink(current) if current.is_symlink() else None
    st = status(node)
    st.pop("metrics", None)  # the last attempt's metrics are allowed to change
    return {"files": files, "status": st}


def set_config(node: Path, section: str | None, **values: Any) -> None:
    """Edit NODE/config.toml as an operator would: change keys in place in one section."""
    path = node / "config.toml"
    lines = path.read_text().splitlines()
    current = None
    seen: set[str] = set()
    out: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if current == section:
                out.extend(_missing(values, seen))
            current = stripped.strip("[]").strip()
        elif current == section and "=" in stripped and not stripped.startswith("#"):
            name = stripped.split("=", 1)[0].strip()
            if name in values:
                out.append(f"{name} = {_toml(values[name])}")
                seen.add(name)
                continue
        out.append(line)
    if current == section:
        out.extend(_missing(values, seen))
    if section is not None and f"[{section}]" not in (s.strip() for s in lines):
        out.append(f"[{section}]")
        out.extend(_missing(values, seen))
    path.write_text("\n".join(out) + "\n")


def _missing(values: dict[str, Any], seen: set[str]) -> list[str]:
    missing = [f"{k} = {_toml(v)}" for k, v in values.items() if k not in seen]
    seen.update(values)
    return missing


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(step)
