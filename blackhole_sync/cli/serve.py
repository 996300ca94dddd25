"""``blackhole-sync serve REPO``: the origin of a repository (HTTP through the HTTP plugin,
and every installed peer transport: seeding, pinning, announcing new indexes)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .common import EXIT_OK, port_number

__all__ = ["add_parsers", "add_server_flags", "cmd_serve", "serve_directory"]


def add_server_flags(p: argparse.ArgumentParser) -> None:
    """``--host``, ``--port`` and the TLS flags of every command that serves files."""
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    p.add_argument(
        "--port", type=port_number, default=8080, help="the port to listen on; 0 picks a free one"
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve https with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--tls-client-ca", metavar="PEM", help="require client certificates from this CA"
    )


def _run_until_signal(main: Any) -> None:
    """Run ``main()`` under anyio until it returns or SIGTERM/SIGINT arrives."""
    import anyio

    async def run() -> None:
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_signals)
            await main()
            tg.cancel_scope.cancel()

    anyio.run(run)


def _tls(args: argparse.Namespace) -> dict[str, str]:
    return {
        k: v
        for k, v in (
            ("tls_cert", args.tls_cert),
            ("tls_key", args.tls_key),
            ("tls_client_ca", args.tls_client_ca),
        )
        if v
    }


def _ready(line: str) -> None:
    print(line, flush=True)


def serve_directory(directory: Path, args: argparse.Namespace) -> int:
    """Serve ``directory`` over HTTP only until SIGTERM or SIGINT (exit 0); print the URL."""
    from ..fetch import make_plugin_manager
    from ..origin import find_server

    server = find_server(make_plugin_manager(load_entrypoints=True))
    _run_until_signal(
        lambda: server.serve(directory, args.host, args.port, ready=_ready, **_tls(args))
    )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """The origin: HTTP, and every installed peer transport (seed, pin, announce)."""
    from ..fetch import make_plugin_manager
    from ..origin import run_origin
    from .common import private_key

    repo = Path(args.repo)
    if not (repo / "root.json").is_file():
        raise ConfigurationError(f"{repo} is not a repository (no root.json)")
    index_key = private_key(args.index_key) if args.index_key else None
    peer_config: dict[str, Any] = {}
    if args.peer_config:
        peer_config = _read_peer_config(Path(args.peer_config))
    if args.loopback_only:
        peer_config.setdefault("network", {})["loopback_only"] = True
    plugin_table = peer_config.get("plugins") or {}
    plugins = make_plugin_manager(
        load_entrypoints=bool(plugin_table.get("autoload", True)),
        block=[str(name) for name in plugin_table.get("block", ())],
    )
    _run_until_signal(
        lambda: run_origin(
            repo,
            plugins=plugins,
            host=args.host,
            port=args.port,
            ready=_ready,
            tls=_tls(args),
            index_key=index_key,
            peer_config=peer_config,
        )
    )
    return EXIT_OK


def _read_peer_config(path: Path) -> dict[str, Any]:
    """The origin's peer settings: a TOML file with the tables a node's config.toml has for
    them (``[network]``, ``[plugins]``, ``[gossip]``, ``[bittorrent]``, ``[ipfs]``)."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    return data


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="HTTP origin for a repository", description="HTTP origin for a repository"
    )
    p.set_defaults(func=cmd_serve)
    p.add_argument("repo", metavar="REPO", help="the repository directory to serve")
    add_server_flags(p)
    p.add_argument(
        "--index-key",
        metavar="KEY",
        help="the online index key: announce each new index to peers (gossip, DHT)",
    )
    p.add_argument(
        "--peer-config",
        metavar="TOML",
        help="peer-to-peer settings: [network], [gossip], [bittorrent], [ipfs] tables",
    )
    p.add_argument(
        "--loopback-only",
        action="store_true",
        help="keep every peer-to-peer stack on 127.0.0.1 (no UPnP, NAT-PMP, LSD, mDNS, "
        "public bootstrap or DHT routers)",
    )
