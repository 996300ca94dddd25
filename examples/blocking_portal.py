"""Use the async library from synchronous code, through anyio's blocking portal.

A synchronous program (a management script, a Django view, a test helper) cannot ``await``.
``anyio.from_thread.start_blocking_portal`` runs an event loop in a thread beside it; the
program calls coroutines through the portal and gets their results (or their exceptions)
back, and enters the manager -- an async context manager -- with
``portal.wrap_async_context_manager``. Everything still runs on the one event loop the portal
owns, so the manager's own threads and locks behave exactly as in an async program.

    python examples/blocking_portal.py NODE update      [--backend asyncio|trio] [--version V]
    python examples/blocking_portal.py NODE status
    python examples/blocking_portal.py NODE rollback

Exit status: 0 done (also "up to date"), 1 a failure (printed), 3 refused for a security reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anyio.from_thread import start_blocking_portal

from blackhole_sync import BlackholeSyncError, SecurityError, UpdateManager


def run(node: Path, command: str, backend: str, version: str | None) -> int:
    with start_blocking_portal(backend=backend) as portal:
        with portal.wrap_async_context_manager(UpdateManager(node)) as manager:
            if command == "update":
                updates = portal.call(manager.check_for_updates)
                print("available:", ", ".join(u.version for u in updates) or "none")
                chosen = [u for u in updates if version in (None, u.version)]
                if not chosen:
                    print("up to date" if version is None else f"{version} is not available")
                    return 0 if version is None else 1
                package = portal.call(manager.download_update, chosen[0])
                portal.call(manager.verify_update, package)  # True, or raises SecurityError
                result = portal.call(manager.apply_update, package)
                print(f"installed {result.version} ({result.method}, "
                      f"{result.bytes_fetched} bytes)")  # fmt: skip
            elif command == "rollback":
                print("rolled back to", portal.call(manager.rollback))
            # synchronous methods too run on the portal's loop, where the manager lives
            status = portal.call(manager.get_update_status)
            print(f"current: {status.current_version} "
                  f"installed: {list(status.installed_versions)}")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("node", type=Path, help="the node directory (node init)")
    parser.add_argument("command", choices=["status", "update", "rollback"])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--version", help="update: install this version")
    args = parser.parse_args()
    try:
        return run(args.node, args.command, args.backend, args.version)
    except SecurityError as exc:  # exceptions cross the portal unchanged
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except BlackholeSyncError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
