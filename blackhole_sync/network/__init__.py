"""Network coordination: the peer-message gate, announcements, and (growing) consensus, phased
rollout, compatibility and network metrics."""

from __future__ import annotations

from .announce import make_announcement, make_announcements
from .peers import PEER_CAPABILITIES, PeerNetwork
from .messages import (
    GOVERNANCE_KINDS,
    KINDS,
    NODE_KINDS,
    Decided,
    PeerMessageGate,
    SeqFloors,
    sign_node_document,
)

__all__ = [
    "GOVERNANCE_KINDS",
    "KINDS",
    "NODE_KINDS",
    "PEER_CAPABILITIES",
    "PeerNetwork",
    "Decided",
    "PeerMessageGate",
    "SeqFloors",
    "make_announcement",
    "make_announcements",
    "sign_node_document",
]
