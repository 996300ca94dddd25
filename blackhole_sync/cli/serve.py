"""``blackhole-sync serve REPO``: the HTTP origin of a repository (through the HTTP plugin)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, MissingPluginError
from .common import EXIT_OK, port_number

__all__ = ["add_parsers", "add_server_flags", "cmd_serve", "serve_directory"]


def add_server_flags(p: argparse.ArgumentParser) -> None:
    """``--host``, ``--port`` and the TLS flags of every command that serves files."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8080, help="0 picks a free port")
    p.add_argument("--tls-cert", metavar="PEM", help="serve https with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--tls-client-ca", metavar="PEM", help="require client certificates from this CA"
    )


def serve_directory(directory: Path, args: argparse.Namespace) -> int:
    """Serve ``directory`` as a repository until SIGTERM or SIGINT (exit 0); print the URL."""
    import anyio

    from ..fetch import make_plugin_manager

    pm = make_plugin_manager(load_entrypoints=True)
    server = pm.hook.blackhole_sync_server()
    if server is None:
        raise MissingPluginError(
            "no plugin provides 'serve': install blackhole-sync-http "
            "(pip install 'blackhole-sync[http]')"
        )

    def ready(url: str) -> None:
        print(url, flush=True)

    tls = {
        k: v
        for k, v in (
            ("tls_cert", args.tls_cert),
            ("tls_key", args.tls_key),
            ("tls_client_ca", args.tls_client_ca),
        )
        if v
    }

    async def run() -> None:
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_signals)
            await server.serve(directory, args.host, args.port, ready=ready, **tls)
            tg.cancel_scope.cancel()

    anyio.run(run)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    repo = Path(args.repo)
    if not (repo / "root.json").is_file():
        raise ConfigurationError(f"{repo} is not a repository (no root.json)")
    return serve_directory(repo, args)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="HTTP origin for a repository", description="HTTP origin for a repository"
    )
    p.set_defaults(func=cmd_serve)
    p.add_argument("repo")
    add_server_flags(p)
