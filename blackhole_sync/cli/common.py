"""What every command group shares: exit codes, the parser class, argument types, output.

Nothing here imports more than the standard library and the error classes at import time: a
command group module imports this one, and ``blackhole-sync node status`` must not pay for
the release builder's or the key files' imports. Loaders of keys and repositories import
their layer when called.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import FormatError

if TYPE_CHECKING:
    from ..documents import PrivateKey, PublicKey
    from ..release import Repository

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_SECURITY",
    "EXIT_USAGE",
    "CliParser",
    "Handler",
    "UsageError",
    "add_command",
    "add_group",
    "basis_points",
    "emit",
    "int_in",
    "nonneg_int",
    "open_repository",
    "port_number",
    "positive_int",
    "private_key",
    "public_key",
    "recipient",
    "semver_arg",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SECURITY = 3

#: What runs a command: the parsed arguments in, the exit status out.
Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad arguments (exit 2)."""


class CliParser(argparse.ArgumentParser):
    """argparse, with usage errors raised (one line on stderr, exit 2) instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix('blackhole-sync ')}: {message}")


# -- building the parser ---------------------------------------------------------------------


def add_group(sub: Any, name: str, help: str) -> Any:
    """A command group (``blackhole-sync NAME ...``); returns its sub-parsers."""
    group: argparse.ArgumentParser = sub.add_parser(name, help=help)
    return group.add_subparsers(dest="cmd", required=True, parser_class=CliParser)


def add_command(
    group: Any, name: str, func: Handler, help: str, *, json_flag: bool = False
) -> argparse.ArgumentParser:
    """A command of a group, run by ``func``; ``json_flag`` adds ``--json``."""
    p: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
    p.set_defaults(func=func)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


# -- argument types --------------------------------------------------------------------------


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if number < low or (high is not None and number > high):
            bounds = f"at least {low}" if high is None else f"{low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}: {value}")
        return number

    return parse


positive_int = int_in(1)
nonneg_int = int_in(0)
basis_points = int_in(0, 10_000)
port_number = int_in(0, 65_535)


def semver_arg(value: str) -> str:
    """A release version argument: semver without build metadata, else a usage error."""
    from ..documents import parse_version

    try:
        return parse_version(value, "version")
    except FormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def public_key(path: str) -> PublicKey:
    """A public key file (PUB); a private key or anything else is a usage error."""
    from ..documents import load_public_key

    try:
        return load_public_key(path)
    except FormatError as exc:
        raise UsageError(str(exc)) from exc


def private_key(path: str) -> PrivateKey:
    """A private key file (KEY); a public key or anything else is a usage error."""
    from ..documents import load_private_key

    try:
        return load_private_key(path)
    except FormatError as exc:
        raise UsageError(str(exc)) from exc


def recipient(value: str) -> PublicKey:
    """A node public key: a .pub file, or the hex that ``node status --json`` prints."""
    if (
        len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
        and not os.path.exists(value)
    ):
        from ..documents import PublicKey

        try:
            return PublicKey.from_hex(value)
        except FormatError as exc:
            raise UsageError(str(exc)) from exc
    return public_key(value)


def open_repository(path: str) -> Repository:
    from ..release import Repository

    return Repository.open(Path(path))


# -- output ----------------------------------------------------------------------------------


def emit(args: argparse.Namespace, obj: dict[str, Any], text: str | Callable[[], str]) -> None:
    """With ``--json`` one JSON object on stdout, else ``text`` (a callable is called only then)."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    else:
        out = text() if callable(text) else text
        if out:
            sys.stdout.write(out + ("" if out.endswith("\n") else "\n"))
    sys.stdout.flush()
