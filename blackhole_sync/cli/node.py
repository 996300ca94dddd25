"""``blackhole-sync node ...``: a node directory -- initialise, check, update, roll back, run.

Every command opens the node through :class:`~blackhole_sync.manager.UpdateManager`. Commands
that only read or change local state (``status``, ``history``, ``verify``, ``prune``,
``confirm``, ``defer``) open it with the built-in plugins only: they fetch nothing and run no
hooks, so third-party transports (and their network stacks) are not even imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError, ConflictError
from .common import (
    EXIT_OK,
    EXIT_SECURITY,
    UsageError,
    add_command,
    add_group,
    emit,
    positive_int,
    semver_arg,
)
from .serve import add_server_flags, cmd_serve

if TYPE_CHECKING:
    from ..manager import UpdateManager

__all__ = [
    "add_parsers",
    "cmd_node_check",
    "cmd_node_confirm",
    "cmd_node_defer",
    "cmd_node_history",
    "cmd_node_init",
    "cmd_node_prune",
    "cmd_node_rollback",
    "cmd_node_run",
    "cmd_node_serve",
    "cmd_node_status",
    "cmd_node_update",
    "cmd_node_verify",
]

_T = TypeVar("_T")


def _node_dir(args: argparse.Namespace, *, need_config: bool = True) -> Path:
    node = Path(args.node)
    if not (node / "state.db").exists() or (need_config and not (node / "config.toml").exists()):
        raise ConfigurationError(f"{node} is not a node directory (run 'blackhole-sync node init')")
    return node


def _with_manager(
    args: argparse.Namespace,
    work: Callable[[UpdateManager], Awaitable[_T]],
    *,
    local: bool = False,
    **options: Any,
) -> _T:
    """Open the node's manager, run ``work`` with it, close it; ``local``: built-in plugins."""
    import anyio

    from ..manager import UpdateManager

    node = _node_dir(args)
    if local:
        from ..fetch import make_plugin_manager

        options["plugins"] = make_plugin_manager(load_entrypoints=False)

    async def run() -> _T:
        async with UpdateManager(node, progress=_progress_printer(args), **options) as manager:
            return await work(manager)

    return anyio.run(run)


def _progress_printer(args: argparse.Namespace) -> Callable[[Any], None] | None:
    """A progress bar on a terminal (never with ``--json``)."""
    if getattr(args, "json", False) or not sys.stdout.isatty():
        return None
    state = {"last": -1}

    def show(event: Any) -> None:
        total = event.total or 0
        if not total:
            return
        percent = int(event.received * 100 / total)
        if percent == state["last"]:
            return
        state["last"] = percent
        width = 30
        filled = width * percent // 100
        sys.stdout.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {percent:3d}% {event.received}/{total} B"
        )
        if percent >= 100:
            sys.stdout.write("\n")
        sys.stdout.flush()

    return show


# -- set up and serve -----------------------------------------------------------------------------


def cmd_node_init(args: argparse.Namespace) -> int:
    from ..documents import TrustedState
    from ..manager import init_node

    node = Path(args.node)
    if (node / "state.db").exists() or (node / "config.toml").exists():
        raise ConflictError(f"{node} is already a node")
    try:
        root_bytes = Path(args.trust).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {args.trust}: {exc.strerror}") from exc
    sources = []
    for source in args.source:
        if "://" in source:
            scheme = source.split("://", 1)[0].lower()
            if scheme not in ("http", "https", "file"):
                raise UsageError(f"--source {source}: use http(s)://, file:// or a path")
            sources.append(source)
        else:
            sources.append(os.path.abspath(source))
    key = init_node(
        node,
        root_bytes=root_bytes,
        sources=sources,
        channel=args.channel,
        region=args.region or "",
        node_type=args.node_type or "",
    )
    root_version = TrustedState(root_bytes).root.version
    emit(
        args,
        {"node": str(node), "node_public_key": key.public_key.hex, "root_version": root_version},
        f"initialised node {node} (public key {key.public_key.hex})",
    )
    return EXIT_OK


