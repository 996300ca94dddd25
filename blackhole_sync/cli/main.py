"""The ``blackhole-sync`` command (ARCHITECTURE.md section 6).

Exit status: 0 success (also "already up to date"), 1 other failure, 2 usage error, 3 refused
for a security reason (signature, threshold, rollback, expiry, hash or length mismatch, path).
Errors are one line on stderr; ``--debug`` (before the subcommand) adds the traceback. Every
command that reads state accepts ``--json`` after the subcommand and then prints one JSON
object on stdout. A flag that takes several values is repeated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio

from .. import __version__
from ..documents import (
    PrivateKey,
    PublicKey,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from ..errors import (
    BlackholeSyncError,
    ConfigurationError,
    ConflictError,
    FormatError,
    MissingPluginError,
    SecurityError,
)

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_SECURITY", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SECURITY = 3

log = logging.getLogger("blackhole_sync.cli")


class UsageError(Exception):
    """Bad arguments (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix('blackhole-sync ')}: {message}")


# -- argument helpers --------------------------------------------------------------------------


def _public_key(path: str) -> PublicKey:
    try:
        return load_public_key(path)
    except FormatError as exc:
        raise UsageError(str(exc)) from exc


def _private_key(path: str) -> PrivateKey:
    try:
        return load_private_key(path)
    except FormatError as exc:
        raise UsageError(str(exc)) from exc


def _recipient(value: str) -> PublicKey:
    """A node public key: a .pub file, or the hex that `node status --json` prints."""
    if (
        len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
        and not os.path.exists(value)
    ):
        try:
            return PublicKey.from_hex(value)
        except FormatError as exc:
            raise UsageError(str(exc)) from exc
    return _public_key(value)


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
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


_positive_int = _int_in(1)
_nonneg_int = _int_in(0)
_bp = _int_in(0, 10_000)  # basis points
_port = _int_in(0, 65_535)


def _semver(value: str) -> str:
    """A release version argument: semver without build metadata, else a usage error."""
    from ..documents import parse_version

    try:
        return parse_version(value, "version")
    except FormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _emit(args: argparse.Namespace, obj: dict[str, Any], text: str | Callable[[], str]) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    else:
        out = text() if callable(text) else text
        if out:
            sys.stdout.write(out + ("" if out.endswith("\n") else "\n"))
    sys.stdout.flush()


# -- key -----------------------------------------------------------------------------------------


def cmd_key_generate(args: argparse.Namespace) -> int:
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


# -- repo / release --------------------------------------------------------------------------------


def _repo(path: str) -> Any:
    from ..release import Repository

    return Repository.open(Path(path))


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
        root_keys=[_public_key(p) for p in args.root_key],
        root_threshold=args.root_threshold,
        release_keys=[_public_key(p) for p in args.release_key],
        release_threshold=args.release_threshold,
        index_key=_public_key(args.index_key),
        governance_keys=[_public_key(p) for p in args.governance_key or ()],
        governance_threshold=args.governance_threshold,
        sign_with=[_private_key(p) for p in args.sign_with],
        **optional,
    )
    _emit(args, {"repo": args.repo, "root_version": 1}, f"initialised repository {args.repo}")
    return EXIT_OK


def cmd_repo_rotate(args: argparse.Namespace) -> int:
    repo = _repo(args.repo)
    root = repo.rotate(
        sign_with=[_private_key(p) for p in args.sign_with],
        root_keys=[_public_key(p) for p in args.root_key] if args.root_key else None,
        root_threshold=args.root_threshold,
        release_keys=[_public_key(p) for p in args.release_key] if args.release_key else None,
        release_threshold=args.release_threshold,
        index_key=_public_key(args.index_key) if args.index_key else None,
        governance_keys=[_public_key(p) for p in args.governance_key]
        if args.governance_key
        else None,
        governance_threshold=args.governance_threshold,
        revoke=args.revoke or (),
        root_expires_days=args.root_expires,
    )
    version = getattr(root, "version", None)
    stranded = repo.unverifiable_releases()
    if stranded:
        sys.stderr.write(
            "blackhole-sync: warning: published release(s) "
            f"{', '.join(stranded)} no longer meet the release threshold under root "
            f"v{version}; nodes will refuse them: withdraw them (release yank) and publish "
            "new versions\n"
        )
    _emit(
        args,
        {"root_version": version, "unverifiable_releases": stranded},
        f"root rotated to version {version}",
    )
    return EXIT_OK


