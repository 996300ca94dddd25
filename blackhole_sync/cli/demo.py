"""``blackhole-sync demo``: the local network demonstration (see :mod:`blackhole_sync.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["add_parsers", "cmd_demo"]


def _node_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 4 <= value <= 32:
        raise argparse.ArgumentTypeError("--nodes takes 4 to 32 (one of them starts offline)")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import environment_problem, run_demo

    problem = environment_problem()
    if problem is not None:
        raise ConfigurationError(f"cannot run the demo: {problem}")
    return run_demo(
        workdir=Path(args.workdir) if args.workdir else None,
        keep=args.keep,
        nodes=args.nodes,
        quiet=args.quiet,
        as_json=args.json,
    )


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the local network demonstration",
        description="the local network demonstration: an origin and N node agents on "
        "127.0.0.1 (gossip, BitTorrent) playing releases, a phased rollout, a halted bad "
        "release, a protocol activation and a node catching up",
    )
    p.set_defaults(func=cmd_demo)
    p.add_argument(
        "--nodes",
        type=_node_count,
        default=8,
        help="how many nodes, 4 to 32; the last one starts offline",
    )
    p.add_argument("--quiet", action="store_true", help="no live view; only the outcome")
    p.add_argument(
        "--json",
        action="store_true",
        help="the last line on stdout is one JSON object: every step's outcome and the figures",
    )
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="where to build the demo network (default: a new temporary directory)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
