"""The downgrade: a deliberate, signed return to an older release.

A node's version never goes down by itself: an index that stops listing the newest release,
or a ``node update --version`` below the current one, is a rollback attack and stays refused.
The one way down that a node follows without its operator is this document, signed by the
release role's threshold (the same keys that sign releases): it names the network, the
release to return to (``to_version``, which must be a published release), and the
schema-migration floor -- the lowest database schema that release reads, so a node whose data
is below it refuses to follow. The index lists it by length and sha256, keyed by
``to_version``; ``version`` goes up when a downgrade to the same release is re-issued.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from .fields import SPEC_VERSION, _channel_name, _Reader, format_time

__all__ = ["Downgrade"]


@frozen
class Downgrade:
    """Return ``network_id``'s nodes to ``to_version``; their data schema must be at least
    ``schema_floor``."""

    network_id: str
    to_version: str
    schema_floor: int
    version: int
    expires: _dt.datetime
    reason: str = ""
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "downgrade"

    @property
    def subject(self) -> str:
        return f"downgrade:{self.to_version}"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "downgrade") -> Downgrade:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        return cls(
            _channel_name(r.string("network_id", max_len=64), f"{where}.network_id"),
            r.version("to_version"),
            r.integer("schema_floor"),
            r.integer("version", minimum=1),
            r.time("expires"),
            r.string("reason", "", max_len=1024),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "network_id": self.network_id,
            "to_version": self.to_version,
            "schema_floor": self.schema_floor,
            "version": self.version,
            "expires": format_time(self.expires),
            "reason": self.reason,
        }
