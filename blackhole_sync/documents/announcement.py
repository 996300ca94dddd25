"""The announcement: a small signed pointer to the newest index, for gossip and the DHT.

Signed by the index key (the online role that signs the index itself), so only the holder of
that key can announce. It names the network and channel, the index version (which is also its
sequence number: a BEP 44 item's ``seq`` and the gossip seq floor), the index's length and
sha256, and an expiry. The same bytes travel in a gossip message and in a BEP 44 mutable item,
whose value is capped at 1000 bytes bencoded; hence :data:`MAX_ANNOUNCEMENT_BYTES`.

An announcement is a hint, never a source of truth: a node that accepts one fetches the index
it names from its sources and verifies that as always.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from .fields import SPEC_VERSION, MetaFile, _channel_name, _Reader, format_time

__all__ = ["MAX_ANNOUNCEMENT_BYTES", "Announcement"]

#: The largest signed announcement: a BEP 44 value is at most 1000 bytes once bencoded
#: (``996:`` + 996 bytes); gossip uses the same bytes.
MAX_ANNOUNCEMENT_BYTES = 996


@frozen
class Announcement:
    """The newest index of ``network_id``'s ``channel``: its version, length and sha256."""

    network_id: str
    channel: str
    index_version: int
    index: MetaFile
    expires: _dt.datetime
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "announcement"

    @property
    def seq(self) -> int:
        """The sequence number peers and the DHT order announcements by."""
        return self.index_version

    @classmethod
    def from_dict(cls, obj: Any, where: str = "announcement") -> Announcement:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        return cls(
            _channel_name(r.string("network_id", max_len=64), f"{where}.network_id"),
            _channel_name(r.string("channel", max_len=64), f"{where}.channel"),
            r.integer("index_version", minimum=1),
            r.obj_("index", MetaFile.from_dict),
            r.time("expires"),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "network_id": self.network_id,
            "channel": self.channel,
            "index_version": self.index_version,
            "index": self.index.to_dict(),
            "expires": format_time(self.expires),
        }
