"""``blackhole-sync node ...``: a node directory -- initialise, check, update, roll back, run.

Every command opens the node through :class:`~blackhole_sync.manager.UpdateManager`. Commands
that only read or change local state (``status``, ``history``, ``verify``, ``prune``,
``confirm``, ``defer``) open it with the built-in plugins only and without an event loop
(``with``, not ``async with``): they fetch nothing and run no hooks, so neither third-party
transports (and their network stacks) nor anyio and asyncio are even imported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
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
    download_progress,
    emit,
    missing_file,
    node_dir as _node_dir,
    positive_int,
    semver_arg,
)
from .serve import add_server_flags, serve_directory

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
    "node_sources",
]

_T = TypeVar("_T")


def _with_manager(
    args: argparse.Namespace,
    work: Callable[[UpdateManager], Awaitable[_T]],
    **options: Any,
) -> _T:
    """Open the node's manager, run ``work`` with it, close it.

    Downloads show their progress on stderr when it is a terminal (never with ``--json``)."""
    import anyio

    from ..manager import UpdateManager

    node = _node_dir(args)
    progress = download_progress(args)

    async def run() -> _T:
        async with UpdateManager(node, progress=progress, **options) as manager:
            return await work(manager)

    try:
        return anyio.run(run)
    finally:
        if progress is not None:
            progress.close()


def _with_local_manager(
    args: argparse.Namespace, work: Callable[[UpdateManager], _T], **options: Any
) -> _T:
    """Open the node's manager for its local state only (built-in plugins, no transports, no
    event loop), run ``work`` with it, close it."""
    from ..fetch import make_plugin_manager
    from ..manager import UpdateManager

    node = _node_dir(args)
    plugins = make_plugin_manager(load_entrypoints=False)
    with UpdateManager(node, plugins=plugins, **options) as manager:
        return work(manager)


# -- set up and serve -----------------------------------------------------------------------------


#: A bare ``HOST:PORT`` (or ``HOST:PORT/path``): an URL without its scheme, not a path.
_HOST_PORT = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):\d{1,5}(?:/.*)?$"
)
#: ``scheme://...``; the scheme picks the transport plugin.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _missing_scheme(scheme: str, plugins: Any) -> str:
    """Why ``scheme`` has no transport: the package to install, and any plugin that failed."""
    from ..errors import MissingPluginError
    from ..fetch.transport import Locator, pick_spec

    try:
        pick_spec(plugins.transport_specs(), Locator.url(f"{scheme}://x"))
    except MissingPluginError as exc:
        message = str(exc)
    else:  # pragma: no cover - only called for schemes no spec handles
        message = f"no transport plugin handles {scheme!r} locators"
    if "install" not in message:
        message += (
            "; install the plugin that provides it "
            "('blackhole-sync plugins list' shows those installed)"
        )
    failed = [f"{f.name} ({f.error})" for f in plugins.failures]
    if failed:
        message += f"; plugins that failed to load: {', '.join(failed)}"
    return message


def node_sources(values: list[str]) -> list[str]:
    """``--source`` values as section 6 has them: an URL of any scheme a registered transport
    handles (unknown: exit 2 naming the plugin to install), or a path that exists (else
    exit 1; stored absolute). A bare ``HOST:PORT`` is exit 2 with the URL it probably means.
    Touches no network: plugins are loaded, none is started."""
    from ..fetch import make_plugin_manager

    plugins = None
    sources = []
    for source in values:
        match = _URL.match(source)
        if match:
            scheme = match.group(1).lower()
            if scheme == "file":
                from ..fetch import url_to_path

                try:
                    path = url_to_path(source)
                except ValueError as exc:
                    raise UsageError(f"--source {source}: {exc}") from None
                if not os.path.exists(path):
                    raise missing_file(path, "--source")
                sources.append(source)
                continue
            if plugins is None:
                plugins = make_plugin_manager(load_entrypoints=True)
            if not any(scheme in spec.schemes for spec in plugins.transport_specs()):
                raise UsageError(f"--source {source}: {_missing_scheme(scheme, plugins)}")
            sources.append(source)
        elif _HOST_PORT.match(source):
            raise UsageError(
                f"--source {source}: a host and port without a scheme; "
                f"did you mean http://{source}? (write ./{source} for a directory of that name)"
            )
        elif not source:
            raise UsageError("--source: empty")
        else:
            if not os.path.exists(source):
                raise missing_file(source, "--source")
            sources.append(os.path.abspath(source))
    return sources


def _root_file(path: str) -> bytes:
    """The bytes of ``--trust ROOT.json``: a missing file is exit 1, a key file exit 2."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise missing_file(path, "--trust") from None
    except OSError as exc:
        raise ConfigurationError(f"--trust {path}: cannot read it: {exc.strerror}") from exc
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data  # not JSON: the strict parser refuses it (exit 3)
    if (
        isinstance(obj, dict)
        and "signed" not in obj
        and ("keytype" in obj or path.endswith(".pub"))
    ):
        raise UsageError(
            f"--trust {path}: this is a key file; --trust takes the repository's root "
            "document (REPO/root.json, written by 'blackhole-sync repo init')"
        )
    return data