def cmd_repo_refresh(args: argparse.Namespace) -> int:
    index = _repo(args.repo).refresh(_private_key(args.index_key))
    version = getattr(index, "version", None)
    _emit(args, {"index_version": version}, f"index re-signed as version {version}")
    return EXIT_OK


def _split_unpack(args: argparse.Namespace) -> list[Path]:
    artifacts = [Path(p) for p in args.artifact]
    if args.unpack is None:
        return []
    marks = args.unpack
    if "*" in marks:
        return [p for p in artifacts if _is_archive(p)]
    by_name = {p.name: p for p in artifacts}
    out = []
    for mark in marks:
        if mark in by_name:
            out.append(by_name[mark])
            continue
        match = [p for p in artifacts if os.path.abspath(p) == os.path.abspath(mark)]
        if not match:
            raise UsageError(f"--unpack {mark}: not one of the --artifact files")
        out.extend(match)
    return out


def _command(text: str | None, flag: str, timeout: int, window: int | None) -> Any:
    from ..documents import Command

    if not text:
        return None
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc
    if not argv:
        raise UsageError(f"{flag}: empty command")
    return Command(tuple(argv), timeout=timeout, window=window or None)


def _config_value(text: str) -> Any:
    """A --config value: JSON when it parses strictly (no floats), else the plain string."""
    from ..documents import strict_loads

    try:
        return strict_loads(text.encode(), max_size=64 * 1024)
    except FormatError:
        if text[:1] in '[{"' or text.replace(".", "", 1).lstrip("-").isdigit():
            raise UsageError(
                f"--config value {text!r}: JSON without floats, or a plain string"
            ) from None
        return text


def _typed_update_options(args: argparse.Namespace) -> dict[str, Any]:
    """Manifest parts for configuration, schema and protocol updates from the flags."""
    from ..documents import (
        Compatibility,
        ConfigChange,
        Migration,
        ProtocolInfo,
        SchemaInfo,
        parse_time,
    )

    out: dict[str, Any] = {}
    if args.config:
        if args.config_scope != "global" and not args.config_selector:
            raise UsageError(f"--config-scope {args.config_scope} needs --config-selector")
        effective = None
        if args.effective:
            try:
                effective = parse_time(args.effective, "--effective")
            except FormatError as exc:
                raise UsageError(str(exc)) from exc
        changes = []
        for item in args.config:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--config {item!r}: expected KEY=VALUE")
            try:
                changes.append(
                    ConfigChange(
                        key,
                        _config_value(value),
                        scope=args.config_scope,
                        selector=args.config_selector if args.config_scope != "global" else None,
                        effective=effective,
                        rollback_window=args.rollback_window,
                    )
                )
            except (TypeError, ValueError) as exc:
                raise UsageError(f"--config {item!r}: {exc}") from exc
        out["config_changes"] = changes
    if args.migration:
        migrations = []
        for i, path in enumerate(args.migration):
            try:
                sql = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"--migration {path}: {exc.strerror}") from exc
            start = args.schema_from + i
            migrations.append(Migration(Path(path).stem, start, start + 1, sql))
        out["migrations"] = migrations
        out["schema"] = SchemaInfo(args.schema_from, args.schema_from + len(migrations))
    if args.protocol_version is not None:
        out["protocol"] = ProtocolInfo(
            args.protocol_version,
            breaking=args.breaking,
            migration_required=args.protocol_migration_required,
            consensus_threshold_bp=args.consensus_threshold,
            activation_height=args.activation_height,
        )
    if args.min_from_version or args.protocol_version is not None:
        out["compatibility"] = Compatibility(
            min_from_version=args.min_from_version,
            protocol_versions=(args.protocol_version,) if args.protocol_version is not None else (),
        )
    return out


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".zip"))


