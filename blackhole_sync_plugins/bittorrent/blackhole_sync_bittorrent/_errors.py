"""The engine's errors, grouped by who is at fault.

::

    BittorrentError                  base of everything this package raises on purpose
    ├── TorrentRefused               the metadata is not what the caller asked for (remote fault)
    │   ├── MalformedTorrent         not a single-file hybrid (v1+v2) torrent named by a sha256
    │   ├── InfoHashMismatch         its v1 or v2 info hash differs from the expected one
    │   ├── LengthMismatch           its file length differs from the expected length
    │   └── TooLarge                 its file is larger than the caller's cap
    ├── TransferFailed               libtorrent gave up on a transfer (disk error, removed...)
    └── DhtError                     a BEP 44 operation could not run (no DHT, bad item)

Caller misuse (a second engine in one process, a closed engine, a bad argument) raises
``RuntimeError`` or ``ValueError``, never one of these. A libtorrent ``RuntimeError`` raised by
the bindings is wrapped (``raise ... from e``) where it means a remote or disk fault.
"""

from __future__ import annotations

__all__ = [
    "BittorrentError",
    "DhtError",
    "InfoHashMismatch",
    "LengthMismatch",
    "MalformedTorrent",
    "TooLarge",
    "TorrentRefused",
    "TransferFailed",
]


class BittorrentError(Exception):
    """Base class of the errors this package raises on purpose."""


class TorrentRefused(BittorrentError):
    """A .torrent (or the torrent behind a download) is not the one the caller expects."""


class MalformedTorrent(TorrentRefused):
    """Not a valid single-file hybrid torrent whose file is named by a sha256 hex digest."""


class InfoHashMismatch(TorrentRefused):
    """The torrent's info hash differs from the expected one."""


class LengthMismatch(TorrentRefused):
    """The torrent's single file does not have the expected length."""


class TooLarge(TorrentRefused):
    """The torrent's single file is larger than the caller's length cap."""


class TransferFailed(BittorrentError):
    """libtorrent reported an error for a transfer (file error, storage error, removal)."""


class DhtError(BittorrentError):
    """A DHT operation could not be carried out."""
