"""``blackhole-sync key ...``: key files.

``key generate PATH [--encrypt]`` writes PATH (0600) and PATH.pub and prints only the key id;
with ``--encrypt`` the private key is sealed with a passphrase (argon2id, then
XSalsa20-Poly1305), read from ``BLACKHOLE_SYNC_KEY_PASSPHRASE`` or asked twice on the terminal.
``key show PATH [--json]`` prints the key id and public key of a ``.pub``, a private key file
(an encrypted one without its passphrase) or a signer plugin's key (``plugin:NAME:ID``); JSON
keys: ``path``, ``kind`` (``public``, ``private`` or ``plugin``), ``keyid``, ``public_key``,
``encrypted``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ConflictError, FormatError
from .common import EXIT_OK, UsageError, add_command, add_group, emit, signing_key

__all__ = ["add_parsers", "cmd_key_generate", "cmd_key_show"]


def _new_passphrase(path: Path) -> bytes:
    """The passphrase for a new encrypted key: the environment, else asked twice."""
    from ..codecs import PASSPHRASE_ENV
    from ..errors import KeyFileError

    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        if not sys.stdin.isatty():
            raise KeyFileError(
                f"--encrypt needs a passphrase and there is no terminal to ask: set {PASSPHRASE_ENV}"
            )
        import getpass

        value = getpass.getpass(f"passphrase for {path}: ")
        if getpass.getpass("the same passphrase again: ") != value:
            raise KeyFileError("the passphrases differ; nothing written")
    if not value:
        raise UsageError("an empty passphrase protects nothing")
    return value.encode()


def cmd_key_generate(args: argparse.Namespace) -> int:
    from ..codecs import write_key_pair

    path = Path(args.path)
    pub = path.with_name(path.name + ".pub")
    for existing in (path, pub):
        if existing.exists() or existing.is_symlink():
            raise ConflictError(f"{existing} already exists")
    passphrase = _new_passphrase(path) if args.encrypt else None
    try:
        key = write_key_pair(path, passphrase=passphrase)
    except FileExistsError as exc:
        raise ConflictError(str(exc)) from exc
    print(key.keyid)
    return EXIT_OK


def cmd_key_show(args: argparse.Namespace) -> int:
    if args.path.startswith("plugin:"):
        signer = signing_key(args.path)
        kind, public, encrypted = "plugin", signer.public_key, False
    else:
        from ..codecs import read_key_file

        try:
            info = read_key_file(args.path)
        except FormatError as exc:
            raise UsageError(str(exc)) from exc
        kind, public, encrypted = info.kind, info.public_key, info.encrypted
    obj = {
        "path": args.path,
        "kind": kind,
        "keyid": public.keyid,
        "public_key": public.hex,
        "encrypted": encrypted,
    }
    what = {
        "public": "public key file",
        "private": "private key file" + (" (encrypted)" if encrypted else ""),
        "plugin": "key held by a signer plugin",
    }[kind]
    emit(args, obj, f"key id      {public.keyid}\npublic key  {public.hex}\nkind        {what}")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    key = add_group(sub, "key", "key management")
    p = add_command(
        key, "generate", cmd_key_generate, "write PATH (0600) and PATH.pub; print the key id"
    )
    p.add_argument("path", help="the private key file to write (PATH.pub beside it)")
    p.add_argument(
        "--encrypt",
        action="store_true",
        help="protect the private key with a passphrase (from a prompt, or the "
        "BLACKHOLE_SYNC_KEY_PASSPHRASE environment variable)",
    )
    p = add_command(
        key,
        "show",
        cmd_key_show,
        "print the key id and public key of a key file or a plugin's key",
        json_flag=True,
    )
    p.add_argument("path", help="a .pub file, a private key file, or plugin:NAME:ID")
