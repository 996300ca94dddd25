"""Embed the update manager in an async node process (asyncio or trio, through anyio).

A node process has work of its own -- here a toy service that answers "requests" with the
version it runs -- and keeps itself up to date in a task beside it. The library never starts
an event loop of its own: the process owns the loop, ``UpdateManager`` runs in it, and the
service keeps serving while a release downloads, verifies and installs. After the switch the
manager asks its ``blackhole_sync_restart_service`` hook to restart the service: this process
implements the hook itself and reloads in place (no restart command, no downtime).

The node directory is made beforehand (``blackhole-sync node init NODE --trust root.json
--source URL``); any source works (``http://`` needs the HTTP plugin and asyncio).

    python examples/async_node.py NODE [--backend asyncio|trio] [--interval SECONDS]
                                  [--until VERSION] [--timeout SECONDS]

Without ``--until`` it runs until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

from blackhole_sync import BlackholeSyncError, UpdateManager, hookimpl, make_plugin_manager


class Service:
    """The node's own work: it serves with the files of the version ``NODE/current`` runs."""

    def __init__(self, node: Path) -> None:
        self.node = node
        self.version: str | None = None
        self.served = 0
        self.reloads: list[str] = []

    def load(self, version: str | None) -> None:
        self.version = version
        if version is not None:
            self.reloads.append(version)
            print(f"service: running {version}", flush=True)

    async def serve(self) -> None:
        while True:
            if self.version is not None:
                self.served += 1  # a request answered by the running version
            await anyio.sleep(0.01)

    # the manager calls this after switching NODE/current, before its health checks
    @hookimpl
    def blackhole_sync_restart_service(self, node_dir: Path, version: str) -> bool:
        self.load(version)  # reload in place: the process keeps running
        return True


async def update_once(node: Path, plugins: Any) -> str | None:
    """One check; install what it found. The manager holds the node's lock only while open,
    so operator commands (``node status``, ``node confirm``) get in between checks."""
    async with UpdateManager(node, plugins=plugins) as manager:
        updates = await manager.check_for_updates()
        if not updates:
            return None
        package = await manager.download_update(updates[0])
        await manager.verify_update(package)  # True, or raises a typed SecurityError
        result = await manager.apply_update(package)
        print(
            f"updater: installed {result.version} ({result.method}, {result.bytes_fetched} bytes)",
            flush=True,
        )
        return result.version


async def updater(node: Path, plugins: Any, service: Service, interval: float,
                  until: str | None) -> None:  # fmt: skip
    while True:
        served = service.served
        try:
            installed = await update_once(node, plugins)
        except BlackholeSyncError as exc:  # a failed check or install leaves the node as it was
            print(f"updater: {type(exc).__name__}: {exc}", flush=True)
        else:
            if installed is not None:  # the service never stopped while it installed
                print(f"updater: {service.served - served} requests served during the update",
                      flush=True)  # fmt: skip
        if until is not None and service.version == until:
            return
        await anyio.sleep(interval)


async def main(node: Path, interval: float, until: str | None, give_up: float | None) -> int:
    service = Service(node)
    current = node / "current"
    service.load(current.resolve().name if current.is_symlink() else None)
    plugins = make_plugin_manager(load_entrypoints=True)  # installed transports (http...)
    plugins.register(service, name="host")  # the process's own hooks

    with anyio.move_on_after(give_up) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(service.serve)
            await updater(node, plugins, service, interval, until)
            tg.cancel_scope.cancel()
    if scope.cancelled_caught:
        print(f"gave up after {give_up} s on {service.version}", file=sys.stderr)
        return 1
    print(f"service: {service.served} requests served; ran {' -> '.join(service.reloads)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("node", type=Path, help="the node directory (node init)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between checks")
    parser.add_argument("--until", metavar="VERSION", help="stop once this version runs")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.node, args.interval, args.until, args.timeout,
                       backend=args.backend))  # fmt: skip
