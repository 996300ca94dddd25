"""Every example runs for real, as a user runs them (the demo has tests/test_demo.py): real
repositories built with the command line, real node directories, each example in a process of
its own. The
assertions check what the example claims to show (which version runs where, how it got
there), also by asking the nodes afterwards with ``blackhole-sync node status``."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from cli_helpers import ENV, bhs

from blackhole_sync.testing import run as run_process, scaled, spawn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLUGIN = EXAMPLES / "transport_plugin"


def run(
    *argv: str, timeout: float = 180, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run an example; ``timeout`` (scaled) only stops a hang, the process group with it."""
    return run_process(argv, timeout=timeout, cwd=cwd, env=env)


def example(name: str, *args: str | Path, timeout: float = 180) -> list[str]:
    """Run ``examples/NAME ARGS``; its stdout lines (it must exit 0)."""
    result = run(sys.executable, str(EXAMPLES / name), *map(str, args), timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


class Repo:
    """A repository made and fed with the command line, one key for every role."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.path = tmp / "repo"
        self.key = tmp / "keys" / "k"
        self.key.parent.mkdir()
        bhs("key", "generate", self.key)
        pub = f"{self.key}.pub"
        bhs("repo", "init", self.path, "--root-key", pub, "--root-threshold", "1",
            "--release-key", pub, "--release-threshold", "1", "--index-key", pub,
            "--sign-with", self.key)  # fmt: skip
        self.payload = os.urandom(150_000)

    def publish(self, version: str, *extra: str) -> None:
        artifact = self.tmp / "build" / version / "service.bin"
        artifact.parent.mkdir(parents=True)
        artifact.write_bytes(version.encode() + b"\n" + self.payload)
        bhs("release", "build", self.path, "--version", version, "--artifact", artifact, *extra)
        bhs("release", "sign", self.path, "--version", version, "--key", self.key)
        bhs("release", "publish", self.path, "--version", version, "--index-key", self.key)

    def node(self, name: str, source: str | None = None) -> Path:
        node = self.tmp / name
        bhs("node", "init", node, "--trust", self.path / "root.json",
            "--source", source or str(self.path))  # fmt: skip
        return node


def status(node: Path) -> dict[str, object]:
    return bhs("node", "status", node, "--json").json()


def read_until(proc: subprocess.Popen[bytes], wanted: str, seen: list[str], timeout: float) -> None:
    """Read ``proc``'s stdout lines into ``seen`` until one starts with ``wanted``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + scaled(timeout)
    buffer = b""
    while not any(line.startswith(wanted) for line in seen):
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no {wanted!r} line; got {seen}"
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            seen.extend(line.decode() for line in lines)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_release_end_to_end_example_installs_full_then_delta(backend: str) -> None:
    result = run(sys.executable, str(EXAMPLES / "release_end_to_end.py"), backend)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    full = next(line for line in lines if line.startswith("installed 1.0.0"))
    assert "(full, " in full  # the 1 MiB artifact travels zstd-compressed
    assert int(full.split(", ")[1].split()[0]) < 1048597
    delta = next(line for line in lines if line.startswith("installed 1.1.0"))
    assert "(delta, " in delta
    assert int(delta.split(", ")[1].split()[0]) < 10_000
    assert lines[-1] == "current: 1.1.0 installed: ['1.0.0', '1.1.0']"


def test_example_plugin_transport_health_check_and_observer_are_used() -> None:
    result = run(sys.executable, str(EXAMPLES / "example_plugin.py"))
    assert result.returncode == 0, result.stderr
    assert "trace: fetching ['blobs'," in result.stdout
    assert "installed 1.0.0 through the trace transport, health-checked" in result.stdout
    assert "events seen by the plugin: checking, checked, downloading" in result.stdout


def test_every_example_is_tested() -> None:
    tested = {
        "release_end_to_end.py",
        "example_plugin.py",
        "async_node.py",
        "blocking_portal.py",
        "health_metrics_plugin.py",
        "network_of_nodes.py",
        "release_pipeline.py",
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested
    assert {p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "transport_plugin"
    }


# -- an async node process (asyncio and trio) --------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_node_keeps_serving_while_it_updates_itself(tmp_path: Path, backend: str) -> None:
    repo = Repo(tmp_path)
    repo.publish("1.0.0")
    node = repo.node("node")
    argv = [sys.executable, str(EXAMPLES / "async_node.py"), str(node), "--backend", backend,
            "--interval", "0.3", "--until", "1.1.0", "--timeout", str(scaled(150))]  # fmt: skip
    seen: list[str] = []
    with spawn(argv, cwd=ROOT, text=False) as proc:
        read_until(proc, "updater: installed 1.0.0", seen, 120)
        repo.publish("1.1.0")  # published while the process runs: its next check finds it
        assert proc.wait(timeout=scaled(150)) == 0
        assert proc.stdout is not None
        seen.extend(proc.stdout.read().decode().splitlines())
    assert seen[0] == "service: running 1.0.0", seen  # reloaded by the restart hook, in place
    assert "service: running 1.1.0" in seen
    installed = next(line for line in seen if line.startswith("updater: installed 1.1.0"))
    assert "(delta, " in installed  # a small change travels as a patch
    during = [int(line.split()[1]) for line in seen if line.endswith("served during the update")]
    assert len(during) == 2 and during[-1] > 0, seen  # the service ran while 1.1.0 installed
    assert seen[-1].endswith("ran 1.0.0 -> 1.1.0"), seen
    assert status(node)["current_version"] == "1.1.0"


# -- a synchronous program through anyio's blocking portal ---------------------------------------


def test_blocking_portal_drives_updates_rollbacks_and_refusals_from_sync_code(
    tmp_path: Path,
) -> None:
    repo = Repo(tmp_path)
    repo.publish("1.0.0")
    repo.publish("1.1.0")
    node = repo.node("node")
    portal = EXAMPLES / "blocking_portal.py"

    def sync(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = run(sys.executable, str(portal), str(node), *args)
        assert result.returncode == expect, result.stdout + result.stderr
        return result

    out = sync("update", "--version", "1.0.0").stdout.splitlines()
    assert out[0] == "available: 1.1.0, 1.0.0"
    assert out[-1] == "current: 1.0.0 installed: ['1.0.0']"
    out = sync("update", "--backend", "trio").stdout.splitlines()
    assert out[1].startswith("installed 1.1.0 (delta, ")
    out = sync("rollback").stdout.splitlines()
    assert out == ["rolled back to 1.0.0", "current: 1.0.0 installed: ['1.0.0', '1.1.0']"]
    assert status(node)["current_version"] == "1.0.0"

    # a tampered blob: the typed SecurityError crosses the portal, nothing is installed
    before = set(os.listdir(repo.path / "blobs"))
    repo.publish("1.2.0", "--delta-from", "none")
    for name in set(os.listdir(repo.path / "blobs")) - before:
        blob = repo.path / "blobs" / name
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    result = sync("update", "--version", "1.2.0", "--backend", "trio", expect=3)
    assert result.stderr.startswith("refused: "), result.stderr
    assert status(node)["current_version"] == "1.0.0"


# -- a custom health check and metrics plugin ----------------------------------------------------


def test_health_and_metrics_plugin_rolls_back_a_broken_and_a_slow_release(tmp_path: Path) -> None:
    lines = example("health_metrics_plugin.py", tmp_path, "--backend", "trio")
    assert lines[:2] == ["installed 1.0.0 -> running 1.0.0", "installed 1.1.0 -> running 1.1.0"]
    assert lines[2].startswith("1.2.0 failed: version 1.2.0 unhealthy: service-probe: probe said")
    assert lines[2].endswith("-> running 1.1.0")
    assert lines[3].startswith("1.3.0 failed: regression after the switch to 1.3.0: latency_ms:")
    assert lines[3].endswith("rolled back to 1.1.0 -> running 1.1.0")
    assert lines[4] == (
        "events: installed 1.0.0, installed 1.1.0, failed 1.2.0, installed 1.3.0, "
        "regression 1.3.0, rolled-back 1.1.0"
    )
    node = tmp_path / "node"
    shown = status(node)
    assert shown["current_version"] == "1.1.0"
    assert shown["bad_versions"] == ["1.2.0", "1.3.0"]  # neither is installed again by itself
    history = bhs("node", "history", node, "--json").json()["history"]
    steps = [(h["action"], h["from_version"], h["to_version"]) for h in history]
    assert steps == [
        ("install", None, "1.0.0"),
        ("install", "1.0.0", "1.1.0"),
        ("failed", "1.1.0", "1.2.0"),
        ("install", "1.1.0", "1.3.0"),
        ("rollback", "1.3.0", "1.1.0"),
    ]


# -- a network of nodes driven from Python -------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_network_of_nodes_rolls_out_in_phases_and_halts(tmp_path: Path, backend: str) -> None:
    lines = example("network_of_nodes.py", tmp_path, "--backend", backend, timeout=300)
    assert lines[-1] == "done: 6 nodes on 1.1.0, 1.2.0 halted and rolled back on 2"
    canary_line = next(line for line in lines if line.startswith("1.1.0 rollout:"))
    canaries = set(json.loads(canary_line.split("canary phase: ")[1].replace("'", '"')))
    assert len(canaries) == 2
    section = lines[lines.index("-- 1.1.0, canary phase") + 1 : lines.index("-- 1.1.0, everyone")]
    moved = {line.split(":")[0].strip() for line in section if "1.0.0 -> 1.1.0" in line}
    assert moved == canaries  # only the canaries installed in the first phase
    assert "   network view: 1.0.0: 4, 1.1.0: 2" in section
    nodes = [tmp_path / f"node{i}" for i in range(6)]
    assert all(status(n)["current_version"] == "1.1.0" for n in nodes)
    # 1.2.0 reached only its canaries (installed, then rolled back after the halt)
    had_it = {n.name for n in nodes if "1.2.0" in status(n)["installed_versions"]}  # type: ignore[operator]
    assert len(had_it) == 2


# -- a release pipeline with separate signers ----------------------------------------------------


def test_release_pipeline_with_separate_signers_publishes_what_a_node_installs(
    tmp_path: Path,
) -> None:
    work = tmp_path / "pipeline"
    artifact = tmp_path / "build" / "blackhole-node"
    artifact.parent.mkdir()
    payload = os.urandom(120_000)
    artifact.write_bytes(b"1.0.0\n" + payload)
    first = example("release_pipeline.py", work, "--version", "1.0.0", "--artifact", artifact,
                    timeout=600)  # fmt: skip
    assert "   root version 1 published" in first
    assert "   mallory (no release key) cannot sign it: exit 3" in first
    assert "   published 1.0.0 (published), signed by 2 of the release keys (threshold 2)" in first
    artifact.write_bytes(b"1.1.0\n" + payload)
    second = example("release_pipeline.py", work, "--version", "1.1.0", "--artifact", artifact,
                     timeout=600)  # fmt: skip
    assert not any(line.startswith("== keys") for line in second)  # set up once
    assert "   published 1.1.0 (published), signed by 2 of the release keys (threshold 2)" in second

    repo = work / "repo"
    root = json.loads((repo / "root.json").read_text())
    assert len({s["keyid"] for s in root["signatures"]}) == 2  # alice and bob, apart
    keys = work / "machines"
    assert sorted(p.name for p in keys.iterdir()) == [
        "alice", "bob", "carol", "ci-index", "dave", "erin", "mallory"
    ]  # fmt: skip
    for holder in keys.iterdir():  # each private key on its own machine only, 0600
        private = [p for p in (holder / "keys").iterdir() if p.suffix != ".pub"]
        assert [p.name for p in private] == [holder.name]
        assert private[0].stat().st_mode & 0o077 == 0
    node = tmp_path / "node"
    bhs("node", "init", node, "--trust", repo / "root.json", "--source", repo)
    update = bhs("node", "update", node, "--json").json()
    assert update["version"] == "1.1.0"
    installed = node / "current" / "blackhole-node"
    assert installed.read_bytes() == b"1.1.0\n" + payload


# -- a third-party transport plugin in its own folder --------------------------------------------


def test_transport_plugin_passes_the_conformance_kit_in_its_own_test_suite() -> None:
    env = {**ENV, "PYTHONPATH": str(PLUGIN)}
    result = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 timeout=300, env=env, cwd=PLUGIN)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout  # the conformance kit, under asyncio and trio


def installed_like_pip(tmp: Path) -> dict[str, str]:
    """The plugin as an installed distribution: its package on the path and a dist-info with
    the entry points its own pyproject.toml declares (what ``pip install`` writes)."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    site = tmp / "site"
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    points = project["entry-points"]["blackhole_sync"]
    (info / "entry_points.txt").write_text(
        "[blackhole_sync]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
    )
    return {**ENV, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN)])}


def test_transport_plugin_installed_serves_a_node_from_a_spool_directory(tmp_path: Path) -> None:
    env = installed_like_pip(tmp_path)
    exe = shutil.which("blackhole-sync", path=str(Path(sys.executable).parent))
    assert exe is not None
    listed = json.loads(run(exe, "plugins", "list", "--json", env=env).stdout)
    assert {"distribution": "blackhole-sync-spool", "module": "bhs_spool.plugin",
            "name": "spool"} in listed["plugins"] and not listed["failed"]  # fmt: skip
    [spec] = [t for t in listed["transports"] if t["name"] == "spool"]
    assert spec["schemes"] == ["spool"] and spec["backends"] == ["asyncio", "trio"]

    repo = Repo(tmp_path)
    repo.publish("1.0.0")
    spool = tmp_path / "spool"
    shutil.copytree(repo.path, spool / "repo")  # carried to the site on a stick
    node = tmp_path / "node"
    source = "spool://" + (spool / "repo").as_uri().removeprefix("file://")
    init = run(exe, "node", "init", node, "--trust", str(spool / "repo" / "root.json"),
               "--source", source, env=env)  # fmt: skip
    assert init.returncode == 0, init.stderr
    update = run(exe, "node", "update", str(node), "--json", env=env)
    assert update.returncode == 0, update.stdout + update.stderr
    assert json.loads(update.stdout)["version"] == "1.0.0"
    shown = json.loads(run(exe, "node", "status", str(node), "--json", env=env).stdout)
    by_source = shown["metrics"]["download"]["bytes_by_source"]
    assert list(by_source) == [source + "/"], by_source  # every byte came through the plugin
    # without the plugin the scheme is refused, naming what to install
    other = tmp_path / "other"
    refused = run(exe, "node", "init", str(other), "--trust", str(spool / "repo" / "root.json"),
                  "--source", source)  # fmt: skip
    assert refused.returncode == 2 and "no transport plugin handles 'spool'" in refused.stderr

