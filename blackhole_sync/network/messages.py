"""The peer-message gate: the one function that decides every message a peer sends.

Whatever the transport (gossip, IPFS pubsub, a BEP 44 value, a catch-up answer), a message
from a peer is decided here before anything acts on it or forwards it (ARCHITECTURE section 5):

* ``ACCEPT`` -- verified and new: deliver it, forward it, raise the publisher's seq floor;
* ``REJECT`` -- bad signature, a key that may not sign it, the wrong network, malformed:
  drop it and penalise the peer that sent it;
* ``IGNORE`` -- stale (seq at or below the floor), a duplicate, expired, or not yet verifiable
  (no trusted index to compare with): drop it without penalty -- an honest relay of an old
  message is not an attacker.

Who may sign what (the trust model, section 3), and whose floor a message raises:

================ ======================================= ====================================
kind             signed by                               seq floor kept per
================ ======================================= ====================================
announcement     the index role of the trusted root      the network (one index key)
status, health   the node's own key (``node_id``)        node id
vote             a validator's own key, for a proposal   (proposal, node id)
                 the node knows, bound to its release
                 digest and this network
certificate      nobody itself: each vote inside by its  the proposal (one certificate each)
                 validator, reaching the threshold
halt, rollout,   the governance role's threshold         the document's subject (a release's
proposal,                                                plan or halt, a proposal id, the
validators,                                              validator set, a feature)
deprecation
downgrade        the release role's threshold            the version it returns to
================ ======================================= ====================================

Votes and certificates need the node's verified validator set and the proposal they name
(``validators()`` and ``proposal(id)``): without them a vote is not yet verifiable and is
ignored; a vote or certificate vote by a key outside the validator set, or bound to another
release or network, is rejected. Health reports from keys outside the validator set are
accepted (they feed metrics); only the consumers count them, by the validator set.

Floors are persisted in the node's state database, so a replay after a restart is ignored
too. The checks run in the order python-tuf's client uses: size cap and strict parse, the
signatures over the canonical bytes, and only then the document's fields. A transport calls
:meth:`PeerMessageGate.__call__` (a :data:`~blackhole_sync.fetch.MessageValidator`) from any
thread; the gate serialises its own state.

The first part of a decision -- parse, signatures, model -- depends on nothing but the bytes
and the trusted root; ``shared`` (a mapping) lets gates over the same root reuse it for the
same payload (the network simulator's many nodes verify each distinct message once; the
result is the one each would compute). The rest -- the validator set, proposals, expiry,
floors -- is each gate's own.
"""

from __future__ import annotations

import datetime as _dt
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

from attrs import frozen

from ..clock import utcnow
from ..documents import (
    MAX_ANNOUNCEMENT_BYTES,
    MAX_SIZES,
    Announcement,
    Deprecation,
    Downgrade,
    Envelope,
    HaltDoc,
    HealthReport,
    LockInCertificate,
    NodeStatusDoc,
    PrivateKey,
    Proposal,
    PublicKey,
    RolloutPlan,
    Root,
    ValidatorSet,
    Vote,
    governance_subject,
    plain_vote_envelope,
)
from ..errors import FormatError, SecurityError, SignatureError
from ..fetch import PeerMessage, Verdict
from .consensus import certificate_problem, vote_problem

__all__ = [
    "GOVERNANCE_KINDS",
    "KINDS",
    "NODE_KINDS",
    "RELEASE_KINDS",
    "Decided",
    "PeerMessageGate",
    "SeqFloors",
    "sign_node_document",
]

#: Kinds a node signs with its own identity key.
NODE_KINDS = frozenset({"status", "health", "vote"})
#: Kinds signed by the governance role.
GOVERNANCE_KINDS = frozenset({"halt", "rollout", "proposal", "validators", "deprecation"})
#: Kinds signed by the release role.
RELEASE_KINDS = frozenset({"downgrade"})
#: Every kind the gate knows; anything else is rejected.
KINDS = frozenset({"announcement", "certificate"}) | NODE_KINDS | GOVERNANCE_KINDS | RELEASE_KINDS

#: Accepted payloads the gate remembers for :meth:`PeerMessageGate.accepted`.
RECENT = 4096

