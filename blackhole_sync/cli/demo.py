"""``blackhole-sync demo``: the local network demonstration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "cmd_demo"]


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(workdir=Path(args.workdir) if args.workdir else None, keep=args.keep)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the local network demonstration",
        description="the local network demonstration",
    )
    p.set_defaults(func=cmd_demo)
    p.add_argument("--workdir")
    p.add_argument("--keep", action="store_true")