def cmd_node_init(args: argparse.Namespace) -> int:
    from ..documents import TrustedState
    from ..manager import init_node

    node = Path(args.node)
    if (node / "state.db").exists() or (node / "config.toml").exists():
        raise ConflictError(f"{node} is already a node")
    root_bytes = _root_file(args.trust)
    sources = node_sources(args.source)
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
    # HTTP only: a node's peer-to-peer side (seeding, pinning, gossip) is its agent's job
    return serve_directory(result.path, args)


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
            "yanked": status.yanked,
            "not_installable": [
                {"version": v, "reason": r} for v, r in manager.not_installable.items()
            ],
        }

    result = _with_manager(args, work)

    def text() -> str:
        lines = _yank_lines(result["yanked"])
        lines += [f"cannot install: {n['reason']}" for n in result["not_installable"]]
        if not result["available"]:
            if result["yanked"] is not None:
                return "\n".join([*lines, "no newer release to move to"])
            current = result["current_version"] or "nothing installed"
            return "\n".join([*lines, f"up to date ({current})"])
        lines += [f"current: {result['current_version'] or 'none'}", "available:"]
        for info in result["available"]:
            lines.append(
                f"  {info['version']} ({info['type']}{', critical' if info['critical'] else ''})"
            )
        return "\n".join(lines)

    emit(args, result, text)
    return EXIT_OK


def _yank_lines(yanked: dict[str, str] | None) -> list[str]:
    """The warning about a withdrawn running version (check, update, status)."""
    if yanked is None:
        return []
    reason = yanked["reason"] or "no reason given"
    return [f"warning: the running version {yanked['version']} was withdrawn: {reason}"]


def _update_result_keys() -> list[str]:
    """The keys of an update's JSON (``UpdateResult.to_dict``), for the "up to date" case."""
    from ..protocols import UpdateResult

    return list(UpdateResult("", None, "", 0, 0.0).to_dict())


def cmd_node_update(args: argparse.Namespace) -> int:
    async def work(manager: UpdateManager) -> dict[str, Any]:
        started = time.monotonic()
        before = manager.store.current_version()
        result = await manager.update(args.version)
        if result is None:
            # the same keys as an update (docs/cli.rst): nothing fetched, nothing changed
            return {
                **dict.fromkeys(_update_result_keys()),
                "updated": False,
                "current_version": before,
                "version": before,
                "previous": before,
                "method": None,
                "method_reason": "",
                "bytes_fetched": 0,
                "duration_s": round(time.monotonic() - started, 3),
            }
        return {"updated": True, "current_version": result.version, **result.to_dict()}

    async def timed(manager: UpdateManager) -> dict[str, Any]:
        out = await work(manager)
        out["yanked"] = manager.current_withdrawal()
        # download and install times beside the whole command's (docs/cli.rst)
        metrics = manager.metrics if out["updated"] else None
        download = metrics.download_duration if metrics is not None else None
        install = metrics.installation_duration if metrics is not None else None
        out["download_s"] = round(download or 0.0, 3)
        out["install_s"] = round(install or 0.0, 3)
        return out

    command_started = time.monotonic()
    result = _with_manager(args, timed, deltas=False if args.no_delta else None)
    result["duration_s"] = round(time.monotonic() - command_started, 3)
    if result["updated"]:
        text = (
            f"updated {result['previous'] or 'nothing'} -> {result['version']} "
            f"({result['method']}, {result['bytes_fetched']} bytes fetched)"
        )
        if result.get("method_reason"):
            text += f"\nwhy not by delta: {result['method_reason']}"
    elif result["yanked"] is not None:
        text = "no newer release to move to"
    else:
        text = f"already up to date ({result['current_version'] or 'nothing installed'})"
    emit(args, result, "\n".join([*_yank_lines(result["yanked"]), text]))
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


