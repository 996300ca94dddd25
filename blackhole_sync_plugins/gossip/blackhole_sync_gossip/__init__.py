"""blackhole-sync-gossip: the libp2p GossipSub engine of the gossip transport.

Public API (everything else is private and may change):

- :class:`GossipConfig`, :class:`ScoreConfig`, :func:`topic_for`, :data:`DEFAULT_KINDS`
- :class:`GossipHost` (trio-native) and :func:`open_gossip_host`
- :class:`AsyncioGossipBridge` (runs a GossipHost in its own trio thread for asyncio callers)
- :class:`Verdict`, :class:`InboundMessage`, :class:`QueryAnswer`
- errors: :class:`GossipError`, :class:`NotRunningError`, :class:`PublishRefusedError`,
  :class:`BridgeError`

This package does not import the ``blackhole_sync`` core: the core's transport
plugin (``blackhole_sync_gossip.plugin``, ``blackhole_sync_gossip.transport``) adapts it.
Names load lazily: importing the package (or its plugin module) does not import py-libp2p.
"""

from typing import TYPE_CHECKING, Any

# Lazy exports (PEP 562): the core imports ``blackhole_sync_gossip.plugin`` for every command
# that loads plugins; py-libp2p (seconds of imports) loads only when a host is built.
_EXPORTS = {
    "AsyncioGossipBridge": "._bridge",
    "DEFAULT_KINDS": "._config",
    "GossipConfig": "._config",
    "ScoreConfig": "._config",
    "topic_for": "._config",
    "GossipHost": "._host",
    "open_gossip_host": "._host",
    "AdmitFn": "._types",
    "AnswerFn": "._types",
    "BridgeError": "._types",
    "GossipError": "._types",
    "InboundMessage": "._types",
    "NotRunningError": "._types",
    "PublishRefusedError": "._types",
    "QueryAnswer": "._types",
    "ValidateFn": "._types",
    "Verdict": "._types",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


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
