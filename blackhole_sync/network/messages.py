"""The peer-message gate: the one function that decides every message a peer sends.

Whatever the transport (gossip, IPFS pubsub, a BEP 44 value, a catch-up answer), a message
from a peer is decided here before anything acts on it or forwards it (ARCHITECTURE section 5):

* ``ACCEPT`` -- verified and new: deliver it, forward it, raise the publisher's seq floor;
* ``REJECT`` -- bad signature, a key that may not sign it, the wrong network, malformed:
  drop it and penalise the peer that sent it;
* ``IGNORE`` -- stale (seq at or below the floor), a duplicate, expired, or not yet verifiable
  (no trusted index to compare with): drop it without penalty -- an honest relay of an old
  message is not an attacker.

Who may sign what (the trust model, section 3):

================ ======================================= ====================================
kind             signed by                               seq floor kept per
================ ======================================= ====================================
announcement     the index role of the trusted root      the network (one index key)
status, health   the node's own key (``node_id``)        node id
halt, rollout,   the governance role's threshold         the document type
proposal
================ ======================================= ====================================

Floors are persisted in the node's state database, so a replay after a restart is ignored
too. The checks run in the order python-tuf's client uses: size cap and strict parse, the
signatures over the canonical bytes, and only then the document's fields. A transport calls
:meth:`PeerMessageGate.__call__` (a :data:`~blackhole_sync.fetch.MessageValidator`) from any
thread; the gate serialises its own state.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from attrs import frozen

from .._fsutil import sha256_hex
from ..clock import utcnow
from ..documents import (
    MAX_ANNOUNCEMENT_BYTES,
    Announcement,
    Envelope,
    HaltDoc,
    HealthReport,
    NodeStatusDoc,
    PrivateKey,
    Proposal,
    PublicKey,
    RolloutPlan,
    Root,
    verify_threshold,
)
from ..errors import FormatError, SecurityError
from ..fetch import PeerMessage, Verdict

__all__ = [
    "GOVERNANCE_KINDS",
    "KINDS",
    "NODE_KINDS",
    "Decided",
    "PeerMessageGate",
    "SeqFloors",
    "sign_node_document",
]

#: Kinds a node signs with its own identity key.
NODE_KINDS = frozenset({"status", "health"})
#: Kinds signed by the governance role.
GOVERNANCE_KINDS = frozenset({"halt", "rollout", "proposal"})
#: Every kind the gate knows; anything else is rejected.
KINDS = frozenset({"announcement"}) | NODE_KINDS | GOVERNANCE_KINDS

#: Accepted payloads the gate remembers for :meth:`PeerMessageGate.accepted`.
RECENT = 4096

#: Size caps per kind, before anything is parsed (a gossip message is small).
_CAPS: Mapping[str, int] = {
    "announcement": MAX_ANNOUNCEMENT_BYTES,
    "status": 4096,
    "health": 4096,
    "halt": 16 * 1024,
    "rollout": 64 * 1024,
    "proposal": 16 * 1024,
}
_MODELS: Mapping[str, Any] = {
    "status": NodeStatusDoc,
    "health": HealthReport,
    "halt": HaltDoc,
    "rollout": RolloutPlan,
    "proposal": Proposal,
}


class SeqFloors(Protocol):
    """Where the gate keeps the highest seq accepted per (kind, publisher)."""

    def get_seq_floor(self, kind: str, node_id: str) -> int | None: ...

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None: ...


@frozen
class Decided:
    """The gate's verdict on one message, why, and the verified document when accepted."""

    verdict: Verdict
    reason: str
    kind: str
    document: Any = None
    publisher: str = ""
    seq: int | None = None


