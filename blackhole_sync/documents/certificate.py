"""The lock-in certificate: the votes that made a proposal reach its threshold, for any node to
check and adopt.

A node that locks a proposal in (at the end of the signalling window, by its own tally) spreads
a certificate so that a node that missed the votes reaches the same state. The certificate is
no one's word: it carries the votes themselves, each signed by its validator's key, in a
compact form -- the fields every vote for the proposal shares (network id, proposal id,
release digest, support) are written once, and each vote keeps its node id, seq, expiry and
signature. :meth:`LockInCertificate.vote_bytes` rebuilds the exact canonical bytes each
validator signed (a :class:`~blackhole_sync.documents.Vote` without unknown fields), so the
signatures are checked over the same bytes as the gossiped votes.

Its envelope has no signatures of its own (``"signatures": []``): two nodes holding the same
votes build byte-identical certificates, which gossip then carries as one message. Whether it
proves anything is decided by whoever receives it (the peer-message gate): every vote by a
distinct key of the validator set, bound to this network, proposal and release, unexpired at
the end of the signalling window, and together reaching the proposal's threshold.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError
from .canonical import canonical_bytes
from .fields import _HEX64, SPEC_VERSION, _channel_name, _keyid, _Reader, format_time
from .node_documents import Vote

__all__ = ["MAX_CERTIFIED_VOTES", "CertifiedVote", "LockInCertificate"]

#: Most votes one certificate carries (a validator set lists at most 1024 keys).
MAX_CERTIFIED_VOTES = 1024
_SIG_HEX = re.compile(r"[0-9a-f]{128}\Z")


@frozen
class CertifiedVote:
    """One supporting vote inside a certificate: who, its seq and expiry, its signature."""

    node_id: str
    seq: int
    expires: _dt.datetime
    sig: str

    @classmethod
    def from_dict(cls, obj: Any, where: str = "vote") -> CertifiedVote:
        r = _Reader(obj, where)
        node_id = _keyid(r.string("node_id", max_len=64), f"{where}.node_id")
        seq = r.integer("seq")
        expires = r.time("expires")
        sig = r.string("sig", max_len=128)
        if not _SIG_HEX.match(sig):
            raise FormatError(f"{where}.sig: expected 128 lowercase hex digits")
        if r.extra():
            raise FormatError(f"{where}: unknown fields {sorted(r.extra())}")
        return cls(node_id, seq, expires, sig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "seq": self.seq,
            "expires": format_time(self.expires),
            "sig": self.sig,
        }


@frozen
class LockInCertificate:
    """Supporting votes for ``proposal`` on ``network_id``, bound to ``release_digest``."""

    network_id: str
    proposal: str
    release_digest: str
    votes: tuple[CertifiedVote, ...]
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "certificate"

    def vote(self, entry: CertifiedVote) -> Vote:
        """The vote ``entry`` stands for (support: yes)."""
        return Vote(
            entry.node_id,
            self.network_id,
            entry.seq,
            entry.expires,
            self.proposal,
            self.release_digest,
            True,
        )

    def vote_bytes(self, entry: CertifiedVote) -> bytes:
        """The canonical bytes ``entry``'s validator signed."""
        return canonical_bytes(self.vote(entry).to_dict())

    @classmethod
    def from_dict(cls, obj: Any, where: str = "certificate") -> LockInCertificate:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        network_id = _channel_name(r.string("network_id", max_len=64), f"{where}.network_id")
        proposal = r.string("proposal", max_len=64)
        digest = r.string("release_digest", max_len=64)
        if not _HEX64.match(digest):
            raise FormatError(f"{where}.release_digest: expected 64 lowercase hex digits")
        votes = r.items("votes", CertifiedVote.from_dict, max_items=MAX_CERTIFIED_VOTES)
        if not votes:
            raise FormatError(f"{where}.votes: a certificate carries at least one vote")
        if len({v.node_id for v in votes}) != len(votes):
            raise FormatError(f"{where}.votes: a node's vote appears twice")
        return cls(network_id, proposal, digest, votes, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "network_id": self.network_id,
            "proposal": self.proposal,
            "release_digest": self.release_digest,
            "votes": [v.to_dict() for v in self.votes],
        }
