"""The ``blackhole-sync`` command (ARCHITECTURE.md section 6): entry point, exit codes, errors.

Exit status: 0 success (also "already up to date"), 1 other failure, 2 usage error, 3 refused
for a security reason (signature, threshold, rollback, expiry, hash or length mismatch, path).
Errors are one line on stderr, ``blackhole-sync: ...``; ``--debug`` (anywhere on the line, or
``BLACKHOLE_SYNC_DEBUG=1``) adds the traceback. Every command that reads state accepts
``--json`` after the subcommand and then prints one JSON object on stdout. A flag that takes
several values is repeated.

Each command group is a module that adds its own sub-parsers (``keys``, ``repo``, ``release``,
``serve``, ``node``, ``plugins``, ``demo``); :mod:`~blackhole_sync.cli.common` holds what they
share. Building the parser imports none of the library's layers: a command imports what it
uses when it runs, so ``node status`` never loads the release builder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import BlackholeSyncError, SecurityError
from . import demo, keys, node, plugins, release, repo, serve
from .common import EXIT_FAILURE, EXIT_OK, EXIT_SECURITY, EXIT_USAGE, CliParser, UsageError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_SECURITY", "EXIT_USAGE", "build_parser", "main"]

#: The command groups, in the order ``--help`` lists them.
GROUPS = (keys, repo, release, serve, node, plugins, demo)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the global flags, then each group's sub-parsers."""
    parser = CliParser(
        prog="blackhole-sync",
        description="Signed, atomic, peer-to-peer updates for Blackhole nodes.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"blackhole-sync {__version__}")
    sub = parser.add_subparsers(dest="group", required=True, parser_class=CliParser)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def exit_code(exc: BaseException) -> int:
    """2 for a usage error, 3 for a security refusal, 1 for anything else."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, SecurityError):
        return EXIT_SECURITY
    return EXIT_FAILURE


def _message(exc: BaseException) -> str:
    """The error as one line (an OSError by its strerror and file name)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    message = " ".join(str(exc).split()) or type(exc).__name__
    return f"refused: {message}" if isinstance(exc, SecurityError) else message


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup) and group.exceptions:
        group = group.exceptions[0]
    return group


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (the console script exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line (before or after the subcommand)
    debug = "--debug" in args_list or os.environ.get("BLACKHOLE_SYNC_DEBUG") == "1"
    args_list = [arg for arg in args_list if arg != "--debug"]
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="blackhole-sync: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        logging.getLogger().setLevel(logging.ERROR)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
        code: int = args.func(args)
        return code
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("blackhole-sync: interrupted\n")
        return 130
    except (BlackholeSyncError, UsageError, OSError, ValueError) as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"blackhole-sync: {_message(exc)}\n")
        return exit_code(exc)
    except BaseException as exc:  # noqa: BLE001 - last resort: one line, never a traceback
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_leaf(exc)
            if inner is not exc:
                sys.stderr.write(f"blackhole-sync: {' '.join(str(inner).split())}\n")
                if debug:
                    traceback.print_exc()
                return exit_code(inner)
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"blackhole-sync: internal error: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
