"""The index: the online-signed catalogue of releases per channel.

Signed by the index key; short expiry; its version strictly increases. Per channel it lists
each release's manifest by length and sha256, and the withdrawn (yanked) releases; it also
lists, by length and sha256, the signed coordination documents nodes act on: the current
rollout plans and halts (by release), the validator set, the activation proposals (by id),
deprecations (by feature) and downgrades (by the version they return to). The coordination
entries are written only when present, so an index without them keeps its bytes.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError
from .fields import SPEC_VERSION, MetaFile, _channel_name, _Reader, format_time, parse_version

__all__ = ["COORDINATION_LISTINGS", "Index", "IndexChannel", "coordination_relpath"]


@frozen
class IndexChannel:
    releases: Mapping[str, MetaFile]
    withdrawn: Mapping[str, str] = field(factory=dict)  # version -> reason
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "channel") -> IndexChannel:
        r = _Reader(obj, where)
        releases = r.mapping("releases", MetaFile.from_dict)
        for version in releases:
            parse_version(version, f"{where}.releases")
        withdrawn = r.mapping("withdrawn", _withdrawal, {})
        for version in withdrawn:
            parse_version(version, f"{where}.withdrawn")
            if version in releases:
                raise FormatError(f"{where}: {version} is both listed and withdrawn")
        return cls(releases, withdrawn, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "releases": {k: v.to_dict() for k, v in self.releases.items()},
            "withdrawn": {k: {"reason": v} for k, v in self.withdrawn.items()},
        }


#: Coordination document kinds the index lists, with the index field each is listed in.
COORDINATION_LISTINGS: Mapping[str, str] = {
    "validators": "validators",
    "proposal": "proposals",
    "rollout": "rollouts",
    "halt": "halts",
    "deprecation": "deprecations",
    "downgrade": "downgrades",
}


def coordination_relpath(kind: str, key: str) -> str:
    """Where a listed coordination document lives, on the repository and in a node's
    ``trust/coordination/``: ``governance/validators.json``, ``governance/proposals/<id>.json``,
    ``governance/rollouts/<v>.json``, ``governance/halts/<v>.json``,
    ``governance/deprecations/<feature>.json``, ``downgrades/<v>.json``."""
    if kind == "validators":
        return "governance/validators.json"
    if kind == "downgrade":
        return f"downgrades/{key}.json"
    if kind not in COORDINATION_LISTINGS:
        raise ValueError(f"{kind!r} is not a coordination document kind")
    return f"governance/{COORDINATION_LISTINGS[kind]}/{key}.json"


def _listing(name: str, entries: Mapping[str, MetaFile]) -> dict[str, Any]:
    return {name: {k: v.to_dict() for k, v in entries.items()}} if entries else {}


def _withdrawal(value: Any, where: str) -> str:
    r = _Reader(value, where)
    reason: str = r.string("reason", "", max_len=1024)
    return reason


@frozen
class Index:
    """The online-signed catalogue of releases per channel. Short expiry; version increases."""

    version: int
    expires: _dt.datetime
    channels: Mapping[str, IndexChannel]
    rollouts: Mapping[str, MetaFile] = field(factory=dict)  # release version -> rollout plan doc
    halts: Mapping[str, MetaFile] = field(factory=dict)  # release version -> halt doc
    extra: Mapping[str, Any] = field(factory=dict)
    validators: MetaFile | None = None  # the validator set document
    proposals: Mapping[str, MetaFile] = field(factory=dict)  # proposal id -> proposal doc
    deprecations: Mapping[str, MetaFile] = field(factory=dict)  # feature -> deprecation doc
    downgrades: Mapping[str, MetaFile] = field(factory=dict)  # to_version -> downgrade doc

    TYPE: ClassVar[str] = "index"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "index") -> Index:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        version = r.integer("version", minimum=1)
        expires = r.time("expires")
        channels = r.mapping("channels", IndexChannel.from_dict, max_items=64)
        for name in channels:
            _channel_name(name, f"{where}.channels")
        seen: dict[str, str] = {}
        for name, channel in channels.items():
            for v in (*channel.releases, *channel.withdrawn):
                if v in seen:
                    raise FormatError(f"{where}: {v} appears in channels {seen[v]} and {name}")
                seen[v] = name
        rollouts = r.mapping("rollouts", MetaFile.from_dict, {})
        halts = r.mapping("halts", MetaFile.from_dict, {})
        for v in (*rollouts, *halts):
            parse_version(v, f"{where}.rollouts/halts")
        validators = r.obj_("validators", MetaFile.from_dict, None)
        proposals = r.mapping("proposals", MetaFile.from_dict, {}, max_items=256)
        deprecations = r.mapping("deprecations", MetaFile.from_dict, {}, max_items=256)
        downgrades = r.mapping("downgrades", MetaFile.from_dict, {}, max_items=64)
        if proposals or deprecations:  # the governance documents load only when listed
            from .governance import _identifier

            for name in (*proposals, *deprecations):
                _identifier(name, f"{where}.proposals/deprecations")
        for v in downgrades:
            parse_version(v, f"{where}.downgrades")
        return cls(
            version, expires, channels, rollouts, halts, r.extra(),
            validators, proposals, deprecations, downgrades,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "expires": format_time(self.expires),
            "channels": {k: v.to_dict() for k, v in self.channels.items()},
            "rollouts": {k: v.to_dict() for k, v in self.rollouts.items()},
            "halts": {k: v.to_dict() for k, v in self.halts.items()},
            **({"validators": self.validators.to_dict()} if self.validators else {}),
            **_listing("proposals", self.proposals),
            **_listing("deprecations", self.deprecations),
            **_listing("downgrades", self.downgrades),
        }

    def coordination(self) -> list[tuple[str, str, MetaFile]]:
        """Every coordination document listed: (kind, key, its length and hashes); the key is
        "" for the validator set."""
        out: list[tuple[str, str, MetaFile]] = []
        if self.validators is not None:
            out.append(("validators", "", self.validators))
        for kind, table in (
            ("proposal", self.proposals),
            ("rollout", self.rollouts),
            ("halt", self.halts),
            ("deprecation", self.deprecations),
            ("downgrade", self.downgrades),
        ):
            out.extend((kind, key, meta) for key, meta in sorted(table.items()))
        return out

    def releases(self, channel: str) -> Mapping[str, MetaFile]:
        ch = self.channels.get(channel)
        return {} if ch is None else ch.releases

    def all_releases(self) -> dict[str, MetaFile]:
        out: dict[str, MetaFile] = {}
        for ch in self.channels.values():
            out.update(ch.releases)
        return out

    def all_withdrawn(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ch in self.channels.values():
            out.update(ch.withdrawn)
        return out

    def listing(self, version: str) -> MetaFile | None:
        """The length and hashes of ``version``'s manifest, from the channel listing it."""
        for ch in self.channels.values():
            meta = ch.releases.get(version)
            if meta is not None:
                return meta
        return None

    def withdrawal(self, version: str) -> str | None:
        """The reason ``version`` was withdrawn (maybe empty), or None if it was not."""
        for ch in self.channels.values():
            reason = ch.withdrawn.get(version)
            if reason is not None:
                return reason
        return None

    def channel_of(self, version: str) -> str | None:
        """The channel that lists or withdraws ``version`` (at most one does), or None."""
        for name, ch in self.channels.items():
            if version in ch.releases or version in ch.withdrawn:
                return name
        return None
