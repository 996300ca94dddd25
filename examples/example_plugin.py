"""A third-party plugin, written the way an outside author would write one.

It adds a health check (the new version's tree must hold an executable ``blackhole-node``),
an update-event observer that appends JSON lines to a log, and a ``trace+file://``
transport that wraps the core's local-directory transport and logs every fetch. A real
distribution registers the module under the ``blackhole_sync`` entry-point group::

    [project.entry-points.blackhole_sync]
    example = "example_plugin"

Here the module registers itself on a plugin manager so the file runs on its own::

    python examples/example_plugin.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from blackhole_sync import (
    CAP_FETCH,
    CAP_RANGE,
    TRANSPORT_API,
    BaseTransport,
    LocalTransport,
    Locator,
    PrivateKey,
    Repository,
    Sink,
    TransportSpec,
    UpdateManager,
    hookimpl,
    init_node,
    make_plugin_manager,
    path_to_url,
)

EVENTS = Path(tempfile.gettempdir()) / f"example-plugin-events-{os.getpid()}.jsonl"


class ExecutableCheck:
    """Healthy when the installed tree holds an executable ``blackhole-node``."""

    name = "executable"

    async def check(self, node_dir: Path, version: str) -> str | None:
        binary = node_dir / "versions" / version / "blackhole-node"
        if not os.access(binary, os.X_OK):
            return f"{binary} is not executable"
        return None


class TraceTransport(BaseTransport):
    """``trace+file://...``: the local transport, wrapped to log every fetch (transports
    compose by wrapping)."""

    name = "trace"
    capabilities = frozenset({CAP_FETCH, CAP_RANGE})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._inner = LocalTransport()
        self.fetched: list[str] = []

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        inner = Locator.url(locator.value.removeprefix("trace+"))
        print(f"  trace: fetching {inner.value.rsplit('/', 2)[-2:]} (cap {max_length} bytes)")
        await self._inner.fetch(inner, sink, max_length=max_length, start=start)

    async def aclose(self) -> None:
        await self._inner.aclose()
        await super().aclose()


@hookimpl
def blackhole_sync_health_checks(node_dir: Path) -> Sequence[ExecutableCheck]:
    return [ExecutableCheck()]


@hookimpl
def blackhole_sync_update_event(event: Any) -> None:
    with EVENTS.open("a") as log:
        log.write(json.dumps({"kind": event.kind, "version": event.version}) + "\n")


@hookimpl
def blackhole_sync_transports() -> Sequence[TransportSpec]:
    return [
        TransportSpec(
            "trace",
            TraceTransport,
            api=TRANSPORT_API,
            backends={"asyncio", "trio"},
            schemes={"trace+file"},
        )
    ]


async def main(work: Path) -> None:
    root, index = PrivateKey.generate(), PrivateKey.generate()
    repo = Repository.init(
        work / "repo",
        root_keys=[root.public_key],
        root_threshold=1,
        release_keys=[root.public_key],
        release_threshold=1,
        index_key=index.public_key,
        sign_with=[root],
    )
    binary = work / "blackhole-node"
    binary.write_bytes(b"#!/bin/sh\necho hello\n")
    binary.chmod(0o755)
    repo.build_release("1.0.0", [binary])
    repo.sign_release("1.0.0", root)
    repo.publish_release("1.0.0", index)

    node = work / "node"
    source = "trace+" + path_to_url(work / "repo")
    init_node(node, root_bytes=(work / "repo" / "root.json").read_bytes(), sources=[source])

    plugins = make_plugin_manager()
    plugins.register(sys.modules[__name__], name="example")
    async with UpdateManager(node, plugins=plugins) as manager:
        result = await manager.update()
        assert result is not None
        print(f"installed {result.version} through the trace transport, health-checked")
    kinds = [json.loads(line)["kind"] for line in EVENTS.read_text().splitlines()]
    print("events seen by the plugin:", ", ".join(kinds))
    EVENTS.unlink()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, Path(tmp))