def cmd_release_build(args: argparse.Namespace) -> int:
    from ..documents import Command

    if not args.artifact and args.type == "binary":
        raise UsageError("a binary release needs at least one --artifact")
    if args.min_from_version:
        from ..documents import parse_version

        try:
            parse_version(args.min_from_version, "--min-from-version")
        except FormatError as exc:
            raise UsageError(str(exc)) from exc
    names = [Path(p).name for p in args.artifact]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"two artifacts named {dupes[0]!r}: artifact names are file basenames")
    for path in args.artifact:
        if not os.path.exists(path):
            raise UsageError(f"--artifact {path}: no such file")
    delta_from: Any
    if not args.delta_from or args.delta_from == ["auto"]:
        delta_from = "auto"
    elif args.delta_from == ["none"]:
        delta_from = None
    else:
        if "auto" in args.delta_from or "none" in args.delta_from:
            raise UsageError("--delta-from auto/none cannot be combined with versions")
        delta_from = list(args.delta_from)
    self_test = _command(args.self_test, "--self-test", args.health_timeout, None)
    health = _command(args.health, "--health", args.health_timeout, args.health_window)
    options: dict[str, Any] = {
        "update_type": args.type,
        "channel": args.channel,
        "critical": args.critical,
        "priority": args.priority,
        "delta_from": delta_from,
        "encrypt_to": [_recipient(v) for v in args.encrypt_to or ()],
        "unpack": _split_unpack(args),
        "platform": args.platform,
        "arch": args.arch,
        "self_test": self_test,
        "health": health,
        "notes": args.notes or "",
        **_typed_update_options(args),
    }
    repo = _repo(args.repo)
    artifacts = [Path(p) for p in args.artifact]
    if (self_test or health) and not args.no_sandbox:
        # The release's own checks run in a scratch sandbox before the draft is kept.
        from ..node import run_sandbox_test

        async def sandbox(tree: Path, command: Command) -> None:
            await run_sandbox_test(tree, None, command)

        async def build() -> Any:
            return await repo.abuild_release(args.version, artifacts, sandbox=sandbox, **options)

        manifest = anyio.run(build)
    else:
        manifest = repo.build_release(args.version, artifacts, **options)
    summary = {
        "version": manifest.version,
        "type": manifest.type,
        "channel": manifest.channel,
        "artifacts": [
            {"name": a.name, "length": a.length, "sha256": a.sha256, "mode": oct(a.mode)}
            for a in manifest.artifacts
        ],
        "deltas": [
            {
                "artifact": d.artifact,
                "member": d.member,
                "from_version": d.from_version,
                "patch_length": d.patch.length,
                "codec": d.codec,
            }
            for d in manifest.deltas
        ],
    }
    _emit(
        args,
        summary,
        f"built draft {manifest.version}: {len(manifest.artifacts)} artifact(s), "
        f"{len(manifest.deltas)} delta(s); now sign it with the release keys",
    )
    return EXIT_OK


def cmd_release_sign(args: argparse.Namespace) -> int:
    added = _repo(args.repo).sign_release(args.version, _private_key(args.key))
    _emit(
        args,
        {"version": args.version, "added": bool(added)},
        f"signed {args.version}" if added else f"{args.version} already carries this signature",
    )
    return EXIT_OK


def cmd_release_publish(args: argparse.Namespace) -> int:
    index = _repo(args.repo).publish_release(args.version, _private_key(args.index_key))
    version = getattr(index, "version", None)
    _emit(
        args,
        {"version": args.version, "index_version": version},
        f"published {args.version} (index version {version})",
    )
    return EXIT_OK


def cmd_release_yank(args: argparse.Namespace) -> int:
    index = _repo(args.repo).yank(
        args.version, _private_key(args.index_key), reason=args.reason or ""
    )
    version = getattr(index, "version", None)
    _emit(
        args,
        {"version": args.version, "index_version": version},
        f"withdrew {args.version} (index version {version})",
    )
    return EXIT_OK


