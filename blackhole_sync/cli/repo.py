"""``blackhole-sync repo ...``: create a repository, rotate its root, re-sign its index."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import (
    EXIT_OK,
    UsageError,
    add_command,
    add_group,
    emit,
    open_repository,
    positive_int,
    private_key,
    public_key,
)

__all__ = ["add_parsers", "cmd_repo_init", "cmd_repo_refresh", "cmd_repo_rotate"]


def cmd_repo_init(args: argparse.Namespace) -> int:
    from ..release import Repository

    if (args.governance_key and args.governance_threshold is None) or (
        args.governance_threshold is not None and not args.governance_key
    ):
        raise UsageError("--governance-key and --governance-threshold go together")
    optional: dict[str, Any] = {}
    if args.root_expires is not None:
        optional["root_expires_days"] = args.root_expires
    if args.index_expires is not None:
        optional["index_expires_seconds"] = args.index_expires
    Repository.init(
        Path(args.repo),
        root_keys=[public_key(p) for p in args.root_key],
        root_threshold=args.root_threshold,
        release_keys=[public_key(p) for p in args.release_key],
        release_threshold=args.release_threshold,
        index_key=public_key(args.index_key),
        governance_keys=[public_key(p) for p in args.governance_key or ()],
        governance_threshold=args.governance_threshold,
        sign_with=[private_key(p) for p in args.sign_with],
        **optional,
    )
    emit(args, {"repo": args.repo, "root_version": 1}, f"initialised repository {args.repo}")
    return EXIT_OK


def cmd_repo_rotate(args: argparse.Namespace) -> int:
    repo = open_repository(args.repo)
    root = repo.rotate(
        sign_with=[private_key(p) for p in args.sign_with],
        root_keys=[public_key(p) for p in args.root_key] if args.root_key else None,
        root_threshold=args.root_threshold,
        release_keys=[public_key(p) for p in args.release_key] if args.release_key else None,
        release_threshold=args.release_threshold,
        index_key=public_key(args.index_key) if args.index_key else None,
        governance_keys=[public_key(p) for p in args.governance_key]
        if args.governance_key
        else None,
        governance_threshold=args.governance_threshold,
        revoke=args.revoke or (),
        root_expires_days=args.root_expires,
    )
    stranded = repo.unverifiable_releases()
    if stranded:
        sys.stderr.write(
            "blackhole-sync: warning: published release(s) "
            f"{', '.join(stranded)} no longer meet the release threshold under root "
            f"v{root.version}; nodes will refuse them: withdraw them (release yank) and publish "
            "new versions\n"
        )
    emit(
        args,
        {"root_version": root.version, "unverifiable_releases": stranded},
        f"root rotated to version {root.version}",
    )
    return EXIT_OK


def cmd_repo_refresh(args: argparse.Namespace) -> int:
    index = open_repository(args.repo).refresh(private_key(args.index_key))
    emit(args, {"index_version": index.version}, f"index re-signed as version {index.version}")
    return EXIT_OK


def _add_root_flags(p: argparse.ArgumentParser, *, init: bool) -> None:
    """The roles of a root: required for ``init``; for ``rotate``, only the ones that change."""
    p.add_argument("repo")
    p.add_argument("--root-key", action="append", required=init, metavar="PUB")
    p.add_argument("--root-threshold", type=positive_int, required=init)
    p.add_argument("--release-key", action="append", required=init, metavar="PUB")
    p.add_argument("--release-threshold", type=positive_int, required=init)
    p.add_argument("--index-key", required=init, metavar="PUB")
    p.add_argument("--governance-key", action="append", metavar="PUB")
    p.add_argument("--governance-threshold", type=positive_int)
    p.add_argument("--root-expires", type=positive_int, metavar="DAYS")
    p.add_argument("--sign-with", action="append", required=True, metavar="KEY")


def add_parsers(sub: Any) -> None:
    repo = add_group(sub, "repo", "repository management")
    p = add_command(
        repo, "init", cmd_repo_init, "create a repository with its first root", json_flag=True
    )
    _add_root_flags(p, init=True)
    p.add_argument("--index-expires", type=positive_int, metavar="SECONDS")
    p = add_command(
        repo,
        "rotate",
        cmd_repo_rotate,
        "sign a new root version (old and new thresholds)",
        json_flag=True,
    )
    _add_root_flags(p, init=False)
    p.add_argument("--revoke", action="append", metavar="KEYID")
    p = add_command(
        repo,
        "refresh",
        cmd_repo_refresh,
        "re-sign the index with a new version and expiry",
        json_flag=True,
    )
    p.add_argument("repo")
    p.add_argument("--index-key", required=True, metavar="KEY")
