"""``python -m blackhole_sync_http REPO [--host H] [--port N]``: serve a repository directory.

Prints the URL once listening; stops gracefully on SIGINT or SIGTERM (exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import anyio

from .limits import ServerLimits
from .server import serve_repository


async def _run(root: Path, host: str, port: int, limits: ServerLimits) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serve_repository(root, host, port, limits=limits) as server:
            print(server.url, flush=True)
            async for _ in signals:
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m blackhole_sync_http", description="Serve a blackhole-sync repository."
    )
    parser.add_argument("repo", type=Path, help="repository directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=ServerLimits().max_concurrent_requests,
        help="requests served at once (more get 503)",
    )
    args = parser.parse_args(argv)
    if not args.repo.is_dir():
        print(f"error: not a repository directory: {args.repo}", file=sys.stderr)
        return 2
    limits = ServerLimits(max_concurrent_requests=args.max_concurrent)
    try:
        anyio.run(_run, args.repo, args.host, args.port, limits)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
