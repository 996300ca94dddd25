"""Values exchanged between the engine and its caller, and the engine's errors.

Errors, grouped by who is at fault::

    GossipError                 anything raised by this package
    ├── NotRunningError         caller misuse: the host is not started / already stopped
    ├── PublishRefusedError     caller's own payload: too large, unknown kind, or its
    │                           validator did not ACCEPT it
    └── BridgeError             the asyncio bridge's trio thread failed to start or died
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, fields

__all__ = [
    "AdmitFn",
    "AnswerFn",
    "BridgeError",
    "Counters",
    "GossipError",
    "InboundMessage",
    "NotRunningError",
    "PublishRefusedError",
    "QueryAnswer",
    "ValidateFn",
    "Verdict",
]


class Verdict(enum.Enum):
    """The caller's decision about one inbound message.

    ACCEPT: deliver it to the subscriber and forward it to the mesh.
    REJECT: drop it, do not forward, and penalise the peer that sent it (peer
        scoring, P4): a bad signature, an unknown key, a wrong network.
    IGNORE: drop it, do not forward, no penalty: a stale or duplicate document,
        an expired one, one that cannot be verified yet. An honest relay can
        send those and must not be punished for it.
    """

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


#: ``validate(kind, payload, from_peer) -> Verdict``; ``from_peer`` is the base58
#: peer id of the peer that handed us the message (the one a REJECT penalises).
#: Synchronous on purpose: it runs inline for every inbound message, before the
#: message is delivered or forwarded, and must be cheap and free of I/O.
ValidateFn = Callable[[str, bytes, str], Verdict]
#: ``answer(kind) -> list of payloads``: this node's newest documents of a kind,
#: for catch-up queries from peers.
AnswerFn = Callable[[str], list[bytes]]
#: ``admit(peer_id, hello) -> bool``: whether to keep a freshly connected peer.
AdmitFn = Callable[[str, bytes], bool]


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One ACCEPTed gossip message handed to the caller."""

    kind: str
    payload: bytes
    #: Peer that forwarded it to us (base58 peer id).
    from_peer: str
    #: Peer that first published it (the libp2p message's signed origin).
    origin: str


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """What one peer answered to a catch-up query; unverified: validate it."""

    peer_id: str
    payloads: tuple[bytes, ...]


@dataclass(slots=True)
class Counters:
    """Running totals kept by the engine (read with :meth:`snapshot`)."""

    messages_received: int = 0
    messages_accepted: int = 0
    messages_rejected: int = 0
    messages_ignored: int = 0
    messages_duplicate: int = 0
    messages_rate_limited: int = 0
    messages_oversized: int = 0
    messages_graylisted: int = 0
    messages_dropped_queue_full: int = 0
    validator_errors: int = 0
    messages_published: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    peers_connected: int = 0
    peers_inbound: int = 0
    peers_outbound: int = 0
    peers_refused: int = 0
    dials_attempted: int = 0
    dials_failed: int = 0
    queries_sent: int = 0
    queries_answered: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, int]:
        """Return a plain copy (safe to hand to another thread)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


class GossipError(Exception):
    """Base of every error raised by this package."""


class NotRunningError(GossipError, RuntimeError):
    """The host is not running (not started yet, or stopped)."""


class PublishRefusedError(GossipError):
    """A payload could not be published; ``verdict`` is set when the validator refused it."""

    def __init__(self, message: str, verdict: Verdict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict


class BridgeError(GossipError):
    """The asyncio bridge's trio thread could not start or has died."""
