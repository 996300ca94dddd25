"""Network coordination: the peer-message gate, announcements, consensus (BIP9-style protocol
activation), phased rollout, compatibility (fork ids, translation, deprecations), the network
view of an update, and the node's coordination runtime.

Modules, bottom up: ``messages`` (the gate), ``announce``, ``consensus``, ``rollout``,
``compat``, ``health`` (pure: no I/O), ``governance`` (a node's verified coordination
documents), ``coordinator`` (one node's state, persisted), ``service`` (what ``node run``
runs), ``peers`` (the process's peer transports).
"""

from __future__ import annotations

from .announce import make_announcement, make_announcements
from .compat import (
    CompatibilityManager,
    DeprecationWarningInfo,
    ForkId,
    ProtocolTranslator,
    admit,
    fork_id,
    hello_bytes,
    parse_hello,
)
from .consensus import (
    Activation,
    ConsensusResult,
    ProposalState,
    ProposalTracker,
    UpdateConsensus,
    VotingStatus,
    certificate_bytes,
    make_vote,
)
from .coordinator import Coordinator
from .governance import CoordinationDocs, load_coordination, refresh_coordination
from .health import NetworkView
from .messages import (
    GOVERNANCE_KINDS,
    KINDS,
    NODE_KINDS,
    RELEASE_KINDS,
    Decided,
    PeerMessageGate,
    SeqFloors,
    sign_node_document,
)
from .peers import PEER_CAPABILITIES, PeerNetwork
from .rollout import (
    HealthTally,
    PhasedRollout,
    PhaseMetrics,
    RolloutDecision,
    node_phase,
    node_position,
    rollout_decision,
)

__all__ = [
    "GOVERNANCE_KINDS",
    "KINDS",
    "NODE_KINDS",
    "PEER_CAPABILITIES",
    "RELEASE_KINDS",
    "Activation",
    "CompatibilityManager",
    "ConsensusResult",
    "CoordinationDocs",
    "Coordinator",
    "Decided",
    "DeprecationWarningInfo",
    "ForkId",
    "HealthTally",
    "NetworkView",
    "PeerMessageGate",
    "PeerNetwork",
    "PhaseMetrics",
    "PhasedRollout",
    "ProposalState",
    "ProposalTracker",
    "ProtocolTranslator",
    "RolloutDecision",
    "SeqFloors",
    "UpdateConsensus",
    "VotingStatus",
    "admit",
    "certificate_bytes",
    "fork_id",
    "hello_bytes",
    "load_coordination",
    "make_announcement",
    "make_announcements",
    "make_vote",
    "node_phase",
    "node_position",
    "parse_hello",
    "refresh_coordination",
    "rollout_decision",
    "sign_node_document",
]
