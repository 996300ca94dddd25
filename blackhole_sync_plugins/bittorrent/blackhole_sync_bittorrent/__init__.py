"""blackhole-sync-bittorrent: the libtorrent engine of the BitTorrent transport plugin.

Self-contained (it does not import the ``blackhole_sync`` core); the plugin module that wires
it into the core's transport API is added separately.

- Torrents: :func:`create_torrent` (offline, deterministic, hybrid v1+v2, named by the blob's
  sha256), :meth:`Torrent.from_bytes` (checks info hash, length, cap), :func:`piece_size_for`.
- The session: :class:`Engine` (one per process) configured by :class:`EngineConfig`
  (:func:`build_settings`, :func:`peer_class_filter`); :class:`Seed` and :class:`Download`;
  events (:class:`Started`, :class:`Progress`, :class:`Stalled`, :class:`Finished`...) and
  counters (:class:`TransferStats`, :class:`EngineStats`).
- BEP 44: :class:`MutableItem`, :class:`DhtClient` (get every candidate, put as signed),
  :func:`libtorrent_secret_key`, :func:`announcement_salt`.
- Errors: :class:`BittorrentError` and its tree (see ``_errors``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static names for type checkers
    from ._dht import (
        MAX_SALT_BYTES,
        MAX_VALUE_BYTES,
        Candidate,
        DhtClient,
        DhtLimits,
        GetResult,
        MutableItem,
        PutResult,
        announcement_salt,
        libtorrent_secret_key,
    )
    from ._engine import Engine
    from ._errors import (
        BittorrentError,
        DhtError,
        InfoHashMismatch,
        LengthMismatch,
        MalformedTorrent,
        TooLarge,
        TorrentRefused,
        TransferFailed,
    )
    from ._events import (
        EngineStats,
        Event,
        Finished,
        PeerBanned,
        PieceHashFailed,
        Progress,
        ResumeDataRejected,
        Stalled,
        Started,
        TransferError,
        TransferStats,
        WebSeedFailed,
    )
    from ._settings import EngineConfig, build_settings, loopback_ip_filter, peer_class_filter
    from ._torrent import (
        MAX_PIECE_SIZE,
        MAX_TORRENT_BYTES,
        MIN_PIECE_SIZE,
        TARGET_PIECES,
        Torrent,
        create_torrent,
        piece_size_for,
        sha256_file,
    )
    from ._transfers import Download, Seed

__version__ = "0.1.0"

_LAZY = {
    "BittorrentError": "_errors",
    "Candidate": "_dht",
    "DhtClient": "_dht",
    "DhtError": "_errors",
    "DhtLimits": "_dht",
    "Download": "_transfers",
    "Engine": "_engine",
    "EngineConfig": "_settings",
    "EngineStats": "_events",
    "Event": "_events",
    "Finished": "_events",
    "GetResult": "_dht",
    "InfoHashMismatch": "_errors",
    "LengthMismatch": "_errors",
    "MAX_PIECE_SIZE": "_torrent",
    "MAX_SALT_BYTES": "_dht",
    "MAX_TORRENT_BYTES": "_torrent",
    "MAX_VALUE_BYTES": "_dht",
    "MIN_PIECE_SIZE": "_torrent",
    "MalformedTorrent": "_errors",
    "MutableItem": "_dht",
    "PeerBanned": "_events",
    "PieceHashFailed": "_events",
    "Progress": "_events",
    "PutResult": "_dht",
    "ResumeDataRejected": "_events",
    "Seed": "_transfers",
    "Stalled": "_events",
    "Started": "_events",
    "TARGET_PIECES": "_torrent",
    "TooLarge": "_errors",
    "Torrent": "_torrent",
    "TorrentRefused": "_errors",
    "TransferError": "_events",
    "TransferFailed": "_errors",
    "TransferStats": "_events",
    "WebSeedFailed": "_events",
    "announcement_salt": "_dht",
    "build_settings": "_settings",
    "create_torrent": "_torrent",
    "libtorrent_secret_key": "_dht",
    "loopback_ip_filter": "_settings",
    "peer_class_filter": "_settings",
    "piece_size_for": "_torrent",
    "sha256_file": "_torrent",
}


def __getattr__(name: str) -> Any:
    """The engine's names load on first use: importing the plugin (every command that loads
    plugins does) must not import libtorrent."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "MAX_PIECE_SIZE",
    "MAX_SALT_BYTES",
    "MAX_TORRENT_BYTES",
    "MAX_VALUE_BYTES",
    "MIN_PIECE_SIZE",
    "TARGET_PIECES",
    "BittorrentError",
    "Candidate",
    "DhtClient",
    "DhtError",
    "DhtLimits",
    "Download",
    "Engine",
    "EngineConfig",
    "EngineStats",
    "Event",
    "Finished",
    "GetResult",
    "InfoHashMismatch",
    "LengthMismatch",
    "MalformedTorrent",
    "MutableItem",
    "PeerBanned",
    "PieceHashFailed",
    "Progress",
    "PutResult",
    "ResumeDataRejected",
    "Seed",
    "Stalled",
    "Started",
    "TooLarge",
    "Torrent",
    "TorrentRefused",
    "TransferError",
    "TransferFailed",
    "TransferStats",
    "WebSeedFailed",
    "announcement_salt",
    "build_settings",
    "create_torrent",
    "libtorrent_secret_key",
    "loopback_ip_filter",
    "peer_class_filter",
    "piece_size_for",
    "sha256_file",
]