def _coordination_lines(coordination: dict[str, Any] | None) -> list[str]:
    """Pending protocol activations, halts and deprecation warnings, for ``node status``."""
    if not coordination or "error" in coordination:
        return []
    lines = []
    for act in coordination.get("pending_activations", []):
        when = f"height {act['height']}" if act["height"] is not None else act["time"]
        lines.append(
            f"pending activation: {act['release']} (proposal {act['proposal']}) at {when}"
        )
    for release, reason in coordination.get("halts", {}).items():
        lines.append(f"rollout halted:     {release}: {reason}")
    for warning in coordination.get("deprecations", []):
        soon = " (a release without it is out)" if warning["imminent"] else ""
        lines.append(
            f"deprecated:         {warning['feature']}, removed in {warning['remove_in']}: "
            f"{warning['message']}{soon}"
        )
    return lines


def cmd_node_status(args: argparse.Namespace) -> int:
    def work(manager: UpdateManager) -> dict[str, Any]:
        status: dict[str, Any] = manager.get_update_status().to_dict()
        return status

    status = _with_local_manager(args, work, read_only=True)

    def text() -> str:
        lines = [
            f"current version:    {status['current_version'] or 'none'}",
            f"installed versions: {', '.join(status['installed_versions']) or 'none'}",
            f"available:          {', '.join(status['available']) or 'none'}",
            f"channel:            {status['channel']}",
            f"node public key:    {status['node_public_key']}",
        ]
        if status["held_versions"]:
            lines.append(
                f"held:               {', '.join(status['held_versions'])} (rolled back from; "
                "not reinstalled automatically: `node confirm --version V` releases one)"
            )
        pending = status["pending"]
        if pending is not None:
            when = f" until {pending['not_before']}" if pending["not_before"] else ""
            lines.append(
                f"pending:            {pending['version']}: {pending['action']}{when} "
                f"({pending['reason']})"
            )
        for failure in status["plugin_failures"]:
            lines.append(f"plugin not loaded:  {failure['name']}: {failure['error']}")
        for name, report in sorted((status.get("transports") or {}).items()):
            if isinstance(report.get("summary"), str):
                lines.append(f"{name + ':':<19} {report['summary'][:200]}")
        lines.extend(_coordination_lines(status.get("coordination")))
        return "\n".join([*_yank_lines(status["yanked"]), *lines])

    emit(args, status, text)
    return EXIT_OK


def cmd_node_history(args: argparse.Namespace) -> int:
    def work(manager: UpdateManager) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = manager.store.history()
        return history

    history = _with_local_manager(args, work, read_only=True)

    def text() -> str:
        if not history:
            return "no history"
        return "\n".join(
            f"{h.get('time', '')}  {h.get('action', '')}  {h.get('from_version') or '-'} -> "
            f"{h.get('to_version') or '-'}  {h.get('method') or ''}"
            + (f"  error: {h['error']}" if h.get("error") else "")
            + (f"  ({h['note']})" if h.get("note") else "")
            for h in history
        )

    emit(args, {"history": history}, text)
    return EXIT_OK


def cmd_node_verify(args: argparse.Namespace) -> int:
    def work(manager: UpdateManager) -> dict[str, Any]:
        current = manager.store.current_version()
        # what `current` points at, not what its name says
        problems: list[str] = manager.store.verify_current()
        checked = []
        for info in manager.store.installed_versions():  # every tree, not just current
            checked.append(info.version)
            problems += [
                p if info.version in p else f"{info.version}: {p}"
                for p in manager.store.verify_installed(info.version)
            ]
        return {"current_version": current, "checked": checked, "ok": not problems,
                "problems": problems}  # fmt: skip

    result = _with_local_manager(args, work, read_only=True)
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
    def work(manager: UpdateManager) -> dict[str, Any]:
        keep = args.keep if args.keep is not None else manager.config.keep_versions
        # the operator's count is the whole count: the rollback target is not kept extra
        removed: list[str] = manager.store.prune(
            keep, keep_rollback_target=False, dry_run=args.dry_run
        )
        return {"removed": removed, "keep": keep, "dry_run": args.dry_run}

    result = _with_local_manager(args, work, read_only=args.dry_run)
    removed = result["removed"]
    verb = "would remove" if args.dry_run else "removed"
    emit(
        args,
        result,
        f"{verb}: {', '.join(removed)} (keeping {result['keep']})"
        if removed
        else f"nothing to prune (keeping {result['keep']})",
    )
    return EXIT_OK


def _pending_version(manager: UpdateManager) -> str:
    available = manager.get_update_status().available
    if not available:
        raise ConflictError("no update is pending: run 'node check' first")
    return str(available[-1])


