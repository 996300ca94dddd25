"""``python -m blackhole_sync_http REPO [--host H] [--port N] [--tls-cert PEM --tls-key PEM
[--tls-client-ca PEM]]``: serve a repository directory (over HTTPS with ``--tls-cert``).

Prints the URL (``http://`` or ``https://``) once listening; stops gracefully on SIGINT or SIGTERM (exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
from pathlib import Path

import anyio

from .limits import ServerLimits
from .server import serve_repository, server_tls_context


async def _run(
    root: Path, host: str, port: int, limits: ServerLimits, tls: dict[str, Path | None]
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serve_repository(root, host, port, limits=limits, **tls) as server:
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
    parser.add_argument(
        "--max-per-client",
        type=int,
        default=ServerLimits().max_requests_per_client,
        help="requests served at once to one client address, or IPv6 /64 (more get 429); "
        "behind a reverse proxy, set it to --max-concurrent",
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)"
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert (if separate)"
    )
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="require client certificates issued by these CAs (mutual TLS)",
    )
    args = parser.parse_args(argv)
    if not args.repo.is_dir():
        print(f"error: not a repository directory: {args.repo}", file=sys.stderr)
        return 2
    if args.tls_cert is None and (args.tls_key is not None or args.tls_client_ca is not None):
        print("error: --tls-key and --tls-client-ca need --tls-cert", file=sys.stderr)
        return 2
    tls = {"tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_client_ca": args.tls_client_ca}
    if args.tls_cert is not None:
        try:  # refuse bad TLS files before binding, with the file's name
            server_tls_context(args.tls_cert, args.tls_key, tls_client_ca=args.tls_client_ca)
        except (ValueError, OSError, ssl.SSLError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        limits = ServerLimits(
            max_concurrent_requests=args.max_concurrent,
            max_requests_per_client=args.max_per_client,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        anyio.run(_run, args.repo, args.host, args.port, limits, tls)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
