"""Helpers for the command line tests: run ``blackhole-sync`` as a user does, in subprocesses.

Everything here drives the real command (the console script of the venv running the tests),
real files and the real HTTP server (``blackhole-sync serve --port 0``). Nothing imports the
CLI module: the tests see exactly what an operator sees.
"""

from __future__ import annotations

import functools
import json
import os
import re
import select
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

from blackhole_sync.testing import kill_group, run, scaled, stop

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


def bhs(*args: str | os.PathLike[str], expect: int | None = 0, timeout: float = 120) -> Result:
    """Run ``blackhole-sync ARGS``; check the exit status (``expect=None``: any) and stderr.

    Whatever the outcome, stderr never carries a traceback, and a failure is exactly one line.
    With ``--json``, stdout is one object whose keys are the ones docs/cli.rst documents for
    the command (or the error object). ``timeout`` (scaled by
    ``BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE``) only stops a hang.
    """
    argv = tuple(str(a) for a in args)
    proc = run([BIN, *argv], env=ENV, timeout=timeout)
    result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, str(result)
    if expect is not None:
        assert proc.returncode == expect, str(result)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) >= 1, f"a failure without an error line\n{result}"
        assert lines[-1].startswith("blackhole-sync:"), str(result)
    if "--json" in argv and "--help" not in argv and proc.stdout:
        check_documented_json(argv, result)
    return result


# -- the documented contract (docs/cli.rst) -------------------------------------------------------

CLI_DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.rst"


@frozen
class DocumentedCommand:
    """One command's section of docs/cli.rst."""

    words: tuple[str, ...]
    text: str
    #: ``--flags`` the section names
    flags: frozenset[str]
    #: the ``:JSON keys:`` field; None when the command has no --json output
    json_keys: frozenset[str] | None
    #: ``:History entry keys:`` and the like: each entry of a listed array
    entry_keys: frozenset[str] | None


def _field(section: str, name: str) -> str | None:
    """The text of the RST field ``:name:`` (with its indented continuation lines)."""
    match = re.search(rf"^:{re.escape(name)}:(.*(?:\n[ \t]+.*)*)", section, re.MULTILINE)
    return None if match is None else match.group(1)


@functools.cache
def documented_commands() -> dict[tuple[str, ...], DocumentedCommand]:
    """Every command section of docs/cli.rst (titles underlined with ``~``)."""
    text = CLI_DOC.read_text(encoding="utf-8")
    titles = list(re.finditer(r"^([a-z][a-z -]*)\n~+\n", text, re.MULTILINE))
    out: dict[tuple[str, ...], DocumentedCommand] = {}
    for i, match in enumerate(titles):
        end = titles[i + 1].start() if i + 1 < len(titles) else len(text)
        section = text[match.end() : end]
        # the section ends at the next group heading (a title underlined with "-")
        group = re.search(r"^\S.*\n-{3,}\n", section, re.MULTILINE)
        if group is not None:
            section = section[: group.start()]
        words = tuple(match.group(1).split())
        keys = _field(section, "JSON keys")
        json_keys = None
        if keys is not None and not keys.strip().startswith("none"):
            # only the top-level keys: "(each: ...)" describes the entries of a list
            json_keys = frozenset(
                re.findall(r"``(\w+)``", re.sub(r"\(.*?\)", "", keys, flags=re.S))
            )
        entry = _field(section, "History entry keys")
        out[words] = DocumentedCommand(
            words,
            section,
            frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", section)),
            json_keys,
            None if entry is None else frozenset(re.findall(r"``(\w+)``", entry)),
        )
    return out


def documented_error_keys() -> frozenset[str]:
    text = CLI_DOC.read_text(encoding="utf-8")
    field = _field(text, "Error keys")
    assert field is not None, "docs/cli.rst lacks the ':Error keys:' field"
    return frozenset(re.findall(r"``(\w+)``", field))


def command_of(argv: Sequence[str]) -> tuple[str, ...]:
    """The command words at the start of ``argv`` (``("node", "status")``)."""
    commands = documented_commands()
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in commands:
            return words
    raise AssertionError(f"{' '.join(argv[:2])}: not a command documented in docs/cli.rst")


