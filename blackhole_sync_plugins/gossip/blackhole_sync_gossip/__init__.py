"""blackhole-sync-gossip: the libp2p GossipSub engine of the gossip transport.

Public API (everything else is private and may change):

- :class:`GossipConfig`, :class:`ScoreConfig`, :func:`topic_for`, :data:`DEFAULT_KINDS`
- :class:`GossipHost` (trio-native) and :func:`open_gossip_host`
- :class:`AsyncioGossipBridge` (runs a GossipHost in its own trio thread for asyncio callers)
- :class:`Verdict`, :class:`InboundMessage`, :class:`QueryAnswer`
- errors: :class:`GossipError`, :class:`NotRunningError`, :class:`PublishRefusedError`,
  :class:`BridgeError`

This package does not import the ``blackhole_sync`` core: the core's transport
plugin (``blackhole_sync_gossip.plugin``) adapts it.
"""

from ._bridge import AsyncioGossipBridge
from ._config import DEFAULT_KINDS, GossipConfig, ScoreConfig, topic_for
from ._host import GossipHost, open_gossip_host
from ._types import (
    AdmitFn,
    AnswerFn,
    BridgeError,
    GossipError,
    InboundMessage,
    NotRunningError,
    PublishRefusedError,
    QueryAnswer,
    ValidateFn,
    Verdict,
)

__all__ = [
    "DEFAULT_KINDS",
    "AdmitFn",
    "AnswerFn",
    "AsyncioGossipBridge",
    "BridgeError",
    "GossipConfig",
    "GossipError",
    "GossipHost",
    "InboundMessage",
    "NotRunningError",
    "PublishRefusedError",
    "QueryAnswer",
    "ScoreConfig",
    "ValidateFn",
    "Verdict",
    "open_gossip_host",
    "topic_for",
]
