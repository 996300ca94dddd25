"""Documents a node signs with its own identity key: votes, health reports, status.

Each carries the node's id (its ed25519 public key), the network id, a sequence number that
strictly increases per node, and an expiry; whose votes and reports count is the validator
set's business, not this module's. They travel between peers (gossip), so they are small.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError
from .canonical import MAX_INT
from .envelope import Envelope
from .fields import (
    _HEX64,
    _NAME_RE,
    _channel_name,
    _drop_unset,
    _keyid,
    _Reader,
    format_time,
    parse_time,
    parse_version,
)
from .signing import PublicKey, Signature

__all__ = ["HealthReport", "NodeStatusDoc", "Vote", "plain_vote_envelope"]


@functools.lru_cache(maxsize=8192)
def _node_id(value: str) -> str:
    """A node id: the hex of an ed25519 public key (cached: the same nodes speak often)."""
    return PublicKey.from_hex(value).hex


def _node_fields(r: _Reader) -> tuple[str, str, int, _dt.datetime]:
    """The fields every node document starts with: node id, network id, seq, expiry."""
    node_id = _node_id(r.string("node_id", max_len=64))
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
        plain = _plain_vote(obj)
        if plain is not None:
            return plain
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


_VOTE_FIELDS = frozenset(
    {"_type", "node_id", "network_id", "seq", "expires", "proposal", "release_digest", "support"}
)


def _plain_vote(obj: Any) -> Vote | None:
    """:meth:`Vote.from_dict` for a vote of exactly the known fields, plainly valid: the same
    checks, accept-only (a tally parses thousands). Any doubt returns None and the full
    parser decides, with its exact errors."""
    if type(obj) is not dict or obj.keys() != _VOTE_FIELDS or obj["_type"] != Vote.TYPE:
        return None
    node_id, network_id, seq = obj["node_id"], obj["network_id"], obj["seq"]
    expires, proposal, digest = obj["expires"], obj["proposal"], obj["release_digest"]
    support = obj["support"]
    if (
        type(node_id) is not str
        or _HEX64.match(node_id) is None
        or type(network_id) is not str
        or _NAME_RE.match(network_id) is None
        or type(seq) is not int
        or not 0 <= seq <= MAX_INT
        or type(expires) is not str
        or type(proposal) is not str
        or len(proposal) > 128
        or type(digest) is not str
        or _HEX64.match(digest) is None
        or type(support) is not bool
    ):
        return None
    try:
        when = parse_time(expires)
    except FormatError:
        return None
    return Vote(node_id, network_id, seq, when, proposal, digest, support, {})


#: A signed vote exactly as :func:`Envelope.sign` writes one: canonical JSON (keys sorted, no
#: spaces), one signature, the known fields only, every value in a charset that JSON writes
#: without escapes (so the text between the quotes is the string itself). ASCII only.
_PLAIN_VOTE_ENVELOPE = re.compile(
    r'\{"signatures":\[\{"keyid":"([0-9a-f]{64})","sig":"([0-9a-f]{128})"\}\],"signed":'
    r'(\{"_type":"vote",'
    r'"expires":"([0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z)",'
    r'"network_id":"([a-z0-9][a-z0-9._-]{0,63})",'
    r'"node_id":"([0-9a-f]{64})",'
    r'"proposal":"([A-Za-z0-9._-]{1,128})",'
    r'"release_digest":"([0-9a-f]{64})",'
    r'"seq":(0|[1-9][0-9]{0,18}),'
    r'"support":(true|false)\})\}',
    re.ASCII,
)


def plain_vote_envelope(data: bytes) -> tuple[Envelope, Vote] | None:
    """``Envelope.from_bytes(data, expected_type="vote")`` and its :class:`Vote` in one step,
    for a vote in the exact canonical form every writer here produces (a tally reads thousands).

    Why this equals the general path: the pattern admits only canonical JSON of the known
    fields (sorted, each once, no escapes, no floats, no leading zeros), so the bytes between
    ``"signed":`` and the final ``}`` are the canonical encoding of the parsed ``signed``; each
    value passes the rule :meth:`Vote.from_dict` applies (the time's calendar, the seq bound
    and the node id are checked below). Anything else -- or any doubt -- returns None, never
    an error, and the general parser decides with its exact errors. No signature is checked.
    """
    if type(data) is not bytes or not data.isascii():
        return None
    match = _PLAIN_VOTE_ENVELOPE.fullmatch(data.decode("ascii"))
    if match is None:
        return None
    # node_id: 64 lowercase hex digits, which _node_id would return unchanged (any 32 bytes
    # make a key), so the general path's cached check is not repeated here
    keyid, sig, _, time_text, network_id, node_id, proposal, digest, seq_text, support_text = (
        match.groups()
    )
    seq = int(seq_text)
    if seq > MAX_INT:
        return None
    try:  # the pattern fixed the form and the clock's ranges: only the calendar can fail
        expires = _dt.datetime.fromisoformat(time_text)
    except ValueError:
        return None
    support = support_text == "true"
    signed = {
        "_type": Vote.TYPE,
        "expires": time_text,
        "network_id": network_id,
        "node_id": node_id,
        "proposal": proposal,
        "release_digest": digest,
        "seq": seq,
        "support": support,
    }
    signed_bytes = data[match.start(3) : match.end(3)]  # ASCII: str and bytes offsets agree
    envelope = Envelope(signed, (Signature(keyid, sig),), signed_bytes, data)
    return envelope, Vote(node_id, network_id, seq, expires, proposal, digest, support, _NO_EXTRA)


#: The unknown fields of a plain vote: none (one read-only mapping shared by all of them).
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


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
    """A node's update status, broadcast to its peers (metrics only: unauthenticated beyond
    the node's own key -- any node can claim anything about itself).

    ``since`` is when ``current_version`` became current (propagation speed); ``held`` the
    versions whose blobs the node keeps and serves (source choice); ``fork_id`` the node's
    protocol fork id (compatibility view).
    """

    node_id: str
    network_id: str
    seq: int
    expires: _dt.datetime
    current_version: str | None
    state: str
    since: _dt.datetime | None = None
    held: tuple[str, ...] = ()
    fork_id: str | None = None
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "status"
    MAX_HELD: ClassVar[int] = 8

    @classmethod
    def from_dict(cls, obj: Any, where: str = "status") -> NodeStatusDoc:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        node_id, network_id, seq, expires = _node_fields(r)
        current = r.version("current_version", None)
        state = r.string("state", max_len=64)
        since = r.time("since", None)
        held = r.items("held", parse_version, (), max_items=cls.MAX_HELD)
        fork_id = r.string("fork_id", None, max_len=16)
        return cls(
            node_id, network_id, seq, expires, current, state, since, held, fork_id, r.extra()
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
                "since": None if self.since is None else format_time(self.since),
                "held": list(self.held) if self.held else None,
                "fork_id": self.fork_id,
            },
        )
