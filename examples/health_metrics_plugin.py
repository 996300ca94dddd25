"""A custom health check and metrics plugin: a bad build is rolled back, a slow one too.

The node's service here is a small Python program shipped in every release
(``service.py``): ``service.py probe`` answers ``ok`` when it works, ``service.py metrics``
prints its request latency as JSON. The plugin teaches the node to use both:

* ``blackhole_sync_health_checks`` -- after each switch the new version is probed; a failed
  probe rolls the node back at once (the install raises ``HealthCheckError``);
* ``blackhole_sync_metrics`` -- the running version's metrics. Before a switch the manager
  samples the version it leaves (its *baseline*); after the switch it samples the new one for
  ``[regression] watch_seconds``, and a metric past its ``[regression.thresholds]`` threshold
  (``latency_ms = 5000``: more than 50 % slower) rolls back too, and marks the version bad;
* ``blackhole_sync_update_event`` -- an observer of what happened (a log, a dashboard).

A real plugin is a distribution registering this module under the ``blackhole_sync``
entry-point group, so ``node run`` and every command load it::

    [project.entry-points.blackhole_sync]
    service-health = "health_metrics_plugin"

Here it is registered on the manager's plugin manager, so the file runs on its own::

    python examples/health_metrics_plugin.py [WORKDIR] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from blackhole_sync import (
    HealthCheckError,
    PrivateKey,
    Repository,
    UpdateManager,
    hookimpl,
    init_node,
    make_plugin_manager,
)

SERVICE = """\
import json, sys
VERSION, WORKS, LATENCY_MS = {version!r}, {works!r}, {latency!r}
if sys.argv[1] == "probe":
    print("ok" if WORKS else "error: cannot open the ledger")
elif sys.argv[1] == "metrics":
    print(json.dumps({{"latency_ms": LATENCY_MS}}))
"""


def service_of(node_dir: Path, version: str) -> Path:
    return node_dir / "versions" / version / "service.py"


class ProbeCheck:
    """Healthy when the installed version's ``service.py probe`` answers ``ok``."""

    name = "service-probe"

    async def check(self, node_dir: Path, version: str) -> str | None:
        result = await anyio.run_process(
            [sys.executable, str(service_of(node_dir, version)), "probe"], check=False
        )
        answer = result.stdout.decode().strip()
        return None if result.returncode == 0 and answer == "ok" else f"probe said {answer!r}"


class ServicePlugin:
    def __init__(self) -> None:
        self.events: list[tuple[str, str | None]] = []

    @hookimpl
    def blackhole_sync_health_checks(self, node_dir: Path) -> Sequence[ProbeCheck]:
        return [ProbeCheck()]

    @hookimpl
    def blackhole_sync_metrics(self, node_dir: Path, version: str) -> Mapping[str, float] | None:
        service = service_of(node_dir, version)
        if not service.exists():
            return None
        out = subprocess.run(
            [sys.executable, str(service), "metrics"], capture_output=True, check=True, timeout=30
        ).stdout
        return {"latency_ms": float(json.loads(out)["latency_ms"])}

    @hookimpl
    def blackhole_sync_update_event(self, event: Any) -> None:
        if event.kind in {"installed", "failed", "rolled-back", "regression"}:
            self.events.append((event.kind, event.version))


def configure(node: Path) -> None:
    """Regression detection: a 2-sample baseline, a 2-second watch, latency up to +50 %."""
    path = node / "config.toml"
    text = path.read_text()
    for old, new in [
        ("samples = 5", "samples = 2"),
        ("watch_seconds = 60", "watch_seconds = 2"),
        ("interval = 10", "interval = 1"),
        ("# latency_ms = 5000", "latency_ms = 5000"),
    ]:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)


async def main(work: Path) -> None:
    key = PrivateKey.generate()
    repo = Repository.init(
        work / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key.public_key,
        sign_with=[key],
    )  # fmt: skip

    def release(version: str, *, works: bool = True, latency: float = 10.0) -> None:
        src = work / "src" / version / "service.py"
        src.parent.mkdir(parents=True)
        src.write_text(SERVICE.format(version=version, works=works, latency=latency))
        repo.build_release(version, [src])
        repo.sign_release(version, key)
        repo.publish_release(version, key)

    node = work / "node"
    init_node(node, root_bytes=repo.root_bytes(), sources=[str(repo.path)])
    configure(node)
    plugin = ServicePlugin()
    plugins = make_plugin_manager()
    plugins.register(plugin, name="service-health")

    async def install(version: str) -> str:
        async with UpdateManager(node, plugins=plugins) as manager:
            try:
                result = await manager.update(version)
                assert result is not None
                outcome = f"installed {result.version}"
            except HealthCheckError as exc:
                outcome = f"{version} failed: {exc}"
            return f"{outcome} -> running {manager.store.current_version()}"

    release("1.0.0", latency=10.0)
    print(await install("1.0.0"))
    release("1.1.0", latency=11.0)  # healthy, as fast: kept
    print(await install("1.1.0"))
    release("1.2.0", works=False)  # the probe fails: rolled back at once
    print(await install("1.2.0"))
    release("1.3.0", latency=40.0)  # healthy but four times slower: a regression
    print(await install("1.3.0"))
    print("events:", ", ".join(f"{kind} {version}" for kind, version in plugin.events))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", nargs="?", type=Path, help="default: a temporary directory")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        anyio.run(main, args.workdir, backend=args.backend)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(main, Path(tmp), backend=args.backend)
