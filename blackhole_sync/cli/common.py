"""What every command group shares: exit codes, the parser class, argument types, output.

Nothing here imports more than the standard library and the error classes at import time: a
command group module imports this one, and ``blackhole-sync node status`` must not pay for
the release builder's or the key files' imports. Loaders of keys and repositories import
their layer when called.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import FormatError

if TYPE_CHECKING:
    from ..documents import PrivateKey, PublicKey, Signer
    from ..release import Repository

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_SECURITY",
    "EXIT_USAGE",
    "CliParser",
    "DownloadProgress",
    "Handler",
    "HelpFormatter",
    "UsageError",
    "add_command",
    "add_group",
    "ask_passphrase",
    "basis_points",
    "download_progress",
    "emit",
    "int_in",
    "missing_file",
    "node_dir",
    "nonneg_int",
    "open_repository",
    "port_number",
    "positive_int",
    "private_key",
    "public_key",
    "recipient",
    "semver_arg",
    "signing_key",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SECURITY = 3

#: What runs a command: the parsed arguments in, the exit status out.
Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad arguments (exit 2)."""


def missing_file(path: str | os.PathLike[str], flag: str | None = None) -> FileNotFoundError:
    """The error for a file that does not exist: exit 1 whichever flag named it."""
    where = f"{flag} {os.fspath(path)}" if flag else os.fspath(path)
    return FileNotFoundError(errno.ENOENT, "no such file", where)


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default and whether it may be repeated."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        notes = []
        if isinstance(action, argparse._AppendAction):
            notes.append("repeatable")
        default = action.default
        if (
            action.option_strings
            and default not in (None, False, argparse.SUPPRESS)
            and default != []
            and "%(default)" not in text
            and not isinstance(action, argparse._VersionAction)
        ):
            notes.append("default: %(default)s")
        if notes:
            text = f"{text} ({'; '.join(notes)})" if text else f"({'; '.join(notes)})"
        return text


class CliParser(argparse.ArgumentParser):
    """argparse, with usage errors raised (one line on stderr, exit 2) instead of printed,
    and help that shows defaults and repeatable flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("blackhole-sync").strip()
        hint = f"'blackhole-sync {command} --help'" if command else "'blackhole-sync --help'"
        raise UsageError(f"{command + ': ' if command else ''}{message} (see {hint})")


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
        p.add_argument(
            "--json",
            action="store_true",
            help='print one JSON object on stdout (an error too: {"error": {...}})',
        )
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
    """A public key file (PUB), or the public half of a signer plugin's key
    (``plugin:NAME:ID``); a private key or anything else is a usage error; a file that does
    not exist is exit 1."""
    if path.startswith("plugin:"):
        return signing_key(path).public_key
    from ..codecs import load_public_key

    try:
        return load_public_key(path)
    except FormatError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise missing_file(path) from exc
        raise UsageError(str(exc)) from exc


def ask_passphrase(path: Path) -> bytes:
    """An encrypted key file's passphrase: ``BLACKHOLE_SYNC_KEY_PASSPHRASE``, else a prompt
    on the terminal (none: :class:`~blackhole_sync.errors.KeyFileError`, exit 1)."""
    from ..codecs import PASSPHRASE_ENV
    from ..errors import KeyFileError

    value = os.environ.get(PASSPHRASE_ENV)
    if value is not None:
        return value.encode()
    if not sys.stdin.isatty():
        raise KeyFileError(
            f"{path} is encrypted and there is no terminal to ask for its passphrase: "
            f"set {PASSPHRASE_ENV}"
        )
    import getpass

    return getpass.getpass(f"passphrase for {path}: ").encode()


def private_key(path: str) -> PrivateKey:
    """A private key file (KEY; its passphrase asked when encrypted); a public key or anything
    else is a usage error; a file that does not exist is exit 1. For the commands that need
    the key itself; :func:`signing_key` also takes a signer plugin's key."""
    from ..codecs import load_private_key

    if path.startswith("plugin:"):
        raise UsageError(f"{path}: this command needs a private key file, not a plugin's key")
    try:
        return load_private_key(path, passphrase=ask_passphrase)
    except FormatError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise missing_file(path) from exc
        raise UsageError(str(exc)) from exc


def signing_key(spec: str) -> Signer:
    """What signs: a private key file (KEY), or ``plugin:NAME:ID``, a key a signer plugin
    holds (an HSM, a KMS). A public key file, a malformed spec or a signer plugin that is not
    installed is a usage error (exit 2)."""
    if not spec.startswith("plugin:"):
        return private_key(spec)
    from ..errors import MissingPluginError
    from ..fetch import make_plugin_manager
    from ..release import plugin_signer

    try:
        return plugin_signer(spec, make_plugin_manager(load_entrypoints=True))
    except (ValueError, MissingPluginError) as exc:
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


def node_dir(args: argparse.Namespace, *, need_config: bool = True) -> Path:
    """``args.node`` when it is a node directory (``node init`` made it), else exit 1."""
    from ..errors import ConfigurationError

    node = Path(args.node)
    if not (node / "state.db").exists() or (need_config and not (node / "config.toml").exists()):
        raise ConfigurationError(f"{node} is not a node directory (run 'blackhole-sync node init')")
    return node


def open_repository(path: str) -> Repository:
    from ..release import Repository

    return Repository.open(Path(path))


# -- output ----------------------------------------------------------------------------------


class DownloadProgress:
    """Download progress on stderr: one bar per blob with its bytes, rate and time left (rich).

    Call it with each :class:`~blackhole_sync.fetch.ProgressEvent`; :meth:`close` ends the
    display (the bars stay on the terminal). A resumed download's bar starts at the kept
    prefix, which does not count in the rate. :func:`download_progress` makes one only where
    someone watches.
    """

    def __init__(self) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __call__(self, event: Any) -> None:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
        task = self._tasks.get(event.source)
        if task is None:
            self._tasks[event.source] = self._progress.add_task(
                f"blob {event.source}", total=event.total, completed=event.received
            )
        else:
            self._progress.update(task, total=event.total, completed=event.received)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def download_progress(args: argparse.Namespace) -> DownloadProgress | None:
    """A :class:`DownloadProgress` when stderr is a terminal and ``--json`` was not given."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        return None
    return DownloadProgress()


def emit(args: argparse.Namespace, obj: dict[str, Any], text: str | Callable[[], str]) -> None:
    """With ``--json`` one JSON object on stdout, else ``text`` (a callable is called only then)."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    else:
        out = text() if callable(text) else text
        if out:
            sys.stdout.write(out + ("" if out.endswith("\n") else "\n"))
    sys.stdout.flush()
