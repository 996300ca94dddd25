"""The index: the online-signed catalogue of releases per channel.

Signed by the index key; short expiry; its version strictly increases. Per channel it lists
each release's manifest by length and sha256, and the withdrawn (yanked) releases; it also
lists the current rollout plans and halts by length and sha256.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError
from .fields import SPEC_VERSION, MetaFile, _channel_name, _Reader, format_time, parse_version

__all__ = ["Index", "IndexChannel"]


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
        return cls(version, expires, channels, rollouts, halts, r.extra())

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
        }

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