def cmd_release_list(args: argparse.Namespace) -> int:
    releases = _repo(args.repo).list_releases()

    def text() -> str:
        if not releases:
            return "no releases"
        lines = []
        for r in releases:
            lines.append(
                f"{r.get('version')}\t{r.get('channel', '')}\t{r.get('type', '')}\t{r.get('state', '')}"
                + ("\tcritical" if r.get("critical") else "")
            )
        return "\n".join(lines)

    _emit(args, {"releases": releases}, text)
    return EXIT_OK


def cmd_release_show(args: argparse.Namespace) -> int:
    info = _repo(args.repo).show_release(args.version)
    _emit(args, info, lambda: json.dumps(info, indent=2, sort_keys=True))
    return EXIT_OK


# -- serve -----------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from ..fetch import make_plugin_manager

    repo = Path(args.repo)
    if not (repo / "root.json").is_file():
        raise ConfigurationError(f"{repo} is not a repository (no root.json)")
    pm = make_plugin_manager(load_entrypoints=True)
    server = pm.hook.blackhole_sync_server()
    if server is None:
        raise MissingPluginError(
            "no plugin provides 'serve': install blackhole-sync-http (pip install 'blackhole-sync[http]')"
        )

    def ready(url: str) -> None:
        print(url, flush=True)

    async def run() -> None:
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_signals)
            tls = {
                k: v
                for k, v in (
                    ("tls_cert", args.tls_cert),
                    ("tls_key", args.tls_key),
                    ("tls_client_ca", args.tls_client_ca),
                )
                if v
            }
            await server.serve(repo, args.host, args.port, ready=ready, **tls)
            tg.cancel_scope.cancel()

    anyio.run(run)
    return EXIT_OK


# -- node --------------------------------------------------------------------------------------------


def _manager(args: argparse.Namespace, **kwargs: Any) -> Any:
    from ..manager import UpdateManager

    node = Path(args.node)
    if not (node / "state.db").exists() or not (node / "config.toml").exists():
        raise ConfigurationError(f"{node} is not a node directory (run 'blackhole-sync node init')")
    return UpdateManager(node, progress=_progress_printer(args), **kwargs)


def _progress_printer(args: argparse.Namespace) -> Callable[[Any], None] | None:
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


def cmd_node_serve(args: argparse.Namespace) -> int:
    """Serve the node's verified holdings to its neighbours (the edge cache)."""
    from ..mirror import export_mirror

    node = Path(args.node)
    if not (node / "state.db").exists():
        raise ConfigurationError(f"{node} is not a node directory (run 'blackhole-sync node init')")
    result = export_mirror(node)
    sys.stderr.write(
        f"blackhole-sync: serving {result.documents} document(s) and {result.blobs} blob(s)\n"
    )
    args.repo = str(result.path)
    return cmd_serve(args)


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
    _emit(
        args,
        {"node": str(node), "node_public_key": key.public_key.hex, "root_version": root_version},
        f"initialised node {node} (public key {key.public_key.hex})",
    )
    return EXIT_OK