def cmd_node_confirm(args: argparse.Namespace) -> int:
    def work(manager: UpdateManager) -> dict[str, Any]:
        version = args.version or _pending_version(manager)
        manager.policy_state().confirm(version)
        released = manager.release_hold(version)
        pending = manager.pending_decision(version)
        return {"confirmed": version, "released_hold": released, "next": pending}

    result = _with_local_manager(args, work)
    pending = result["next"]
    if pending is None or pending["action"] == "install":
        when = "the agent installs it on its next check"
    elif pending["not_before"]:
        when = f"the agent installs it from {pending['not_before']} ({pending['reason']})"
    else:
        when = f"not installed yet: {pending['reason']}"
    emit(args, result, f"confirmed {result['confirmed']}: {when}")
    return EXIT_OK


def cmd_node_defer(args: argparse.Namespace) -> int:
    def work(manager: UpdateManager) -> dict[str, Any]:
        version = args.version or _pending_version(manager)
        count = manager.policy_state().defer(version, manager.config.update_policy())
        return {"deferred": version, "count": count}

    result = _with_local_manager(args, work)
    emit(args, result, f"deferred {result['deferred']} ({result['count']} time(s))")
    return EXIT_OK


# -- the parsers ------------------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    node = add_group(sub, "node", "node operations")
    p = add_command(node, "init", cmd_node_init, "initialise a node directory", json_flag=True)
    p.add_argument("node", metavar="NODE", help="the node directory")
    p.add_argument(
        "--trust",
        required=True,
        metavar="ROOT.json",
        help="the repository's root document (REPO/root.json): the node trusts its keys",
    )
    p.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="URL",
        help="where the repository is served: an URL of any installed transport's scheme "
        "(http://, https://, file://...) or a directory path",
    )
    p.add_argument("--channel", default="stable", help="the release channel to follow")
    p.add_argument("--region", help="this node's region (selects regional configuration)")
    p.add_argument("--node-type", help="this node's type (selects node-type configuration)")
    p = add_command(node, "serve", cmd_node_serve, "serve the node's verified holdings as a mirror")
    p.add_argument("node", metavar="NODE", help="the node directory")
    add_server_flags(p)
    p = add_command(
        node, "check", cmd_node_check, "fetch and verify metadata; list updates", json_flag=True
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p = add_command(
        node,
        "update",
        cmd_node_update,
        "install now (overrides the policy's window)",
        json_flag=True,
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p.add_argument(
        "--version",
        type=semver_arg,
        metavar="V",
        help="install this version (default: the newest the policy allows); "
        "below the current one: exit 3",
    )
    p.add_argument("--no-delta", action="store_true", help="download full artifacts only")
    p = add_command(
        node, "status", cmd_node_status, "the node's versions and state", json_flag=True
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p = add_command(
        node,
        "rollback",
        cmd_node_rollback,
        "go back to the previous (or a given) version",
        json_flag=True,
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p.add_argument(
        "--version",
        type=semver_arg,
        metavar="V",
        help="the installed version to go back to (default: the previous one)",
    )
    p = add_command(
        node, "history", cmd_node_history, "install and rollback history", json_flag=True
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p = add_command(node, "run", cmd_node_run, "the update agent: follows the policy until stopped")
    p.add_argument("node", metavar="NODE", help="the node directory")
    p.add_argument("--once", action="store_true", help="one check-and-act cycle, then exit")
    p.add_argument(
        "--interval",
        type=positive_int,
        metavar="SECONDS",
        help="seconds between checks (default: check_interval in config.toml)",
    )
    p = add_command(
        node,
        "confirm",
        cmd_node_confirm,
        "approve a pending update (manual policy)",
        json_flag=True,
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p.add_argument(
        "--version",
        type=semver_arg,
        metavar="V",
        help="the version to approve (default: the newest pending one)",
    )
    p = add_command(
        node, "defer", cmd_node_defer, "defer a pending update (manual policy)", json_flag=True
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p.add_argument(
        "--version",
        type=semver_arg,
        metavar="V",
        help="the version to defer (default: the newest pending one)",
    )
    p = add_command(
        node,
        "verify",
        cmd_node_verify,
        "re-hash installed trees against their manifests",
        json_flag=True,
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p = add_command(
        node, "prune", cmd_node_prune, "drop old versions and rollback points", json_flag=True
    )
    p.add_argument("node", metavar="NODE", help="the node directory")
    p.add_argument(
        "--keep",
        type=positive_int,
        default=None,
        metavar="N",
        help="how many installed versions to keep, the current one included "
        "(default: keep_versions in config.toml)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="only list what would be removed; change nothing"
    )
    from .governance import add_node_vote

    add_node_vote(node)
