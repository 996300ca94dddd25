"""The ``blackhole-sync`` command (ARCHITECTURE.md section 6): entry point, exit codes, errors.

Exit status: 0 success (also "already up to date"), 1 other failure, 2 usage error, 3 refused
for a security reason (signature, threshold, rollback, expiry, hash or length mismatch, path).
Errors are one line on stderr, ``blackhole-sync: ...``, in words (no Python class names);
``--debug`` (anywhere on the line, or ``BLACKHOLE_SYNC_DEBUG=1``) adds the traceback. Every
command that reads state accepts ``--json`` after the subcommand and then prints one JSON object
on stdout, with one key set whatever the outcome; an error is then also the object
``{"error": {"kind", "message", "exit"}}`` on stdout (:data:`ERROR_KINDS`). A flag that takes
several values is repeated. The whole contract, command by command, is ``docs/cli.rst``.

Each command group is a module that adds its own sub-parsers (``keys``, ``repo``, ``release``,
``serve``, ``node``, ``governance`` (and ``network``), ``plugins``, ``demo``); :mod:`~blackhole_sync.cli.common` holds what they
share. Building the parser imports none of the library's layers: a command imports what it
uses when it runs, so ``node status`` never loads the release builder. When the line names a
group, only that group's module is imported and only its sub-parsers are built (a command's
start-up cost is its own); ``--help`` without a group, or an unknown one, builds them all.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence

from .. import __version__, errors
from ..errors import BlackholeSyncError, SecurityError
from .common import EXIT_FAILURE, EXIT_OK, EXIT_SECURITY, EXIT_USAGE, CliParser, UsageError

__all__ = [
    "ERROR_KINDS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_SECURITY",
    "EXIT_USAGE",
    "build_parser",
    "error_kind",
    "main",
    "scrub",
]

#: The modules of the command groups (in this package), in the order ``--help`` lists them.
GROUPS = ("keys", "repo", "release", "serve", "node", "governance", "plugins", "demo")

#: Each command word (``blackhole-sync WORD ...``) -> the group module that adds its parsers.
GROUP_OF_COMMAND = {
    "key": "keys",
    "repo": "repo",
    "release": "release",
    "serve": "serve",
    "node": "node",
    "governance": "governance",
    "network": "governance",
    "plugins": "plugins",
    "demo": "demo",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line: the global flags, then each group's sub-parsers; with ``command``
    (a key of :data:`GROUP_OF_COMMAND`), only the sub-parsers of the group that runs it, so
    that a command imports no other group's module."""
    parser = CliParser(
        prog="blackhole-sync",
        description="Signed, atomic, peer-to-peer updates for Blackhole nodes.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"blackhole-sync {__version__}")
    sub = parser.add_subparsers(dest="group", required=True, parser_class=CliParser)
    group = GROUP_OF_COMMAND.get(command or "")
    for name in GROUPS if group is None else (group,):
        importlib.import_module(f"{__package__}.{name}").add_parsers(sub)
    return parser


def exit_code(exc: BaseException) -> int:
    """2 for a usage error, 3 for a security refusal, 1 for anything else."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, SecurityError):
        return EXIT_SECURITY
    return EXIT_FAILURE


#: The ``kind`` of an error in ``--json`` output, most specific class first (docs/cli.rst
#: lists them; scripts may rely on them, so they are names of our own, never class names).
ERROR_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (UsageError, "usage"),
    (errors.UnsafePathError, "unsafe_path"),
    (errors.FormatError, "format"),
    (errors.SignatureError, "signature"),
    (errors.RollbackError, "rollback"),
    (errors.ExpiredError, "expired"),
    (errors.LengthOrHashMismatchError, "mismatch"),
    (errors.WithdrawnReleaseError, "withdrawn"),
    (errors.DecryptionError, "decryption"),
    (SecurityError, "security"),
    (errors.DownloadError, "download"),
    (errors.PatchError, "patch"),
    (errors.NodeLockedError, "locked"),
    (errors.HealthCheckError, "health_check"),
    (errors.IncompatibleReleaseError, "incompatible"),
    (errors.NoSuchVersionError, "no_such_version"),
    (errors.InstallError, "install"),
    (errors.ConflictError, "conflict"),
    (errors.MissingPluginError, "missing_plugin"),
    (errors.PluginError, "plugin"),
    (errors.ConfigurationError, "configuration"),
    (FileNotFoundError, "not_found"),
    (PermissionError, "permission"),
    (OSError, "os"),
    (ValueError, "invalid"),
    (KeyboardInterrupt, "interrupted"),
)


def error_kind(exc: BaseException) -> str:
    """The documented ``kind`` of ``exc`` (``internal`` for anything unexpected)."""
    for cls, kind in ERROR_KINDS:
        if isinstance(exc, cls):
            return kind
    return "internal"


# "ClientConnectorError: " / "builtins.TimeoutError" inside a message from a lower layer or a
# plugin: the operator reads what happened, never a Python class name.
_CLASS_NAME = re.compile(
    r"\b(?:[a-z_][\w]*\.)*([A-Z][A-Za-z0-9]*(?:Error|Exception|Warning|Timeout|Group|Exit))\b"
    r"(:\s*)?"
)


def _humanize(match: re.Match[str]) -> str:
    if match.group(2):  # "SomeError: detail" -> "detail"
        return ""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", match.group(1))
    return " ".join(w.lower() for w in words)


def scrub(message: str) -> str:
    """``message`` on one line, without Python class names (a bare one becomes words)."""
    text = " ".join(message.split())
    text = _CLASS_NAME.sub(_humanize, text).strip()
    return re.sub(r"\s{2,}", " ", text).strip(" :")


def _message(exc: BaseException) -> str:
    """The error as one line (an OSError by its strerror and file name), without the
    ``blackhole-sync:`` prefix and without internal names."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    else:
        text = scrub(str(exc)) or scrub(type(exc).__name__)
        while text.startswith(PREFIX):  # a message that already carries the prefix
            text = text.removeprefix(PREFIX).lstrip()
        if error_kind(exc) == "internal":
            text = f"internal error (run with --debug for details): {text}"
    return f"refused: {text}" if isinstance(exc, SecurityError) else text


PREFIX = "blackhole-sync:"


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup) and group.exceptions:
        group = group.exceptions[0]
    return group