def cmd_node_serve(args: argparse.Namespace) -> int:
    """Serve the node's verified holdings to its neighbours (the edge cache)."""
    from ..mirror import export_mirror

    node = _node_dir(args, need_config=False)
    result = export_mirror(node)
    sys.stderr.write(
        f"blackhole-sync: serving {result.documents} document(s) and {result.blobs} blob(s)\n"
    )
    args.repo = str(result.path)
    return cmd_serve(args)


def cmd_node_run(args: argparse.Namespace) -> int:
    import anyio

    from ..agent import run_agent

    node = _node_dir(args, need_config=False)
    anyio.run(lambda: run_agent(node, once=args.once, interval=args.interval))
    return EXIT_OK


# -- check, update, roll back -----------------------------------------------------------------------


def cmd_node_check(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> dict[str, Any]:
        infos = await manager.check_for_updates()
        status = manager.get_update_status()
        return {
            "current_version": status.current_version,
            "available": [i.to_dict() for i in infos],
            "update_available": bool(infos),
            "index_version": status.index_version,
            "root_version": status.root_version,
        }

    result = _with_manager(args, work)

    def text() -> str:
        if not result["available"]:
            return f"up to date ({result['current_version'] or 'nothing installed'})"
        lines = [f"current: {result['current_version'] or 'none'}", "available:"]
        for info in result["available"]:
            lines.append(
                f"  {info['version']} ({info['type']}{', critical' if info['critical'] else ''})"
            )
        return "\n".join(lines)

    emit(args, result, text)
    return EXIT_OK


def cmd_node_update(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> dict[str, Any]:
        before = manager.store.current_version()
        result = await manager.update(args.version)
        if result is None:
            return {
                "updated": False,
                "current_version": before,
                "version": before,
                "method": None,
                "bytes_fetched": 0,
            }
        return {"updated": True, "current_version": result.version, **result.to_dict()}

    result = _with_manager(args, work, deltas=False if args.no_delta else None)
    if result["updated"]:
        text = (
            f"updated {result['previous'] or 'nothing'} -> {result['version']} "
            f"({result['method']}, {result['bytes_fetched']} bytes fetched)"
        )
    else:
        text = f"already up to date ({result['current_version'] or 'nothing installed'})"
    emit(args, result, text)
    return EXIT_OK


def cmd_node_rollback(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> dict[str, Any]:
        before = manager.store.current_version()
        target = await manager.rollback(args.version)
        return {"previous": before, "current_version": target}

    result = _with_manager(args, work)
    emit(args, result, f"rolled back {result['previous']} -> {result['current_version']}")
    return EXIT_OK


# -- local state ------------------------------------------------------------------------------------


def cmd_node_status(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> dict[str, Any]:
        status: dict[str, Any] = manager.get_update_status().to_dict()
        return status

    status = _with_manager(args, work, local=True)

    def text() -> str:
        return "\n".join(
            [
                f"current version:    {status['current_version'] or 'none'}",
                f"installed versions: {', '.join(status['installed_versions']) or 'none'}",
                f"available:          {', '.join(status['available']) or 'none'}",
                f"channel:            {status['channel']}",
                f"node public key:    {status['node_public_key']}",
            ]
        )

    emit(args, status, text)
    return EXIT_OK


def cmd_node_history(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = manager.store.history()
        return history

    history = _with_manager(args, work, local=True)

    def text() -> str:
        if not history:
            return "no history"
        return "\n".join(
            f"{h.get('time', '')}  {h.get('action', '')}  {h.get('from_version') or '-'} -> "
            f"{h.get('to_version') or '-'}  {h.get('method') or ''}"
            + (f"  error: {h['error']}" if h.get("error") else "")
            for h in history
        )

    emit(args, {"history": history}, text)
    return EXIT_OK


def cmd_node_verify(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> dict[str, Any]:
        current = manager.store.current_version()
        problems: list[str] = []
        checked = []
        for info in manager.store.installed_versions():  # every tree, not just current
            checked.append(info.version)
            problems += [
                p if info.version in p else f"{info.version}: {p}"
                for p in manager.store.verify_installed(info.version)
            ]
        return {"current_version": current, "checked": checked, "ok": not problems,
                "problems": problems}  # fmt: skip

    result = _with_manager(args, work, local=True)
    emit(
        args,
        result,
        "verified: installed trees match their manifests"
        if result["ok"]
        else "\n".join(["problems:", *result["problems"]]),
    )
    if not result["ok"]:
        sys.stderr.write(
            f"blackhole-sync: {len(result['problems'])} problem(s) in installed trees\n"
        )
        return EXIT_SECURITY
    return EXIT_OK


def cmd_node_prune(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> list[str]:
        # the operator's count is the whole count: the rollback target is not kept extra
        removed: list[str] = manager.store.prune(args.keep, keep_rollback_target=False)
        return removed

    removed = _with_manager(args, work, local=True)
    emit(
        args,
        {"removed": removed},
        f"removed: {', '.join(removed)}" if removed else "nothing to prune",
    )
    return EXIT_OK


def _pending_version(manager: UpdateManager) -> str:
    available = manager.get_update_status().available
    if not available:
        raise ConflictError("no update is pending: run 'node check' first")
    return str(available[-1])


def cmd_node_confirm(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> dict[str, Any]:
        version = args.version or _pending_version(manager)
        manager.policy_state().confirm(version)
        return {"confirmed": version}

    result = _with_manager(args, work, local=True)
    emit(args, result, f"confirmed {result['confirmed']}: the agent installs it on its next check")
    return EXIT_OK


def cmd_node_defer(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> dict[str, Any]:
        version = args.version or _pending_version(manager)
        count = manager.policy_state().defer(version, manager.config.update_policy())
        return {"deferred": version, "count": count}

    result = _with_manager(args, work, local=True)
    emit(args, result, f"deferred {result['deferred']} ({result['count']} time(s))")
    return EXIT_OK


# -- the parsers ------------------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    node = add_group(sub, "node", "node operations")
    p = add_command(node, "init", cmd_node_init, "initialise a node directory", json_flag=True)
    p.add_argument("node")
    p.add_argument("--trust", required=True, metavar="ROOT.json")
    p.add_argument("--source", action="append", required=True, metavar="URL")
    p.add_argument("--channel", default="stable")
    p.add_argument("--region")
    p.add_argument("--node-type")
    p = add_command(node, "serve", cmd_node_serve, "serve the node's verified holdings as a mirror")
    p.add_argument("node")
    add_server_flags(p)
    p = add_command(
        node, "check", cmd_node_check, "fetch and verify metadata; list updates", json_flag=True
    )
    p.add_argument("node")
    p = add_command(
        node,
        "update",
        cmd_node_update,
        "install now (overrides the policy's window)",
        json_flag=True,
    )
    p.add_argument("node")
    p.add_argument("--version", type=semver_arg)
    p.add_argument("--no-delta", action="store_true", help="download full artifacts only")
    p = add_command(
        node, "status", cmd_node_status, "the node's versions and state", json_flag=True
    )
    p.add_argument("node")
    p = add_command(
        node,
        "rollback",
        cmd_node_rollback,
        "go back to the previous (or a given) version",
        json_flag=True,
    )
    p.add_argument("node")
    p.add_argument("--version", type=semver_arg)
    p = add_command(
        node, "history", cmd_node_history, "install and rollback history", json_flag=True
    )
    p.add_argument("node")
    p = add_command(node, "run", cmd_node_run, "the update agent: follows the policy until stopped")
    p.add_argument("node")
    p.add_argument("--once", action="store_true", help="one check-and-act cycle, then exit")
    p.add_argument(
        "--interval", type=positive_int, metavar="SECONDS", help="override check_interval"
    )
    p = add_command(
        node,
        "confirm",
        cmd_node_confirm,
        "approve a pending update (manual policy)",
        json_flag=True,
    )
    p.add_argument("node")
    p.add_argument("--version", type=semver_arg)
    p = add_command(
        node, "defer", cmd_node_defer, "defer a pending update (manual policy)", json_flag=True
    )
    p.add_argument("node")
    p.add_argument("--version", type=semver_arg)
    p = add_command(
        node,
        "verify",
        cmd_node_verify,
        "re-hash installed trees against their manifests",
        json_flag=True,
    )
    p.add_argument("node")
    p = add_command(
        node, "prune", cmd_node_prune, "drop old versions and rollback points", json_flag=True
    )
    p.add_argument("node")
    p.add_argument("--keep", type=positive_int, required=True)
