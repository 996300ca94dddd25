"""``blackhole-sync repo ...``: create a repository, rotate its root, re-sign its index, show it.

A root needs the signatures of its root key holders. Given fewer ``--sign-with`` keys than the
root threshold (for ``rotate``: than the larger of the old and new root thresholds), or
``--draft``, ``repo init`` and ``repo rotate`` write the new root as a draft under
``REPO/.bhsync/drafts/root/`` (never ``root.json``) and exit 0; each holder adds their
signature on their own machine with ``repo sign REPO --key KEY`` and ``repo publish-root REPO``
publishes it once the old and the new thresholds are met (else exit 3, nothing written). Given
that many keys or more, the command is one-shot: it publishes, or refuses (exit 3) and writes
nothing.

``--json`` key sets (one per command, whatever the outcome; an error is
``{"error": {...}}``):

* ``init``: ``repo``, ``root_version``, ``published``, ``root_draft``
* ``rotate``: ``repo``, ``root_version``, ``published``, ``root_draft``,
  ``unverifiable_releases``
* ``sign``: ``repo``, ``root_version``, ``added``, ``root_draft``
* ``publish-root``: ``repo``, ``root_version``, ``unverifiable_releases``, ``index_stale``
* ``discard-root``: ``repo``, ``root_version``
* ``refresh``: ``index_version``
* ``show``: ``repo``, ``network_id``, ``root``, ``index``, ``config``, ``releases``,
  ``root_draft``

``root_draft`` is null or ``{"version", "kind", "expires", "signed_by", "new_threshold",
"old_threshold", "complete"}``; each threshold is ``{"root_version", "threshold",
"signatures", "signed_by", "met"}`` (``old_threshold`` is null for a first root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .common import (
    EXIT_OK,
    UsageError,
    add_command,
    add_group,
    emit,
    open_repository,
    positive_int,
    public_key,
    signing_key,
)

if TYPE_CHECKING:
    from ..release import Repository, RootDraftStatus

__all__ = [
    "add_parsers",
    "cmd_repo_discard_root",
    "cmd_repo_init",
    "cmd_repo_publish_root",
    "cmd_repo_refresh",
    "cmd_repo_rotate",
    "cmd_repo_show",
    "cmd_repo_sign",
]


def _open_pending(path: str) -> Repository:
    """A repository, also one whose first root is still a draft."""
    from ..release import Repository

    return Repository.open(Path(path), pending_root=True)


def _draft_mode(args: argparse.Namespace) -> bool | Literal["auto"]:
    return True if args.draft else "auto"


def _draft_text(repo: str, status: RootDraftStatus) -> str:
    """What a holder reads after a draft was written or signed: who signed, what is missing."""
    parts = [
        f"{len(status.new.signed_by)} of {status.new.threshold} root keys of v{status.version}"
    ]
    if status.old is not None:
        parts.append(
            f"{len(status.old.signed_by)} of {status.old.threshold} of v{status.old.root_version}"
        )
    signed = ", ".join(parts)
    if status.complete:
        nxt = f"publish it: blackhole-sync repo publish-root {repo}"
    else:
        nxt = (
            f"each remaining root key holder runs `blackhole-sync repo sign {repo} --key KEY`, "
            f"then `blackhole-sync repo publish-root {repo}`"
        )
    return f"root draft v{status.version} signed by {signed}; {nxt}"


def _warn_stranded(stranded: list[str], version: int) -> None:
    if stranded:
        sys.stderr.write(
            "blackhole-sync: warning: published release(s) "
            f"{', '.join(stranded)} no longer meet the release threshold under root "
            f"v{version}; nodes will refuse them: withdraw them (release yank) and publish "
            "new versions\n"
        )


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
    try:
        repo = Repository.init(
            Path(args.repo),
            root_keys=[public_key(p) for p in args.root_key],
            root_threshold=args.root_threshold,
            release_keys=[public_key(p) for p in args.release_key],
            release_threshold=args.release_threshold,
            index_key=public_key(args.index_key),
            governance_keys=[public_key(p) for p in args.governance_key or ()],
            governance_threshold=args.governance_threshold,
            sign_with=[signing_key(p) for p in args.sign_with],
            draft=_draft_mode(args),
            **optional,
        )
    except ValueError as exc:  # an impossible threshold, an empty role: a usage error
        raise UsageError(str(exc)) from exc
    status = repo.root_draft()
    emit(
        args,
        {
            "repo": args.repo,
            "root_version": 1,
            "published": status is None,
            "root_draft": None if status is None else status.to_dict(),
        },
        f"initialised repository {args.repo}"
        if status is None
        else f"initialised repository {args.repo} with a root draft: "
        + _draft_text(args.repo, status),
    )
    return EXIT_OK


def cmd_repo_rotate(args: argparse.Namespace) -> int:
    repo = open_repository(args.repo)
    try:
        root = repo.rotate(
            sign_with=[signing_key(p) for p in args.sign_with],
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
            draft=_draft_mode(args),
        )
    except ValueError as exc:  # an impossible threshold, an unknown key id: a usage error
        raise UsageError(str(exc)) from exc
    status = repo.root_draft()
    stranded = [] if status is not None else repo.unverifiable_releases()
    _warn_stranded(stranded, root.version)
    emit(
        args,
        {
            "repo": args.repo,
            "root_version": root.version,
            "published": status is None,
            "root_draft": None if status is None else status.to_dict(),
            "unverifiable_releases": stranded,
        },
        f"root rotated to version {root.version}"
        if status is None
        else _draft_text(args.repo, status),
    )
    return EXIT_OK


def cmd_repo_sign(args: argparse.Namespace) -> int:
    repo = _open_pending(args.repo)
    added = repo.sign_root(signing_key(args.key))
    status = repo.root_draft()
    assert status is not None
    emit(
        args,
        {
            "repo": args.repo,
            "root_version": status.version,
            "added": added,
            "root_draft": status.to_dict(),
        },
        ("" if added else "the root draft already carries this signature; ")
        + _draft_text(args.repo, status),
    )
    return EXIT_OK


def cmd_repo_publish_root(args: argparse.Namespace) -> int:
    repo = _open_pending(args.repo)
    before = repo.root() if repo.root_path().is_file() else None
    root = repo.publish_root()
    stranded = repo.unverifiable_releases()
    _warn_stranded(stranded, root.version)
    index_stale = (
        before is not None
        and before.roles["index"] != root.roles["index"]
        and repo.index_path.is_file()
    )
    if index_stale:
        sys.stderr.write(
            "blackhole-sync: warning: the index is still signed by the old index key; nodes "
            f"refuse it until it is re-signed: blackhole-sync repo refresh {args.repo} "
            "--index-key NEW_INDEX_KEY\n"
        )
    emit(
        args,
        {
            "repo": args.repo,
            "root_version": root.version,
            "unverifiable_releases": stranded,
            "index_stale": index_stale,
        },
        f"published root version {root.version}",
    )
    return EXIT_OK


def cmd_repo_discard_root(args: argparse.Namespace) -> int:
    version = _open_pending(args.repo).discard_root()
    emit(
        args,
        {"repo": args.repo, "root_version": version},
        f"discarded the root draft v{version}",
    )
    return EXIT_OK


def cmd_repo_refresh(args: argparse.Namespace) -> int:
    index = open_repository(args.repo).refresh(signing_key(args.index_key))
    emit(args, {"index_version": index.version}, f"index re-signed as version {index.version}")
    return EXIT_OK


def _show(repo: Repository, path: str) -> dict[str, Any]:
    from ..documents import format_time

    status = repo.root_draft()
    root = repo.root() if repo.root_path().is_file() else None
    index = repo.index() if root is not None else None
    out: dict[str, Any] = {
        "repo": path,
        "network_id": repo.config.network_id,
        "root": None,
        "index": None,
        "config": {
            "root_expires_days": repo.config.root_expires_days,
            "index_expires_seconds": repo.config.index_expires_seconds,
        },
        "releases": repo.list_releases() if root is not None else [],
        "root_draft": None if status is None else status.to_dict(),
    }
    if root is not None:
        out["root"] = {
            "version": root.version,
            "expires": format_time(root.expires),
            "roles": {
                name: {"keyids": list(role.keyids), "threshold": role.threshold}
                for name, role in sorted(root.roles.items())
            },
            "keys": {kid: key.hex for kid, key in sorted(root.keys.items())},
        }
    if index is not None:
        out["index"] = {
            "version": index.version,
            "expires": format_time(index.expires),
            "channels": sorted(index.channels),
        }
    return out


def _show_text(info: dict[str, Any]) -> str:
    lines = [f"repository {info['repo']} (network {info['network_id']})"]
    root = info["root"]
    if root is None:
        lines.append("root: none published yet")
    else:
        lines.append(f"root v{root['version']}, expires {root['expires']}")
        for name, role in root["roles"].items():
            lines.append(f"  {name}: {role['threshold']} of {len(role['keyids'])}")
            lines += [f"    {kid}" for kid in role["keyids"]]
    index = info["index"]
    lines.append(
        "index: none yet"
        if index is None
        else f"index v{index['version']}, expires {index['expires']}"
    )
    cfg = info["config"]
    lines.append(
        f"expiry periods: root {cfg['root_expires_days']} days, "
        f"index {cfg['index_expires_seconds']} seconds"
    )
    draft = info["root_draft"]
    if draft is not None:
        new = draft["new_threshold"]
        line = f"root draft v{draft['version']}: {new['signatures']} of {new['threshold']}"
        if draft["old_threshold"] is not None:
            old = draft["old_threshold"]
            line += f" (and {old['signatures']} of {old['threshold']} of v{old['root_version']})"
        lines.append(line + (", ready to publish" if draft["complete"] else ""))
    lines.append(f"releases: {len(info['releases'])}")
    for r in info["releases"]:
        lines.append(
            f"  {r['version']}\t{r['channel']}\t{r['type']}\t{r['state']}\t"
            f"{r['signatures']}/{r['threshold']} signatures"
        )
    return "\n".join(lines)


def cmd_repo_show(args: argparse.Namespace) -> int:
    info = _show(_open_pending(args.repo), args.repo)
    emit(args, info, lambda: _show_text(info))
    return EXIT_OK


def _add_root_flags(p: argparse.ArgumentParser, *, init: bool) -> None:
    """The roles of a root: required for ``init``; for ``rotate``, only the ones that change."""
    p.add_argument("repo", help="the repository directory" + (" (created)" if init else ""))
    change = "" if init else " (given: replaces the role's keys)"
    p.add_argument(
        "--root-key",
        action="append",
        required=init,
        metavar="PUB",
        help="a root key: a .pub file or plugin:NAME:ID" + change,
    )
    p.add_argument(
        "--root-threshold",
        type=positive_int,
        required=init,
        metavar="N",
        help="how many distinct root keys must sign a root",
    )
    p.add_argument(
        "--release-key",
        action="append",
        required=init,
        metavar="PUB",
        help="a release key (offline; signs release manifests)" + change,
    )
    p.add_argument(
        "--release-threshold",
        type=positive_int,
        required=init,
        metavar="N",
        help="how many distinct release keys must sign a release",
    )
    p.add_argument(
        "--index-key",
        required=init,
        metavar="PUB",
        help="the online key that signs the index and announcements",
    )
    p.add_argument(
        "--governance-key",
        action="append",
        metavar="PUB",
        help="a governance key (rollout plans, halts, proposals, validator sets)",
    )
    p.add_argument(
        "--governance-threshold",
        type=positive_int,
        metavar="N",
        help="how many distinct governance keys must sign",
    )
    p.add_argument(
        "--root-expires",
        type=positive_int,
        metavar="DAYS",
        help="how long a root is valid" + (" (default: 365)" if init else ""),
    )
    p.add_argument(
        "--sign-with",
        action="append",
        default=[],
        metavar="KEY",
        help="a root key holder's private key (or plugin:NAME:ID); fewer than the threshold "
        "writes a root draft for the other holders to sign (repo sign)",
    )
    p.add_argument(
        "--draft",
        action="store_true",
        help="write a root draft even with enough --sign-with keys",
    )


def add_parsers(sub: Any) -> None:
    repo = add_group(sub, "repo", "repository management")
    p = add_command(
        repo, "init", cmd_repo_init, "create a repository with its first root", json_flag=True
    )
    _add_root_flags(p, init=True)
    p.add_argument(
        "--index-expires",
        type=positive_int,
        metavar="SECONDS",
        help="how long an index is valid (default: 86400, one day)",
    )
    p = add_command(
        repo,
        "rotate",
        cmd_repo_rotate,
        "sign a new root version (old and new thresholds)",
        json_flag=True,
    )
    _add_root_flags(p, init=False)
    p.add_argument(
        "--revoke",
        action="append",
        metavar="KEYID",
        help="a key id (or a unique prefix of 8+ hex digits) to remove from every role",
    )
    p = add_command(
        repo,
        "sign",
        cmd_repo_sign,
        "add one root key holder's signature to the pending root draft",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory (a copy travels between holders)")
    p.add_argument(
        "--key",
        required=True,
        metavar="KEY",
        help="the holder's private root key (old or new role), or plugin:NAME:ID",
    )
    p = add_command(
        repo,
        "publish-root",
        cmd_repo_publish_root,
        "publish the root draft once the old and new root thresholds are met",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
    p = add_command(
        repo,
        "discard-root",
        cmd_repo_discard_root,
        "drop the pending root draft",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
    p = add_command(
        repo,
        "refresh",
        cmd_repo_refresh,
        "re-sign the index with a new version and expiry",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
    p.add_argument(
        "--index-key",
        required=True,
        metavar="KEY",
        help="the private index key (or plugin:NAME:ID)",
    )
    p = add_command(
        repo,
        "show",
        cmd_repo_show,
        "roles, keys, thresholds, expiries, releases and any pending root draft",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