def check_documented_json(argv: Sequence[str], result: Result) -> None:
    """The one JSON object ``--json`` printed has the documented keys (or is the error)."""
    obj = result.json()
    if result.code != 0 and set(obj) == {"error"}:
        assert set(obj["error"]) == documented_error_keys(), str(result)
        assert obj["error"]["exit"] == result.code, str(result)
        return
    doc = documented_commands()[command_of(argv)]
    assert doc.json_keys is not None, f"docs/cli.rst: {' '.join(doc.words)} has no JSON keys"
    extra, missing = set(obj) - doc.json_keys, doc.json_keys - set(obj)
    assert not extra and not missing, (
        f"{' '.join(doc.words)} --json: keys differ from docs/cli.rst (one documented key set "
        f"whatever the outcome): undocumented {sorted(extra)}, absent {sorted(missing)}\n{result}"
    )
    if doc.entry_keys is not None:
        for name, value in obj.items():
            for entry in value if isinstance(value, list) else ():
                assert set(entry) == doc.entry_keys, (
                    f"{' '.join(doc.words)} --json: an entry of {name!r} has keys "
                    f"{sorted(entry)}, docs/cli.rst says {sorted(doc.entry_keys)}"
                )


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


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line ``proc`` prints on stdout, or "" if it prints none within ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def _terminate(proc: subprocess.Popen[str]) -> tuple[int | None, str]:
    """SIGTERM, the exit status (None: it had to be killed) and what it wrote on stderr;
    afterwards nothing of it runs and its pipes are closed."""
    if proc.returncode is not None and (proc.stderr is None or proc.stderr.closed):
        return proc.returncode, ""  # already terminated
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    code: int | None
    try:
        code = proc.wait(timeout=scaled(15))
    except subprocess.TimeoutExpired:
        kill_group(proc)
        code = None
    try:
        _, err = proc.communicate(timeout=scaled(10))
    except subprocess.TimeoutExpired:  # a child of it still holds the pipes
        kill_group(proc)
        err = ""
    finally:
        stop(proc)  # the rest of its process group, and every pipe closed
    return code, err or ""


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed after a scaled grace period: an error)."""
        code, err = _terminate(self.proc)
        assert code is not None, f"the server ignored SIGTERM: {err}"
        return code


@contextmanager
def serve(repo: Path, *extra: str, command: Sequence[str] = ("serve",)) -> Iterator[Server]:
    """``blackhole-sync serve REPO --port 0`` (or another serving ``command``, such as
    ``node serve``); yields once it printed its URL; checks exit 0 on SIGTERM. The server is
    stopped and its pipes closed whatever happens."""
    proc = subprocess.Popen(
        [BIN, *command, str(repo), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        line = _first_line(proc, scaled(60))
        if not line.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
            code, err = _terminate(proc)
            raise AssertionError(f"serve printed {line!r} and exited {code}; stderr: {err}")
        yield Server(proc, line)
    finally:
        code, err = _terminate(proc)
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
    # the last attempt's metrics, and when the last check ran, are allowed to change
    st.pop("metrics", None)
    st.pop("last_check", None)
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
    """Poll ``predicate`` until true; ``timeout`` (scaled) only stops a hang."""
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(step)


# -- what a command imports (tests/test_cli_imports.py, tests/test_startup.py) ----------

_PROBE = """
import json, sys
from blackhole_sync.cli.main import build_parser, main
if sys.argv[2:]:
    code = main(sys.argv[2:])
else:
    build_parser()
    code = 0
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def loaded_by(tmp_path: Path, *argv: str) -> set[str]:
    """The modules loaded by running ``blackhole-sync ARGV`` (just the parser when empty)."""
    report = tmp_path / "modules.json"
    proc = run([sys.executable, "-c", _PROBE, str(report), *argv], timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(report.read_text())
    assert result["code"] == 0, proc.stderr
    return set(result["modules"])