#: Size caps per kind, before anything is parsed (a gossip message is small).
_CAPS: Mapping[str, int] = {
    "announcement": MAX_ANNOUNCEMENT_BYTES,
    "status": 4096,
    "health": 4096,
    "vote": 4096,
    "halt": 16 * 1024,
    "rollout": 64 * 1024,
    "proposal": 16 * 1024,
    "deprecation": 16 * 1024,
    "downgrade": 16 * 1024,
    "validators": MAX_SIZES["validators"],
    "certificate": MAX_SIZES["certificate"],
}
_MODELS: Mapping[str, Any] = {
    "announcement": Announcement,
    "status": NodeStatusDoc,
    "health": HealthReport,
    "vote": Vote,
    "halt": HaltDoc,
    "rollout": RolloutPlan,
    "proposal": Proposal,
    "validators": ValidatorSet,
    "deprecation": Deprecation,
    "downgrade": Downgrade,
    "certificate": LockInCertificate,
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
    envelope: Envelope | None = None


@frozen
class _Verified:
    """The context-free part of a decision: the envelope, the model, who signed it, and what
    the floors need."""

    envelope: Envelope
    document: Any
    publisher: str
    expires: _dt.datetime | None
    seq: int
    floor_key: str


#: Kinds bound to a proposal and the validator set.
_BOUND = frozenset({"vote", "certificate"})


class PeerMessageGate:
    """Decides peer messages against a node's trusted root (see the module docstring).

    ``root()`` returns the currently trusted root (its keys, roles and network id);
    ``floors`` persists seq floors (:class:`~blackhole_sync.node.StateDB` does); ``clock``
    gives the reference time for expiry; ``validators()`` and ``proposal(id)`` the node's
    verified validator set and proposals (None: not known yet); ``shared`` a verification
    cache shared by gates over the same root (see the module docstring). ``on_accept`` hears every accepted message, after the
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
        validators: Callable[[], ValidatorSet | None] = lambda: None,
        proposal: Callable[[str], Proposal | None] = lambda _id: None,
        shared: MutableMapping[tuple[str, bytes, int], _Verified | str] | None = None,
        recent: int = RECENT,
    ) -> None:
        self._root = root
        self._floors = floors
        self._clock = clock
        self._on_accept = on_accept
        self._validators = validators
        self._proposal = proposal
        self._shared = shared
        self._keep = recent
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, bytes], Decided] = OrderedDict()
        self.counts: dict[str, int] = {"accept": 0, "reject": 0, "ignore": 0}

    def __call__(self, message: PeerMessage) -> Verdict:
        return self.decide(message).verdict

    def decide(self, message: PeerMessage) -> Decided:
        """The verdict on ``message``; raises nothing (a bug in a check rejects the message)."""
        payload = bytes(message.payload)
        with self._lock:
            try:
                decided = self._decide(message.kind, payload)
            except (SecurityError, ValueError) as exc:  # a check tripped on hostile input
                decided = Decided(Verdict.REJECT, f"malformed: {exc}", message.kind)
            self.counts[decided.verdict.value] += 1
            if decided.verdict is Verdict.ACCEPT and self._keep:
                # keyed by the payload itself: a dict compares keys in full, and an accepted
                # document keeps its bytes anyway (``envelope.raw``)
                self._recent[(message.kind, payload)] = decided
                while len(self._recent) > self._keep:
                    self._recent.popitem(last=False)
        if decided.verdict is Verdict.ACCEPT and self._on_accept is not None:
            self._on_accept(decided)
        return decided

    def accepted(self, message: PeerMessage) -> Decided | None:
        """The gate's acceptance of exactly this message, if it accepted it recently."""
        with self._lock:
            return self._recent.get((message.kind, bytes(message.payload)))

    # -- the decision ---------------------------------------------------------------------------

    def _decide(self, kind: str, payload: bytes) -> Decided:
        if kind not in KINDS:
            return Decided(Verdict.REJECT, f"unknown kind {kind!r}", kind)
        if len(payload) > _CAPS[kind]:
            reason = f"{len(payload)} bytes, over the {_CAPS[kind]}-byte cap"
            return Decided(Verdict.REJECT, reason, kind)
        root = self._root()
        verified = self._verified(kind, payload, root)
        if type(verified) is str:
            return Decided(Verdict.REJECT, verified, kind)
        assert isinstance(verified, _Verified)
        document = verified.document
        if kind in _BOUND:
            problem = self._binding(kind, document, root.network_id)
            if problem is not None:
                return problem
        if verified.expires is not None and verified.expires <= self._clock():
            return Decided(Verdict.IGNORE, "expired", kind)
        seq = verified.seq
        floor_key = verified.floor_key
        if kind == "certificate":
            proposal = self._proposal(document.proposal)
            floor_key = f"{document.proposal}@{proposal.version if proposal else 0}"
        floor = self._floors.get_seq_floor(kind, floor_key)
        if floor is not None and seq <= floor:
            if kind == "certificate":
                reason = "a certificate for this proposal was accepted already"
            else:
                reason = f"seq {seq} at or below the floor {floor}"
            return Decided(Verdict.IGNORE, reason, kind)
        self._floors.set_seq_floor(kind, floor_key, seq)
        return Decided(
            Verdict.ACCEPT,
            "verified and new",
            kind,
            document,
            verified.publisher,
            seq,
            verified.envelope,
        )

    def _verified(self, kind: str, payload: bytes, root: Root) -> _Verified | str:
        """Everything that depends only on the bytes and the root: the parse, the signatures,
        the model, the network and who speaks (a reason string when rejected). Shared between
        gates when asked (the key includes the root's version)."""
        key = (kind, payload, root.version)
        shared = self._shared
        if shared is not None:
            hit = shared.get(key)
            if hit is not None:
                return hit
        result = self._verify(kind, payload, root)
        if shared is not None:
            shared[key] = result
        return result

    def _verify(self, kind: str, payload: bytes, root: Root) -> _Verified | str:
        # a vote in canonical form is parsed in one step (the same envelope and model; a
        # tally reads thousands); any other payload goes through the general parser
        plain = plain_vote_envelope(payload) if kind == "vote" else None
        if plain is None:
            try:
                envelope = Envelope.from_bytes(payload, expected_type=kind)
            except FormatError as exc:
                return f"malformed: {exc}"
        else:
            envelope = plain[0]
        try:
            publisher = self._verify_signer(kind, envelope, root)  # before the model is built
            document: Any = envelope.parse(_MODELS[kind].from_dict) if plain is None else plain[1]
            if kind == "certificate":
                _verify_certificate_votes(document)
        except SecurityError as exc:
            return str(exc)
        network = getattr(document, "network_id", root.network_id)
        if network != root.network_id:
            return f"network {network!r}, this node is on {root.network_id!r}"
        if kind in NODE_KINDS and document.node_id != publisher:
            return "signed by a key other than the node it speaks for"
        return _Verified(
            envelope,
            document,
            publisher,
            getattr(document, "expires", None),
            _seq_of(kind, document),
            _floor_key(kind, publisher, document),
        )

    def _binding(self, kind: str, document: Any, network: str) -> Decided | None:
        """A vote's or certificate's ties to a known proposal, the validator set and the
        ``network``."""
        proposal = self._proposal(document.proposal)
        validators = self._validators()
        if proposal is None or validators is None:
            what = "proposal" if proposal is None else "validator set"
            return Decided(Verdict.IGNORE, f"not yet verifiable: no {what} known", kind)
        if kind == "vote":
            problem = vote_problem(document, proposal, validators, network)
            if problem is not None and "expires before" in problem:
                return Decided(Verdict.IGNORE, problem, kind)
        else:
            problem = certificate_problem(document, proposal, validators, network)
        if problem is not None:
            return Decided(Verdict.REJECT, problem, kind)
        return None

    def _verify_signer(self, kind: str, envelope: Envelope, root: Root) -> str:
        """Check the signatures; return who published (a key id or a node id)."""
        if kind == "announcement":
            return ",".join(sorted(root.verify_role(envelope, "index")))
        if kind in GOVERNANCE_KINDS:
            root.verify_role(envelope, "governance")
            return "governance"
        if kind in RELEASE_KINDS:
            root.verify_role(envelope, "release")
            return "release"
        if kind == "certificate":
            if envelope.signatures:
                raise SecurityError("a certificate carries no signatures of its own")
            return "certificate"
        # a node document: signed by the key named in node_id (a signature by it that
        # verifies; others are ignored, as a threshold of 1 over that one key would)
        node_id = envelope.signed.get("node_id")
        if not isinstance(node_id, str):
            raise SecurityError("a node document names no node_id")
        key, keyid = _node_key(node_id)
        message = envelope.signed_bytes
        for signature in envelope.signatures:
            if signature.keyid == keyid and key.verify(message, bytes.fromhex(signature.sig)):
                return node_id
        raise SignatureError(f"{kind} of node {node_id[:16]}: not signed by its own key")


@functools.lru_cache(maxsize=8192)
def _node_key(node_id: str) -> tuple[PublicKey, str]:
    """A node's key and key id from its node id (cached: the same validators vote often)."""
    try:
        key = PublicKey.from_hex(node_id)
    except FormatError as exc:
        raise SecurityError(f"node_id is not an ed25519 key: {exc}") from exc
    return key, key.keyid


def _verify_certificate_votes(certificate: LockInCertificate) -> None:
    """Every vote in ``certificate`` verifies under the key its node id names."""
    for entry in certificate.votes:
        key, _keyid = _node_key(entry.node_id)
        if not key.verify(certificate.vote_bytes(entry), bytes.fromhex(entry.sig)):
            raise SecurityError(f"certificate vote by {entry.node_id[:16]}... does not verify")


def _floor_key(kind: str, publisher: str, document: Any) -> str:
    if kind == "announcement":
        return "index"  # one index role per network; key rotation keeps the floor
    if kind in GOVERNANCE_KINDS or kind in RELEASE_KINDS:
        return governance_subject(document)
    if kind == "vote":
        return f"{document.proposal}/{publisher}"
    if kind == "certificate":
        return str(document.proposal)  # the gate adds the proposal's version
    return publisher


def _seq_of(kind: str, document: Any) -> int:
    if kind == "announcement":
        return int(document.index_version)
    if kind in NODE_KINDS:
        return int(document.seq)
    if kind == "certificate":
        return 1  # one per proposal
    return int(document.version)  # governance and release documents are versioned


def sign_node_document(document: Any, key: PrivateKey) -> bytes:
    """The signed bytes of a node document (status, health, vote) signed by ``key``."""
    return Envelope.sign(document.to_dict(), [key]).raw
