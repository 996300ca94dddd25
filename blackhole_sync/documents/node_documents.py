"""Documents a node signs with its own identity key: votes, health reports, status.

Each carries the node's id (its ed25519 public key), the network id, a sequence number that
strictly increases per node, and an expiry; whose votes and reports count is the validator
set's business, not this module's. They travel between peers (gossip), so they are small.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from .fields import _channel_name, _drop_unset, _keyid, _Reader, format_time
from .signing import PublicKey

__all__ = ["HealthReport", "NodeStatusDoc", "Vote"]


def _node_fields(r: _Reader) -> tuple[str, str, int, _dt.datetime]:
    """The fields every node document starts with: node id, network id, seq, expiry."""
    node_id = PublicKey.from_hex(r.string("node_id", max_len=64)).hex
    return (
        node_id,
        _channel_name(r.string("network_id", max_len=64), "network_id"),
        r.integer("seq"),
        r.time("expires"),
    )


@frozen
class Vote:
    node_id: str
    network_id: str
    seq: int
    expires: _dt.datetime
    proposal: str
    release_digest: str  # sha256 of the release manifest voted for
    support: bool
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "vote"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "vote") -> Vote:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        node_id, network_id, seq, expires = _node_fields(r)
        proposal = r.string("proposal", max_len=128)
        digest = _keyid(r.string("release_digest", max_len=64), f"{where}.release_digest")
        return cls(
            node_id, network_id, seq, expires, proposal, digest, r.boolean("support"), r.extra()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "node_id": self.node_id,
            "network_id": self.network_id,
            "seq": self.seq,
            "expires": format_time(self.expires),
            "proposal": self.proposal,
            "release_digest": self.release_digest,
            "support": self.support,
        }


@frozen
class HealthReport:
    node_id: str
    network_id: str
    seq: int
    expires: _dt.datetime
    release: str
    release_digest: str
    healthy: bool
    detail: Mapping[str, Any] = field(factory=dict)
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "health"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "health") -> HealthReport:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        node_id, network_id, seq, expires = _node_fields(r)
        release = r.version("release")
        digest = _keyid(r.string("release_digest", max_len=64), f"{where}.release_digest")
        healthy = r.boolean("healthy")
        detail = r.obj_("detail", lambda v, w: _Reader(v, w).extra(), {})
        return cls(node_id, network_id, seq, expires, release, digest, healthy, detail, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "node_id": self.node_id,
            "network_id": self.network_id,
            "seq": self.seq,
            "expires": format_time(self.expires),
            "release": self.release,
            "release_digest": self.release_digest,
            "healthy": self.healthy,
            "detail": dict(self.detail),
        }


@frozen
class NodeStatusDoc:
    node_id: str
    network_id: str
    seq: int
    expires: _dt.datetime
    current_version: str | None
    state: str
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "status"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "status") -> NodeStatusDoc:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        node_id, network_id, seq, expires = _node_fields(r)
        current = r.version("current_version", None)
        return cls(
            node_id, network_id, seq, expires, current, r.string("state", max_len=64), r.extra()
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "_type": self.TYPE,
                "node_id": self.node_id,
                "network_id": self.network_id,
                "seq": self.seq,
                "expires": format_time(self.expires),
                "current_version": self.current_version,
                "state": self.state,
            },
        )
