"""``blackhole-sync release ...``: build, sign, publish, withdraw and inspect releases.

Separate holders sign a draft where their key is: ``release export REPO --version V OUT.json``
writes a bundle, each holder runs ``release sign OUT.json --key KEY`` on their own machine (a
bundle is accepted where REPO is, by ``sign`` and ``show``), and ``release import REPO
BUNDLE.json...`` merges the signatures (distinct keys of the release role only, each verified;
one bad bundle refuses the import, exit 3, nothing written).

``release build`` reports each long step (packing, listing, compressing, encrypting, hashing,
diffing, the sandbox) on stderr: a live display on a terminal, plain lines otherwise, nothing
with ``--json``. Its scratch files are removed when it fails or is interrupted, and what a
killed build left is removed by the next one.

``--json`` key sets (one per command, whatever the outcome; an error is ``{"error": {...}}``):

* ``build``: ``version``, ``type``, ``channel``, ``artifacts``, ``deltas``
* ``sign``: ``version``, ``added``, ``bundle`` (null for a repository), ``signatures``,
  ``threshold``
* ``export``: ``version``, ``bundle``, ``signatures``, ``threshold``
* ``import``: ``added`` (version -> key ids added), ``signatures`` (version -> count),
  ``threshold``
* ``publish``, ``yank``: ``version``, ``index_version``
* ``list``: ``releases``
* ``show``: ``version``, ``state``, ``signatures``, ``threshold``, ``signed_by``,
  ``manifest`` (and, once published, ``manifest_length``, ``manifest_sha256``)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FormatError
from .common import (
    EXIT_OK,
    UsageError,
    add_command,
    add_group,
    basis_points,
    emit,
    missing_file,
    nonneg_int,
    open_repository,
    positive_int,
    recipient,
    semver_arg,
    signing_key,
)
from .progress import BuildReporter, terminate_as_interrupt

if TYPE_CHECKING:
    from ..documents import Command, ReleaseManifest

__all__ = [
    "add_parsers",
    "cmd_release_build",
    "cmd_release_export",
    "cmd_release_import",
    "cmd_release_list",
    "cmd_release_publish",
    "cmd_release_show",
    "cmd_release_sign",
    "cmd_release_yank",
]


# -- build ----------------------------------------------------------------------------------------


def _unpack_marks(args: argparse.Namespace) -> list[Path]:
    """The artifacts ``--unpack`` marks: named by basename or path; bare: every archive."""
    from ..codecs import archive_format

    artifacts = [Path(p) for p in args.artifact]
    if args.unpack is None:
        return []
    marks = args.unpack
    if "*" in marks:

        def is_archive(path: Path) -> bool:
            try:
                archive_format(path.name)
            except ValueError:
                return False
            return True

        return [p for p in artifacts if is_archive(p)]
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


def _command(text: str | None, flag: str, timeout: int, window: int | None) -> Command | None:
    """A self-test or health command: split like a shell (never run through one)."""
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
            except FileNotFoundError:
                raise missing_file(path, "--migration") from None
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


def _delta_from(values: list[str] | None) -> Any:
    """``--delta-from``: absent or ``auto`` -> "auto", ``none`` -> None, else the versions."""
    if not values or values == ["auto"]:
        return "auto"
    if values == ["none"]:
        return None
    if "auto" in values or "none" in values:
        raise UsageError("--delta-from auto/none cannot be combined with versions")
    return list(values)


def _build_summary(manifest: ReleaseManifest) -> dict[str, Any]:
    return {
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


def cmd_release_build(args: argparse.Namespace) -> int:
    from ..release import BuildOptions, ReleaseBuilder

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
            raise missing_file(path, "--artifact")  # exit 1, as any missing file
    self_test = _command(args.self_test, "--self-test", args.health_timeout, None)
    health = _command(args.health, "--health", args.health_timeout, args.health_window)
    options = BuildOptions(
        update_type=args.type,
        channel=args.channel,
        critical=args.critical,
        priority=args.priority,
        delta_from=_delta_from(args.delta_from),
        encrypt_to=[recipient(v) for v in args.encrypt_to or ()],
        unpack=_unpack_marks(args),
        platform=args.platform,
        arch=args.arch,
        self_test=self_test,
        health=health,
        notes=args.notes or "",
        **_typed_update_options(args),
    )
    from ..fetch import make_plugin_manager
    from ..release.builder import plugin_codecs, transport_companions, transport_locators

    # plugin codecs are offered to the delta selection beside the built-ins; transports that
    # locate (IPFS CIDs) name each blob in the manifest before it is signed
    plugins = make_plugin_manager(load_entrypoints=True)
    codecs = plugin_codecs(plugins)
    reporter = BuildReporter.for_args(args)
    builder = ReleaseBuilder(
        open_repository(args.repo),
        codecs=codecs,
        progress=reporter,
        locate=transport_locators(plugins),
        companions=transport_companions(plugins),
    )
    artifacts = [Path(p) for p in args.artifact]
    with terminate_as_interrupt(), reporter:
        if (self_test or health) and not args.no_sandbox:
            # The release's own checks run in a scratch sandbox before the draft is kept.
            import anyio

            from ..node import run_sandbox_test

            async def sandbox(tree: Path, command: Command) -> None:
                await run_sandbox_test(tree, None, command)

            async def build() -> ReleaseManifest:
                return await builder.abuild(args.version, artifacts, options, sandbox=sandbox)

            manifest = anyio.run(build)
        else:
            manifest = builder.build(args.version, artifacts, options)
    emit(
        args,
        _build_summary(manifest),
        f"built draft {manifest.version}: {len(manifest.artifacts)} artifact(s), "
        f"{len(manifest.deltas)} delta(s); now sign it with the release keys",
    )
    return EXIT_OK


# -- sign, export, import, publish, yank, list, show ----------------------------------------------


def _is_bundle(path: str) -> bool:
    """A bundle is a file; a repository is a directory."""
    return os.path.isfile(path)


def cmd_release_sign(args: argparse.Namespace) -> int:
    if _is_bundle(args.repo):
        from ..release import Bundle, sign_bundle

        key = signing_key(args.key)
        bundle = Bundle.read(args.repo)
        if args.version is not None and args.version != bundle.version:
            raise UsageError(f"{args.repo} is a bundle of {bundle.version}, not {args.version}")
        added = sign_bundle(args.repo, key)
        bundle = Bundle.read(args.repo)
        version, signatures = bundle.version, len(bundle.signers())
        threshold = bundle.root_model.roles["release"].threshold
        where: str | None = args.repo
    else:
        if args.version is None:
            raise UsageError("release sign REPO needs --version (a bundle file does not)")
        repo = open_repository(args.repo)
        version = args.version
        added = repo.sign_release(version, signing_key(args.key))
        info = repo.show_release(version)
        signatures, threshold, where = info["signatures"], info["threshold"], None
    emit(
        args,
        {
            "version": version,
            "added": added,
            "bundle": where,
            "signatures": signatures,
            "threshold": threshold,
        },
        (f"signed {version}" if added else f"{version} already carries this signature")
        + f" ({signatures} of {threshold} release signatures)",
    )
    return EXIT_OK


def cmd_release_export(args: argparse.Namespace) -> int:
    repo = open_repository(args.repo)
    bundle = repo.export_release(args.version, args.out)
    signatures = len(bundle.signers())
    threshold = bundle.root_model.roles["release"].threshold
    emit(
        args,
        {
            "version": args.version,
            "bundle": args.out,
            "signatures": signatures,
            "threshold": threshold,
        },
        f"wrote {args.out}: the draft of {args.version} ({signatures} of {threshold} release "
        f"signatures); each holder runs `blackhole-sync release sign {args.out} --key KEY`, "
        f"then `blackhole-sync release import {args.repo} BUNDLE.json...`",
    )
    return EXIT_OK


def cmd_release_import(args: argparse.Namespace) -> int:
    repo = open_repository(args.repo)
    added = repo.import_signatures(args.bundle)
    counts = {v: repo.show_release(v)["signatures"] for v in added}
    threshold = repo.root().roles["release"].threshold

    def text() -> str:
        return "\n".join(
            f"{v}: {len(ids)} signature(s) added, {counts[v]} of {threshold}"
            for v, ids in sorted(added.items())
        )

    emit(args, {"added": added, "signatures": counts, "threshold": threshold}, text)
    return EXIT_OK


def cmd_release_publish(args: argparse.Namespace) -> int:
    index = open_repository(args.repo).publish_release(args.version, signing_key(args.index_key))
    emit(
        args,
        {"version": args.version, "index_version": index.version},
        f"published {args.version} (index version {index.version})",
    )
    return EXIT_OK


def cmd_release_yank(args: argparse.Namespace) -> int:
    index = open_repository(args.repo).yank(
        args.version, signing_key(args.index_key), reason=args.reason or ""
    )
    emit(
        args,
        {"version": args.version, "index_version": index.version},
        f"withdrew {args.version} (index version {index.version})",
    )
    return EXIT_OK


def cmd_release_list(args: argparse.Namespace) -> int:
    releases = open_repository(args.repo).list_releases()

    def text() -> str:
        if not releases:
            return "no releases"
        return "\n".join(
            f"{r['version']}\t{r['channel']}\t{r['type']}\t{r['state']}"
            + ("\tcritical" if r["critical"] else "")
            for r in releases
        )

    emit(args, {"releases": releases}, text)
    return EXIT_OK


def cmd_release_show(args: argparse.Namespace) -> int:
    if _is_bundle(args.repo):
        from ..release import Bundle, bundle_info

        info = bundle_info(Bundle.read(args.repo))
        if args.version is not None and args.version != info["version"]:
            raise UsageError(f"{args.repo} is a bundle of {info['version']}, not {args.version}")
    elif args.version is None:
        raise UsageError("release show REPO needs --version (a bundle file does not)")
    else:
        info = open_repository(args.repo).show_release(args.version)
    emit(args, info, lambda: json.dumps(info, indent=2, sort_keys=True))
    return EXIT_OK


# -- the parsers ----------------------------------------------------------------------------------


def _add_build_parser(release: Any) -> None:
    p = add_command(
        release,
        "build",
        cmd_release_build,
        "build a draft release from artifact files",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
    p.add_argument("--version", required=True, type=semver_arg, metavar="V",
                   help="the release's version")  # fmt: skip
    p.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="FILE",
        help="a file (its basename names it; required for binary releases)",
    )
    p.add_argument(
        "--type",
        choices=["binary", "configuration", "protocol", "schema"],
        default="binary",
        help="the update type",
    )
    p.add_argument("--channel", default="stable", metavar="NAME", help="the release channel")
    p.add_argument(
        "--critical",
        action="store_true",
        help="a critical release (the critical-update policy installs it at once)",
    )
    p.add_argument(
        "--priority",
        type=nonneg_int,
        default=0,
        metavar="N",
        help="ordering among releases of the same version range",
    )
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
    p.add_argument(
        "--platform", default="any", metavar="NAME", help="the platform the artifacts are for"
    )
    p.add_argument(
        "--arch", default="any", metavar="NAME", help="the architecture the artifacts are for"
    )
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
    p.add_argument(
        "--health-timeout",
        type=positive_int,
        default=60,
        metavar="SECONDS",
        help="how long the self-test and health commands may run",
    )
    _add_typed_update_flags(p)
    p.add_argument("--min-from-version", metavar="V", help="oldest version that may update to this")
    p.add_argument(
        "--health-window",
        type=nonneg_int,
        metavar="SECONDS",
        help="seconds a new version must stay healthy before it is marked good",
    )
    p.add_argument(
        "--no-sandbox",
        action="store_true",
        help="do not run the self-test and health command in a sandbox before keeping the draft",
    )
    p.add_argument("--notes", metavar="TEXT", help="release notes")


def _add_typed_update_flags(p: argparse.ArgumentParser) -> None:
    """Flags of configuration, schema and protocol updates (see ``_typed_update_options``)."""
    cfg = p.add_argument_group("configuration updates")
    cfg.add_argument(
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help="a network configuration change (VALUE: JSON or a string)",
    )
    cfg.add_argument(
        "--config-scope",
        choices=["global", "regional", "node-type"],
        default="global",
        help="which nodes the changes apply to",
    )
    cfg.add_argument("--config-selector", metavar="NAME", help="the region or node type")
    cfg.add_argument("--effective", metavar="YYYY-MM-DDTHH:MM:SSZ", help="when the changes apply")
    cfg.add_argument(
        "--rollback-window",
        type=nonneg_int,
        default=0,
        metavar="SECONDS",
        help="how long a change may be rolled back",
    )
    schema = p.add_argument_group("database schema updates")
    schema.add_argument(
        "--migration",
        action="append",
        metavar="FILE.sql",
        help="SQL for the next schema version, in order",
    )
    schema.add_argument(
        "--schema-from",
        type=nonneg_int,
        default=0,
        metavar="N",
        help="schema version the first --migration starts from",
    )
    proto = p.add_argument_group("protocol updates")
    proto.add_argument(
        "--protocol-version", type=nonneg_int, metavar="N", help="the protocol version it speaks"
    )
    proto.add_argument("--breaking", action="store_true", help="the protocol change is breaking")
    proto.add_argument(
        "--protocol-migration-required",
        action="store_true",
        help="the protocol change needs a migration",
    )
    proto.add_argument(
        "--consensus-threshold",
        type=basis_points,
        default=9000,
        metavar="BP",
        help="activation threshold in basis points (9000 = 90%%)",
    )
    proto.add_argument(
        "--activation-height",
        type=nonneg_int,
        metavar="H",
        help="the activation height of the protocol change",
    )


def add_parsers(sub: Any) -> None:
    release = add_group(sub, "release", "build, sign and publish releases")
    _add_build_parser(release)
    p = add_command(
        release,
        "sign",
        cmd_release_sign,
        "add one key holder's signature to a draft (in REPO, or in a bundle file)",
        json_flag=True,
    )
    p.add_argument(
        "repo",
        metavar="REPO|BUNDLE.json",
        help="the repository directory, or a bundle made by release export",
    )
    p.add_argument(
        "--version", type=semver_arg, metavar="V", help="the draft to sign (required with REPO)"
    )
    p.add_argument(
        "--key",
        required=True,
        metavar="KEY",
        help="the holder's private release key, or plugin:NAME:ID",
    )
    p = add_command(
        release,
        "export",
        cmd_release_export,
        "write a draft as a bundle a key holder signs elsewhere (release sign BUNDLE.json)",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
    p.add_argument(
        "--version", required=True, type=semver_arg, metavar="V", help="the draft to export"
    )
    p.add_argument("out", metavar="OUT.json", help="the bundle to write (must not exist)")
    p = add_command(
        release,
        "import",
        cmd_release_import,
        "merge the signatures of signed bundles into their drafts (each verified)",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
    p.add_argument("bundle", nargs="+", metavar="BUNDLE.json", help="signed bundles (one or more)")
    p = add_command(
        release,
        "publish",
        cmd_release_publish,
        "publish a draft signed by the release threshold",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
    p.add_argument(
        "--version", required=True, type=semver_arg, metavar="V", help="the draft to publish"
    )
    p.add_argument(
        "--index-key",
        required=True,
        metavar="KEY",
        help="the private index key (or plugin:NAME:ID)",
    )
    p = add_command(release, "list", cmd_release_list, "list releases", json_flag=True)
    p.add_argument("repo", help="the repository directory")
    p = add_command(
        release, "show", cmd_release_show, "show one release (or a bundle)", json_flag=True
    )
    p.add_argument("repo", metavar="REPO|BUNDLE.json", help="the repository directory, or a bundle")
    p.add_argument(
        "--version", type=semver_arg, metavar="V", help="the release (required with REPO)"
    )
    p = add_command(
        release,
        "yank",
        cmd_release_yank,
        "withdraw a release in a new index version",
        json_flag=True,
    )
    p.add_argument("repo", help="the repository directory")
    p.add_argument(
        "--version", required=True, type=semver_arg, metavar="V", help="the release to withdraw"
    )
    p.add_argument(
        "--index-key",
        required=True,
        metavar="KEY",
        help="the private index key (or plugin:NAME:ID)",
    )
    p.add_argument("--reason", metavar="TEXT", help="why, shown to operators")
    from .governance import add_release_downgrade

    add_release_downgrade(release)
