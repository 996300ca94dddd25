"""``governance ...``, ``network status``, ``node vote`` and ``release downgrade``: the command
line of network coordination.

Governance documents are drafts signed by separate holders, like releases: each holder runs
the same ``governance propose|plan|halt|validators|deprecate`` command (or ``governance sign
REPO NAME``) with their own key; ``governance publish REPO --index-key KEY`` puts every draft
that meets the governance threshold into the index. ``release downgrade`` makes the one
release-signed coordination document the same way. ``node vote`` signs and keeps this node's
vote (the running agent, ``node run``, spreads it until the signalling window ends: a one-shot
command starts no peer transport); ``network status`` shows what the node knows of the
network.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from typing import Any

from .common import (
    EXIT_OK,
    UsageError,
    add_command,
    add_group,
    emit,
    int_in,
    open_repository,
    semver_arg,
    signing_key,
)

__all__ = ["add_parsers", "add_node_vote", "add_release_downgrade"]


def _now() -> _dt.datetime:
    from ..clock import utcnow

    return utcnow()


def _time(value: str) -> _dt.datetime:
    """``YYYY-MM-DDTHH:MM:SSZ``, or ``+SECONDS`` from now."""
    from ..documents import parse_time
    from ..errors import FormatError

    if value.startswith("+") and value[1:].isdigit():
        return _now() + _dt.timedelta(seconds=int(value[1:]))
    try:
        return parse_time(value, "time")
    except FormatError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: YYYY-MM-DDTHH:MM:SSZ or +SECONDS") from exc


def _days(args: argparse.Namespace) -> _dt.datetime:
    return _now() + _dt.timedelta(days=args.expires_days)


def _draft(args: argparse.Namespace, document: Any) -> int:
    from ..release import write_coordination_draft

    repo = open_repository(args.repo)
    draft = write_coordination_draft(repo, document, signing_key(args.key))
    info = draft.to_dict()
    emit(
        args,
        info,
        f"draft {draft.name}: {len(draft.signers)} of {draft.threshold} signatures"
        + (" (ready: governance publish)" if draft.complete else ""),
    )
    return EXIT_OK


def _version(args: argparse.Namespace, kind: str, key: str) -> int:
    from ..release import next_coordination_version

    version: int = next_coordination_version(open_repository(args.repo), kind, key)
    return version


def _release_digest(args: argparse.Namespace, version: str) -> str:
    from ..errors import NoSuchVersionError

    index = open_repository(args.repo).index()
    listed = None if index is None else index.listing(version)
    if listed is None:
        raise NoSuchVersionError(f"release {version} is not published in the index")
    return listed.sha256


def cmd_propose(args: argparse.Namespace) -> int:
    from ..documents import Proposal

    args.start = args.start or _now()
    if args.timeout <= args.start:
        raise UsageError("governance propose: --timeout must come after --start")
    expires = args.timeout + _dt.timedelta(
        seconds=args.grace + args.activation_delay, days=args.expires_days
    )
    proposal = Proposal(
        args.id,
        args.release,
        args.protocol_version,
        args.threshold,
        args.start,
        args.timeout,
        expires,
        args.activation_delay,
        _release_digest(args, args.release),
        args.grace,
        args.activation_height,
        _version(args, "proposal", args.id),
    )
    return _draft(args, proposal)


def _phase(value: str) -> Any:
    from ..documents import RolloutPhase

    parts = value.split(":")
    try:
        if len(parts) not in (3, 4):
            raise ValueError
        name, pct, duration = parts[0], int(parts[1]), int(parts[2])
        success = int(parts[3]) if len(parts) == 4 else 9500
        if not (0 <= pct <= 10_000 and 0 <= success <= 10_000 and duration >= 0):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: NAME:PERCENT_BP:SECONDS[:SUCCESS_BP] (e.g. canary:500:3600)"
        ) from None
    return RolloutPhase(name, pct, duration, success)


def cmd_plan(args: argparse.Namespace) -> int:
    from ..documents import RolloutPlan

    _release_digest(args, args.release)  # it must be published
    phases = tuple(args.phase)
    plan = RolloutPlan(
        args.release,
        _version(args, "rollout", args.release),
        _days(args),
        args.start or _now(),
        phases,
        args.salt,
        args.halt_threshold,
    )
    from ..errors import FormatError

    try:
        RolloutPlan.from_dict(plan.to_dict())  # the document's own rules, as a usage error
    except FormatError as exc:
        raise UsageError(f"governance plan: {exc}") from exc
    return _draft(args, plan)


def cmd_halt(args: argparse.Namespace) -> int:
    from ..documents import HaltDoc

    halt = HaltDoc(args.release, args.reason, _version(args, "halt", args.release), _days(args))
    return _draft(args, halt)


def _validator(value: str) -> tuple[str, int]:
    from ..codecs import load_public_key
    from ..documents import PublicKey
    from ..errors import FormatError

    path, _, weight = value.partition(":")
    try:
        w = int(weight) if weight else 1
        if w < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: PUB[:WEIGHT], weight >= 1") from None
    try:
        key = PublicKey.from_hex(path) if len(path) == 64 else load_public_key(path)
    except (FormatError, OSError) as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc}") from exc
    return key.hex, w


def cmd_validators(args: argparse.Namespace) -> int:
    from ..documents import ValidatorSet

    validators: dict[str, int] = {}
    for node_id, weight in args.validator:
        if node_id in validators:
            raise UsageError(f"validator {node_id[:16]}... given twice")
        validators[node_id] = weight
    doc = ValidatorSet(_version(args, "validators", ""), _days(args), validators)
    return _draft(args, doc)


def cmd_deprecate(args: argparse.Namespace) -> int:
    from ..documents import Deprecation

    doc = Deprecation(
        args.feature,
        args.remove_in,
        _version(args, "deprecation", args.feature),
        _days(args),
        args.message,
    )
    return _draft(args, doc)


def cmd_sign(args: argparse.Namespace) -> int:
    from ..release import list_coordination_drafts, sign_coordination_draft

    repo = open_repository(args.repo)
    added = sign_coordination_draft(repo, args.name, signing_key(args.key))
    draft = next(d for d in list_coordination_drafts(repo) if d.name == args.name)
    emit(
        args,
        {**draft.to_dict(), "added": added},
        f"{args.name}: {len(draft.signers)} of {draft.threshold} signatures"
        + ("" if added else " (this key had signed already)"),
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from ..release import list_coordination_drafts

    drafts = [d.to_dict() for d in list_coordination_drafts(open_repository(args.repo))]

    def text() -> str:
        if not drafts:
            return "no coordination drafts"
        return "\n".join(
            f"{d['name']}: {d['signatures']}/{d['threshold']} {d['role']} signatures"
            for d in drafts
        )

    emit(args, {"drafts": drafts}, text)
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from ..release import publish_coordination

    repo = open_repository(args.repo)
    names = publish_coordination(repo, signing_key(args.index_key), names=args.name or None)
    index = repo.index()
    emit(
        args,
        {"published": names, "index_version": None if index is None else index.version},
        ("published " + ", ".join(names)) if names else "nothing ready to publish",
    )
    return EXIT_OK


def cmd_release_downgrade(args: argparse.Namespace) -> int:
    from ..documents import Downgrade

    repo = open_repository(args.repo)
    _release_digest(args, args.to)
    doc = Downgrade(
        repo.root().network_id,
        args.to,
        args.floor,
        _version(args, "downgrade", args.to),
        _days(args),
        args.reason,
    )
    code = _draft(args, doc)
    if args.index_key is not None:
        from ..release import list_coordination_drafts, publish_coordination

        name = f"downgrade-{args.to}"
        draft = next(d for d in list_coordination_drafts(repo) if d.name == name)
        if draft.complete:
            publish_coordination(repo, signing_key(args.index_key), names=[name])
    return code


# -- node side --------------------------------------------------------------------------------


def cmd_node_vote(args: argparse.Namespace) -> int:
    import anyio

    from ..manager import UpdateManager
    from .common import node_dir as _node_dir

    async def work() -> dict[str, Any]:
        async with UpdateManager(_node_dir(args)) as manager:
            if args.proposal not in manager.coordinator().docs.proposals:
                await manager.check_for_updates()  # fetch the newest proposals first
            coordinator = manager.coordinator()
            try:
                payload = coordinator.vote(args.proposal, support=not args.no)
            except LookupError as exc:
                from ..errors import NoSuchVersionError

                raise NoSuchVersionError(str(exc)) from exc
            tracker = coordinator.trackers.get(args.proposal)  # none without a validator set
            return {
                "proposal": args.proposal,
                "support": not args.no,
                "seq": json.loads(payload)["signed"]["seq"],
                "voting": None if tracker is None else tracker.status(coordinator.clock()).to_dict(),
            }

    result = anyio.run(work)
    emit(
        args,
        result,
        f"voted {'yes' if result['support'] else 'no'} on {args.proposal} "
        "(the node's agent, node run, spreads it to its peers)",
    )
    return EXIT_OK


def cmd_network_status(args: argparse.Namespace) -> int:
    import anyio

    from ..manager import UpdateManager
    from .common import node_dir as _node_dir

    async def work() -> dict[str, Any]:
        async with UpdateManager(_node_dir(args), read_only=True) as manager:
            coordinator = manager.coordinator()
            status = coordinator.status()
            view = coordinator.view
            target = manager.store.current_version()
            candidates = manager.get_update_status().available
            if candidates:
                target = candidates[-1]
            return {
                "node_id": coordinator.node_id,
                "current_version": manager.store.current_version(),
                "network": view.summary(target),
                **status,
            }

    result = anyio.run(work)

    def text() -> str:
        net = result["network"]
        lines = [f"nodes seen:     {net['nodes']} (statuses: each node's own claim)"]
        for version, count in net["versions"].items():
            lines.append(f"  {version}: {count}")
        if net.get("target"):
            cov = net["coverage_bp"]
            lines.append(
                f"coverage of {net['target']}: " + ("unknown" if cov is None else f"{cov / 100:g}%")
            )
        for pid, p in result["proposals"].items():
            lines.append(
                f"proposal {pid} ({p['release']}, protocol {p['protocol_version']}): "
                f"{p['state']}, support {p['support_weight']}/{p['total_weight']} "
                f"(threshold {p['threshold_bp'] / 100:g}%)"
            )
        for release, r in result["rollouts"].items():
            lines.append(
                f"rollout {release}: phase {r['phase']}, "
                f"{'halted: ' + r['halted'] if r['halted'] else r['reason']}"
            )
            for row in r["failing_by_phase"]:
                lines.append(
                    f"  {row['name']}: {row['healthy']} healthy, {row['failing']} failing "
                    f"({row['failing_validators']} validators)"
                )
        for act in result["pending_activations"]:
            when = f"height {act['height']}" if act["height"] is not None else act["time"]
            lines.append(f"pending activation: {act['proposal']} ({act['release']}) at {when}")
        return "\n".join(lines)

    emit(args, result, text)
    return EXIT_OK


# -- parsers ----------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, key_help: str = "a governance key") -> None:
    p.add_argument("repo", metavar="REPO", help="the repository directory")
    p.add_argument("--key", required=True, metavar="KEY", help=f"{key_help}, or plugin:NAME:ID")
    p.add_argument("--expires-days", type=int_in(1, 3650), default=30, help="days until it expires")


def add_parsers(sub: Any) -> None:
    gov = add_group(sub, "governance", "activation proposals, rollout plans, halts, validators")
    p = add_command(gov, "propose", cmd_propose, "draft a protocol activation proposal",
                    json_flag=True)  # fmt: skip
    _common(p)
    p.add_argument("--id", required=True, help="the proposal id (a-z0-9._-)")
    p.add_argument("--release", required=True, type=semver_arg, metavar="V",
                   help="the published protocol release to activate")  # fmt: skip
    p.add_argument("--protocol-version", required=True, type=int_in(0), metavar="N",
                   help="the protocol version it activates")  # fmt: skip
    p.add_argument("--threshold", type=int_in(1, 10_000), default=7500, metavar="BP",
                   help="supporting validator weight needed, basis points")  # fmt: skip
    p.add_argument("--start", type=_time, metavar="TIME",
                   help="start of the signalling window (or +SECONDS; default: now)")  # fmt: skip
    p.add_argument("--timeout", type=_time, required=True, metavar="TIME",
                   help="end of the signalling window (or +SECONDS)")  # fmt: skip
    p.add_argument("--grace", type=int_in(0), default=600, metavar="SECONDS",
                   help="how long after the timeout a certificate is still adopted")  # fmt: skip
    p.add_argument("--activation-height", type=int_in(0), metavar="H",
                   help="activate at this chain height (else at timeout + delay)")  # fmt: skip
    p.add_argument("--activation-delay", type=int_in(0), default=0, metavar="SECONDS",
                   help="seconds between lock-in and activation")  # fmt: skip

    p = add_command(gov, "plan", cmd_plan, "draft a phased rollout plan", json_flag=True)
    _common(p)
    p.add_argument("--release", required=True, type=semver_arg, metavar="V",
                   help="the published release to roll out")  # fmt: skip
    p.add_argument("--phase", action="append", required=True, type=_phase,
                   metavar="NAME:PERCENT_BP:SECONDS[:SUCCESS_BP]",
                   help="cumulative share of the network and minimum duration")  # fmt: skip
    p.add_argument("--salt", default="", help="the phase-assignment salt")
    p.add_argument("--start", type=_time, metavar="TIME", help="when the first phase opens")
    p.add_argument("--halt-threshold", type=int_in(0, 10_000), default=0, metavar="BP",
                   help="validator weight reporting failure that halts it (0: never)")  # fmt: skip

    p = add_command(gov, "halt", cmd_halt, "draft a halt of a release's rollout", json_flag=True)
    _common(p)
    p.add_argument("--release", required=True, type=semver_arg, metavar="V",
                   help="the release whose rollout stops")  # fmt: skip
    p.add_argument("--reason", default="", help="why")

    p = add_command(gov, "validators", cmd_validators, "draft the validator set", json_flag=True)
    _common(p)
    p.add_argument("--validator", action="append", required=True, type=_validator,
                   metavar="PUB[:WEIGHT]", help="a node's public key file (or hex)")  # fmt: skip

    p = add_command(gov, "deprecate", cmd_deprecate, "draft a feature deprecation",
                    json_flag=True)  # fmt: skip
    _common(p)
    p.add_argument("--feature", required=True, help="the deprecated feature")
    p.add_argument("--remove-in", required=True, type=semver_arg, metavar="V",
                   help="the release that removes it")  # fmt: skip
    p.add_argument("--message", default="", help="what operators should do")

    p = add_command(gov, "sign", cmd_sign, "add a holder's signature to a draft", json_flag=True)
    p.add_argument("repo", metavar="REPO", help="the repository directory")
    p.add_argument("name", metavar="NAME", help="the draft (governance list)")
    p.add_argument("--key", required=True, metavar="KEY",
                   help="the holder's key, or plugin:NAME:ID")  # fmt: skip

    p = add_command(gov, "list", cmd_list, "coordination drafts and their signatures",
                    json_flag=True)  # fmt: skip
    p.add_argument("repo", metavar="REPO", help="the repository directory")

    p = add_command(gov, "publish", cmd_publish, "publish the drafts that meet their threshold",
                    json_flag=True)  # fmt: skip
    p.add_argument("repo", metavar="REPO", help="the repository directory")
    p.add_argument("--index-key", required=True, metavar="KEY", help="the index key")
    p.add_argument("--name", action="append", metavar="NAME", help="only these drafts")

    net = add_group(sub, "network", "what this node knows of the network")
    p = add_command(net, "status", cmd_network_status,
                    "versions across the network, phases, coverage, votes", json_flag=True)  # fmt: skip
    p.add_argument("node", metavar="NODE", help="the node directory")


def add_node_vote(node_group: Any) -> None:
    p = add_command(node_group, "vote", cmd_node_vote, "sign this node's vote on a proposal",
                    json_flag=True)  # fmt: skip
    p.add_argument("node", metavar="NODE", help="the node directory")
    p.add_argument("--proposal", required=True, metavar="ID", help="the proposal to vote on")
    p.add_argument("--no", action="store_true", help="vote against")


def add_release_downgrade(release_group: Any) -> None:
    p = add_command(release_group, "downgrade", cmd_release_downgrade,
                    "draft (and with --index-key publish) a signed downgrade", json_flag=True)  # fmt: skip
    _common(p, "a release key")
    p.add_argument("--to", required=True, type=semver_arg, metavar="V",
                   help="the published release to return to")  # fmt: skip
    p.add_argument("--floor", required=True, type=int_in(0), metavar="SCHEMA",
                   help="the lowest data schema that release reads")  # fmt: skip
    p.add_argument("--reason", default="", help="why, shown to operators")
    p.add_argument("--index-key", metavar="KEY",
                   help="publish at once when the release threshold is met")  # fmt: skip