class PeerMessageGate:
    """Decides peer messages against a node's trusted root (see the module docstring).

    ``root()`` returns the currently trusted root (its keys, roles and network id);
    ``floors`` persists seq floors (:class:`~blackhole_sync.node.StateDB` does); ``clock``
    gives the reference time for expiry. ``on_accept`` hears every accepted message, after the
    floor was raised. The gate remembers the last :data:`RECENT` accepted payloads, so a
    consumer can ask :meth:`accepted` whether a delivered message really was accepted.
    """

    def __init__(
        self,
        root: Callable[[], Root],
        floors: SeqFloors,
        *,
        clock: Callable[[], _dt.datetime] = utcnow,
        on_accept: Callable[[Decided], None] | None = None,
    ) -> None:
        self._root = root
        self._floors = floors
        self._clock = clock
        self._on_accept = on_accept
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, str], Decided] = OrderedDict()
        self.counts: dict[str, int] = {"accept": 0, "reject": 0, "ignore": 0}

    def __call__(self, message: PeerMessage) -> Verdict:
        return self.decide(message).verdict

    def decide(self, message: PeerMessage) -> Decided:
        """The verdict on ``message``; raises nothing (a bug in a check rejects the message)."""
        with self._lock:
            decided = self._decide(message)
            self.counts[decided.verdict.value] += 1
            if decided.verdict is Verdict.ACCEPT:
                self._recent[(message.kind, sha256_hex(message.payload))] = decided
                while len(self._recent) > RECENT:
                    self._recent.popitem(last=False)
        if decided.verdict is Verdict.ACCEPT and self._on_accept is not None:
            self._on_accept(decided)
        return decided

    def accepted(self, message: PeerMessage) -> Decided | None:
        """The gate's acceptance of exactly this message, if it accepted it recently."""
        with self._lock:
            return self._recent.get((message.kind, sha256_hex(message.payload)))

    # -- the decision ---------------------------------------------------------------------------

    def _decide(self, message: PeerMessage) -> Decided:
        kind = message.kind

        def reject(reason: str) -> Decided:
            return Decided(Verdict.REJECT, reason, kind)

        def ignore(reason: str) -> Decided:
            return Decided(Verdict.IGNORE, reason, kind)

        if kind not in KINDS:
            return reject(f"unknown kind {kind!r}")
        if len(message.payload) > _CAPS[kind]:
            return reject(f"{len(message.payload)} bytes, over the {_CAPS[kind]}-byte cap")
        try:
            envelope = Envelope.from_bytes(message.payload, expected_type=kind)
        except FormatError as exc:
            return reject(f"malformed: {exc}")
        root = self._root()
        try:
            publisher = self._verify_signer(kind, envelope, root)
            document = envelope.parse(
                Announcement.from_dict if kind == "announcement" else _MODELS[kind].from_dict
            )
        except SecurityError as exc:
            return reject(str(exc))
        network = getattr(document, "network_id", root.network_id)
        if network != root.network_id:
            return reject(f"network {network!r}, this node is on {root.network_id!r}")
        if kind in NODE_KINDS and document.node_id != publisher:
            return reject("signed by a key other than the node it speaks for")
        expires = getattr(document, "expires", None)
        if expires is not None and expires <= self._clock():
            return ignore("expired")
        seq = _seq_of(kind, document)
        floor_key = _floor_key(kind, publisher)
        floor = self._floors.get_seq_floor(kind, floor_key)
        if floor is not None and seq <= floor:
            return ignore(f"seq {seq} at or below the floor {floor}")
        self._floors.set_seq_floor(kind, floor_key, seq)
        return Decided(Verdict.ACCEPT, "verified and new", kind, document, publisher, seq)

    def _verify_signer(self, kind: str, envelope: Envelope, root: Root) -> str:
        """Check the signatures; return who published (a key id or a node id)."""
        if kind == "announcement":
            return ",".join(sorted(root.verify_role(envelope, "index")))
        if kind in GOVERNANCE_KINDS:
            root.verify_role(envelope, "governance")
            return "governance"
        # a node document: exactly one signature, by the key named in node_id
        node_id = envelope.signed.get("node_id")
        if not isinstance(node_id, str):
            raise SecurityError("a node document names no node_id")
        try:
            key = PublicKey.from_hex(node_id)
        except FormatError as exc:
            raise SecurityError(f"node_id is not an ed25519 key: {exc}") from exc
        verify_threshold(
            envelope.signed_bytes, envelope.signatures, {key.keyid: key}, [key.keyid], 1,
            what=f"{kind} of node {node_id[:16]}",
        )  # fmt: skip
        return key.hex


def _seq_of(kind: str, document: Any) -> int:
    if kind == "announcement":
        return int(document.index_version)
    if kind in NODE_KINDS:
        return int(document.seq)
    return int(document.version)  # governance documents are versioned


def _floor_key(kind: str, publisher: str) -> str:
    if kind == "announcement":
        return "index"  # one index role per network; key rotation keeps the floor
    if kind in GOVERNANCE_KINDS:
        return "governance"
    return publisher


def sign_node_document(document: Any, key: PrivateKey) -> bytes:
    """The signed bytes of a node document (status, health, vote) signed by ``key``."""
    return Envelope.sign(document.to_dict(), [key]).raw