def cmd_node_check(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _manager(args) as manager:
            infos = await manager.check_for_updates()
            status = manager.get_update_status()
            return {
                "current_version": status.current_version,
                "available": [i.to_dict() for i in infos],
                "update_available": bool(infos),
                "index_version": status.index_version,
                "root_version": status.root_version,
            }

    result = anyio.run(run)

    def text() -> str:
        if not result["available"]:
            return f"up to date ({result['current_version'] or 'nothing installed'})"
        lines = [f"current: {result['current_version'] or 'none'}", "available:"]
        for info in result["available"]:
            lines.append(
                f"  {info['version']} ({info['type']}{', critical' if info['critical'] else ''})"
            )
        return "\n".join(lines)

    _emit(args, result, text)
    return EXIT_OK


def cmd_node_update(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _manager(args, deltas=False if args.no_delta else None) as manager:
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

    result = anyio.run(run)
    if result["updated"]:
        text = (
            f"updated {result['previous'] or 'nothing'} -> {result['version']} "
            f"({result['method']}, {result['bytes_fetched']} bytes fetched)"
        )
    else:
        text = f"already up to date ({result['current_version'] or 'nothing installed'})"
    _emit(args, result, text)
    return EXIT_OK


def cmd_node_status(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _manager(args) as manager:
            status: dict[str, Any] = manager.get_update_status().to_dict()
            return status

    status = anyio.run(run)

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

    _emit(args, status, text)
    return EXIT_OK


def cmd_node_rollback(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _manager(args) as manager:
            before = manager.store.current_version()
            target = await manager.rollback(args.version)
            return {"previous": before, "current_version": target}

    result = anyio.run(run)
    _emit(args, result, f"rolled back {result['previous']} -> {result['current_version']}")
    return EXIT_OK


def cmd_node_history(args: argparse.Namespace) -> int:
    async def run() -> list[dict[str, Any]]:
        async with _manager(args) as manager:
            history: list[dict[str, Any]] = manager.store.history()
            return history

    history = anyio.run(run)

    def text() -> str:
        if not history:
            return "no history"
        return "\n".join(
            f"{h.get('time', '')}  {h.get('action', '')}  {h.get('from_version') or '-'} -> "
            f"{h.get('to_version') or '-'}  {h.get('method') or ''}"
            + (f"  error: {h['error']}" if h.get("error") else "")
            for h in history
        )

    _emit(args, {"history": history}, text)
    return EXIT_OK


def cmd_node_verify(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _manager(args) as manager:
            current = manager.store.current_version()
            problems: list[str] = []
            checked = []
            for info in manager.store.installed_versions():  # every tree, not just current
                checked.append(info.version)
                problems += [
                    p if info.version in p else f"{info.version}: {p}"
                    for p in manager.store.verify_installed(info.version)
                ]
            return {
                "current_version": current,
                "checked": checked,
                "ok": not problems,
                "problems": problems,
            }

    result = anyio.run(run)
    _emit(
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
    async def run() -> list[str]:
        async with _manager(args) as manager:
            # the operator's count is the whole count: the rollback target is not kept extra
            removed: list[str] = manager.store.prune(args.keep, keep_rollback_target=False)
            return removed

    removed = anyio.run(run)
    _emit(
        args,
        {"removed": removed},
        f"removed: {', '.join(removed)}" if removed else "nothing to prune",
    )
    return EXIT_OK


def cmd_node_confirm(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _manager(args) as manager:
            version = args.version or _pending_version(manager)
            manager.policy_state().confirm(version)
            return {"confirmed": version}

    result = anyio.run(run)
    _emit(args, result, f"confirmed {result['confirmed']}: the agent installs it on its next check")
    return EXIT_OK


def cmd_node_defer(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _manager(args) as manager:
            version = args.version or _pending_version(manager)
            count = manager.policy_state().defer(version, manager.config.update_policy())
            return {"deferred": version, "count": count}

    result = anyio.run(run)
    _emit(args, result, f"deferred {result['deferred']} ({result['count']} time(s))")
    return EXIT_OK


def _pending_version(manager: Any) -> str:
    available = manager.get_update_status().available
    if not available:
        raise ConflictError("no update is pending: run 'node check' first")
    return str(available[-1])


def cmd_node_run(args: argparse.Namespace) -> int:
    from ..agent import run_agent

    node = Path(args.node)
    if not (node / "state.db").exists():
        raise ConfigurationError(f"{node} is not a node directory (run 'blackhole-sync node init')")
    anyio.run(lambda: run_agent(node, once=args.once, interval=args.interval))
    return EXIT_OK


# -- plugins / demo -------------------------------------------------------------------------------------


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from ..fetch import make_plugin_manager

    pm = make_plugin_manager(load_entrypoints=True)
    plugins = pm.describe()
    transports: list[dict[str, Any]] = [
        {
            "name": s.name,
            "schemes": sorted(s.schemes),
            "locator_kinds": sorted(s.locator_kinds),
            "backends": sorted(s.backends),
        }
        for s in pm.transport_specs()
    ]
    failures = [{"name": f.name, "error": f.error} for f in pm.failures]
    result = {"plugins": plugins, "transports": transports, "failed": failures}

    def text() -> str:
        lines = [f"{p['name']}  {p.get('distribution') or 'built-in'}" for p in plugins]
        lines += [
            f"transport {t['name']}: {', '.join(t['schemes'] + t['locator_kinds'])}"
            for t in transports
        ]
        lines += [f"FAILED {f['name']}: {f['error']}" for f in failures]
        return "\n".join(lines)

    _emit(args, result, text)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(workdir=Path(args.workdir) if args.workdir else None, keep=args.keep)


# -- the parser ----------------------------------------------------------------------------------------


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8080, help="0 picks a free port")
    p.add_argument("--tls-cert", metavar="PEM", help="serve https with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--tls-client-ca", metavar="PEM", help="require client certificates from this CA"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="blackhole-sync",
        description="Signed, atomic, peer-to-peer updates for Blackhole nodes.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"blackhole-sync {__version__}")
    sub = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)

    def add(
        group_parser: Any,
        name: str,
        func: Callable[[argparse.Namespace], int],
        help: str,
        *,
        json_flag: bool = False,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group_parser.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object")
        return p

    # key
    key = sub.add_parser("key", help="key management").add_subparsers(
        dest="cmd", required=True, parser_class=_Parser
    )
    p = add(key, "generate", cmd_key_generate, "write PATH (0600) and PATH.pub; print the key id")
    p.add_argument("path")

    # repo
    repo = sub.add_parser("repo", help="repository management").add_subparsers(
        dest="cmd", required=True, parser_class=_Parser
    )
    for name, func, help_text in (
        ("init", cmd_repo_init, "create a repository with its first root"),
        ("rotate", cmd_repo_rotate, "sign a new root version (old and new thresholds)"),
    ):
        p = add(repo, name, func, help_text, json_flag=True)
        p.add_argument("repo")
        required = name == "init"
        p.add_argument("--root-key", action="append", required=required, metavar="PUB")
        p.add_argument("--root-threshold", type=_positive_int, required=required)
        p.add_argument("--release-key", action="append", required=required, metavar="PUB")
        p.add_argument("--release-threshold", type=_positive_int, required=required)
        p.add_argument("--index-key", required=required, metavar="PUB")
        p.add_argument("--governance-key", action="append", metavar="PUB")
        p.add_argument("--governance-threshold", type=_positive_int)
        p.add_argument("--root-expires", type=_positive_int, metavar="DAYS")
        p.add_argument("--sign-with", action="append", required=True, metavar="KEY")
        if name == "init":
            p.add_argument("--index-expires", type=_positive_int, metavar="SECONDS")
        else:
            p.add_argument("--revoke", action="append", metavar="KEYID")
    p = add(
        repo,
        "refresh",
        cmd_repo_refresh,
        "re-sign the index with a new version and expiry",
        json_flag=True,
    )
    p.add_argument("repo")
    p.add_argument("--index-key", required=True, metavar="KEY")

    # release
    release = sub.add_parser("release", help="build, sign and publish releases").add_subparsers(
        dest="cmd", required=True, parser_class=_Parser
    )
    p = add(
        release,
        "build",
        cmd_release_build,
        "build a draft release from artifact files",
        json_flag=True,
    )
    p.add_argument("repo")
    p.add_argument("--version", required=True, type=_semver)
    p.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="FILE",
        help="a file (its basename names it; required for binary releases)",
    )
    p.add_argument(
        "--type", choices=["binary", "configuration", "protocol", "schema"], default="binary"
    )
    p.add_argument("--channel", default="stable")
    p.add_argument("--critical", action="store_true")
    p.add_argument("--priority", type=_nonneg_int, default=0)
    p.add_argument(
        "--delta-from",
        action="append",
        metavar="auto|none|V",
        help="versions to make patches from (default: auto, the recent ones)",
    )
    p.add_argument(
        "--unpack",
        action="append",
        nargs="?",
        const="*",
        metavar="FILE",
        help="unpack this archive on install (bare: every archive artifact)",
    )
    p.add_argument(
        "--encrypt-to",
        action="append",
        metavar="PUB",
        help="encrypt to a node key (a .pub file or its hex)",
    )
    p.add_argument("--platform", default="any")
    p.add_argument("--arch", default="any")
    p.add_argument(
        "--self-test",
        metavar="CMD",
        help="self-test command run in a sandbox before the switch (split like a shell, no shell)",
    )
    p.add_argument(
        "--health",
        metavar="CMD",
        help="health command run after the switch, in the version's directory (split like a shell)",
    )
    p.add_argument("--health-timeout", type=_positive_int, default=60, metavar="SECONDS")
    cfg = p.add_argument_group("configuration updates")
    cfg.add_argument(
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help="a network configuration change (VALUE: JSON or a string)",
    )
    cfg.add_argument(
        "--config-scope", choices=["global", "regional", "node-type"], default="global"
    )
    cfg.add_argument("--config-selector", metavar="NAME", help="the region or node type")
    cfg.add_argument("--effective", metavar="YYYY-MM-DDTHH:MM:SSZ", help="when the changes apply")
    cfg.add_argument("--rollback-window", type=_nonneg_int, default=0, metavar="SECONDS")
    schema = p.add_argument_group("database schema updates")
    schema.add_argument(
        "--migration",
        action="append",
        metavar="FILE.sql",
        help="SQL for the next schema version, in order",
    )
    schema.add_argument(
        "--schema-from",
        type=_nonneg_int,
        default=0,
        metavar="N",
        help="schema version the first --migration starts from",
    )
    proto = p.add_argument_group("protocol updates")
    proto.add_argument("--protocol-version", type=_nonneg_int, metavar="N")
    proto.add_argument("--breaking", action="store_true")
    proto.add_argument("--protocol-migration-required", action="store_true")
    proto.add_argument(
        "--consensus-threshold",
        type=_bp,
        default=9000,
        metavar="BP",
        help="activation threshold in basis points (9000 = 90%%)",
    )
    proto.add_argument("--activation-height", type=_nonneg_int, metavar="H")
    p.add_argument("--min-from-version", metavar="V", help="oldest version that may update to this")
    p.add_argument(
        "--health-window",
        type=_nonneg_int,
        metavar="SECONDS",
        help="seconds a new version must stay healthy before it is marked good",
    )
    p.add_argument(
        "--no-sandbox",
        action="store_true",
        help="do not run the self-test and health command in a sandbox before keeping the draft",
    )
    p.add_argument("--notes")
    p = add(
        release,
        "sign",
        cmd_release_sign,
        "add one key holder's signature to a draft",
        json_flag=True,
    )
    p.add_argument("repo")
    p.add_argument("--version", required=True, type=_semver)
    p.add_argument("--key", required=True, metavar="KEY")
    p = add(
        release,
        "publish",
        cmd_release_publish,
        "publish a draft signed by the release threshold",
        json_flag=True,
    )
    p.add_argument("repo")
    p.add_argument("--version", required=True, type=_semver)
    p.add_argument("--index-key", required=True, metavar="KEY")
    p = add(release, "list", cmd_release_list, "list releases", json_flag=True)
    p.add_argument("repo")
    p = add(release, "show", cmd_release_show, "show one release", json_flag=True)
    p.add_argument("repo")
    p.add_argument("--version", required=True, type=_semver)
    p = add(
        release,
        "yank",
        cmd_release_yank,
        "withdraw a release in a new index version",
        json_flag=True,
    )
    p.add_argument("repo")
    p.add_argument("--version", required=True, type=_semver)
    p.add_argument("--index-key", required=True, metavar="KEY")
    p.add_argument("--reason")

    # serve
    p = sub.add_parser(
        "serve", help="HTTP origin for a repository", description="HTTP origin for a repository"
    )
    p.set_defaults(func=cmd_serve)
    p.add_argument("repo")
    _server_flags(p)

    # node
    node = sub.add_parser("node", help="node operations").add_subparsers(
        dest="cmd", required=True, parser_class=_Parser
    )
    p = add(node, "init", cmd_node_init, "initialise a node directory", json_flag=True)
    p.add_argument("node")
    p.add_argument("--trust", required=True, metavar="ROOT.json")
    p.add_argument("--source", action="append", required=True, metavar="URL")
    p.add_argument("--channel", default="stable")
    p.add_argument("--region")
    p.add_argument("--node-type")
    p = add(node, "serve", cmd_node_serve, "serve the node's verified holdings as a mirror")
    p.add_argument("node")
    _server_flags(p)
    p = add(
        node, "check", cmd_node_check, "fetch and verify metadata; list updates", json_flag=True
    )
    p.add_argument("node")
    p = add(
        node,
        "update",
        cmd_node_update,
        "install now (overrides the policy's window)",
        json_flag=True,
    )
    p.add_argument("node")
    p.add_argument("--version", type=_semver)
    p.add_argument("--no-delta", action="store_true", help="download full artifacts only")
    p = add(node, "status", cmd_node_status, "the node's versions and state", json_flag=True)
    p.add_argument("node")
    p = add(
        node,
        "rollback",
        cmd_node_rollback,
        "go back to the previous (or a given) version",
        json_flag=True,
    )
    p.add_argument("node")
    p.add_argument("--version", type=_semver)
    p = add(node, "history", cmd_node_history, "install and rollback history", json_flag=True)
    p.add_argument("node")
    p = add(node, "run", cmd_node_run, "the update agent: follows the policy until stopped")
    p.add_argument("node")
    p.add_argument("--once", action="store_true", help="one check-and-act cycle, then exit")
    p.add_argument(
        "--interval", type=_positive_int, metavar="SECONDS", help="override check_interval"
    )
    p = add(
        node,
        "confirm",
        cmd_node_confirm,
        "approve a pending update (manual policy)",
        json_flag=True,
    )
    p.add_argument("node")
    p.add_argument("--version", type=_semver)
    p = add(node, "defer", cmd_node_defer, "defer a pending update (manual policy)", json_flag=True)
    p.add_argument("node")
    p.add_argument("--version", type=_semver)
    p = add(
        node,
        "verify",
        cmd_node_verify,
        "re-hash installed trees against their manifests",
        json_flag=True,
    )
    p.add_argument("node")
    p = add(node, "prune", cmd_node_prune, "drop old versions and rollback points", json_flag=True)
    p.add_argument("node")
    p.add_argument("--keep", type=_positive_int, required=True)

    plugins = sub.add_parser("plugins", help="installed plugins").add_subparsers(
        dest="cmd", required=True, parser_class=_Parser
    )
    add(
        plugins,
        "list",
        cmd_plugins_list,
        "installed plugins, and any that failed to load",
        json_flag=True,
    )

    p = sub.add_parser(
        "demo",
        help="the local network demonstration",
        description="the local network demonstration",
    )
    p.set_defaults(func=cmd_demo)
    p.add_argument("--workdir")
    p.add_argument("--keep", action="store_true")
    return parser


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, SecurityError):
        return EXIT_SECURITY
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line (before or after the subcommand)
    debug = "--debug" in argv or os.environ.get("BLACKHOLE_SYNC_DEBUG") == "1"
    argv = [arg for arg in argv if arg != "--debug"]
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="blackhole-sync: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        logging.getLogger().setLevel(logging.ERROR)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        prefix = "refused: " if isinstance(exc, SecurityError) else ""
        sys.stderr.write(f"blackhole-sync: {prefix}{message}\n")
        return _exit_code(exc)
    except BaseException as exc:  # noqa: BLE001 - last resort: one line, never a traceback
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_leaf(exc)
            if inner is not exc:
                sys.stderr.write(f"blackhole-sync: {' '.join(str(inner).split())}\n")
                if debug:
                    traceback.print_exc()
                return _exit_code(inner)
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"blackhole-sync: internal error: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILURE


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup) and group.exceptions:
        group = group.exceptions[0]
    return group


if __name__ == "__main__":
    sys.exit(main())
