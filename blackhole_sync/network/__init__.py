"""Network coordination: the peer-message gate, announcements, consensus (BIP9-style protocol
activation), phased rollout, compatibility (fork ids, translation, deprecations), the network
view of an update, and the node's coordination runtime.

Modules, bottom up: ``messages`` (the gate), ``announce``, ``consensus``, ``rollout``,
``compat``, ``health`` (pure: no I/O), ``governance`` (a node's verified coordination
documents), ``coordinator`` (one node's state, persisted), ``service`` (what ``node run``
runs), ``peers`` (the process's peer transports).

Names load lazily (PEP 562): a name imports the module that defines it on first use, so a
command that reads no coordination state imports none of these modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module of this package that defines it
_EXPORTS: dict[str, str] = {
    "make_announcement": "announce",
    "make_announcements": "announce",
    "CompatibilityManager": "compat",
    "DeprecationWarningInfo": "compat",
    "ForkId": "compat",
    "ProtocolTranslator": "compat",
    "admit": "compat",
    "fork_id": "compat",
    "hello_bytes": "compat",
    "parse_hello": "compat",
    "Activation": "consensus",
    "ConsensusResult": "consensus",
    "ProposalState": "consensus",
    "ProposalTracker": "consensus",
    "UpdateConsensus": "consensus",
    "VotingStatus": "consensus",
    "certificate_bytes": "consensus",
    "make_vote": "consensus",
    "Coordinator": "coordinator",
    "CoordinationDocs": "governance",
    "load_coordination": "governance",
    "refresh_coordination": "governance",
    "NetworkView": "health",
    "GOVERNANCE_KINDS": "messages",
    "KINDS": "messages",
    "NODE_KINDS": "messages",
    "RELEASE_KINDS": "messages",
    "Decided": "messages",
    "PeerMessageGate": "messages",
    "SeqFloors": "messages",
    "sign_node_document": "messages",
    "PEER_CAPABILITIES": "peers",
    "PeerNetwork": "peers",
    "HealthTally": "rollout",
    "PhasedRollout": "rollout",
    "PhaseMetrics": "rollout",
    "RolloutDecision": "rollout",
    "node_phase": "rollout",
    "node_position": "rollout",
    "rollout_decision": "rollout",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # static names for type checkers
    from .announce import (
        make_announcement as make_announcement,
        make_announcements as make_announcements,
    )
    from .compat import (
        CompatibilityManager as CompatibilityManager,
        DeprecationWarningInfo as DeprecationWarningInfo,
        ForkId as ForkId,
        ProtocolTranslator as ProtocolTranslator,
        admit as admit,
        fork_id as fork_id,
        hello_bytes as hello_bytes,
        parse_hello as parse_hello,
    )
    from .consensus import (
        Activation as Activation,
        ConsensusResult as ConsensusResult,
        ProposalState as ProposalState,
        ProposalTracker as ProposalTracker,
        UpdateConsensus as UpdateConsensus,
        VotingStatus as VotingStatus,
        certificate_bytes as certificate_bytes,
        make_vote as make_vote,
    )
    from .coordinator import Coordinator as Coordinator
    from .governance import (
        CoordinationDocs as CoordinationDocs,
        load_coordination as load_coordination,
        refresh_coordination as refresh_coordination,
    )
    from .health import NetworkView as NetworkView
    from .messages import (
        GOVERNANCE_KINDS as GOVERNANCE_KINDS,
        KINDS as KINDS,
        NODE_KINDS as NODE_KINDS,
        RELEASE_KINDS as RELEASE_KINDS,
        Decided as Decided,
        PeerMessageGate as PeerMessageGate,
        SeqFloors as SeqFloors,
        sign_node_document as sign_node_document,
    )
    from .peers import PEER_CAPABILITIES as PEER_CAPABILITIES, PeerNetwork as PeerNetwork
    from .rollout import (
        HealthTally as HealthTally,
        PhasedRollout as PhasedRollout,
        PhaseMetrics as PhaseMetrics,
        RolloutDecision as RolloutDecision,
        node_phase as node_phase,
        node_position as node_position,
        rollout_decision as rollout_decision,
    )