def _report(exc: BaseException, *, debug: bool, as_json: bool, code: int | None = None) -> int:
    """One ``blackhole-sync: ...`` line on stderr (and with ``--json`` the error object on
    stdout); the traceback only with ``--debug``. Returns the exit status."""
    code = exit_code(exc) if code is None else code
    message = _message(exc)
    if debug:
        traceback.print_exc()
    if as_json:
        obj = {"error": {"kind": error_kind(exc), "message": message, "exit": code}}
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        sys.stdout.flush()
    sys.stderr.write(f"{PREFIX} {message}\n")
    return code


def _wants_json(args: Sequence[str]) -> bool:
    """``--json`` on the line (before ``--``): errors are then JSON too, usage errors included."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (the console script exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line (before or after the subcommand)
    debug = "--debug" in args_list or os.environ.get("BLACKHOLE_SYNC_DEBUG") == "1"
    args_list = [arg for arg in args_list if arg != "--debug"]
    as_json = _wants_json(args_list)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format=f"{PREFIX} %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        logging.getLogger().setLevel(logging.ERROR)
    parser = build_parser(args_list[0] if args_list else None)
    try:
        args = parser.parse_args(args_list)
        code: int = args.func(args)
        return code
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt as exc:
        return _report(exc, debug=debug, as_json=as_json, code=130)
    except (BlackholeSyncError, UsageError, OSError, ValueError) as exc:
        return _report(exc, debug=debug, as_json=as_json)
    except BaseException as exc:  # noqa: BLE001 - last resort: one line, never a traceback
        inner = _first_leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
        return _report(inner, debug=debug, as_json=as_json)


if __name__ == "__main__":
    sys.exit(main())
