"""``blackhole-sync key ...``: key files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConflictError
from .common import EXIT_OK, add_command, add_group

__all__ = ["add_parsers", "cmd_key_generate"]


def cmd_key_generate(args: argparse.Namespace) -> int:
    from ..documents import write_key_pair

    path = Path(args.path)
    pub = path.with_name(path.name + ".pub")
    for existing in (path, pub):
        if existing.exists() or existing.is_symlink():
            raise ConflictError(f"{existing} already exists")
    try:
        key = write_key_pair(path)
    except FileExistsError as exc:
        raise ConflictError(str(exc)) from exc
    print(key.keyid)
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    key = add_group(sub, "key", "key management")
    p = add_command(
        key, "generate", cmd_key_generate, "write PATH (0600) and PATH.pub; print the key id"
    )
    p.add_argument("path")
