"""What the engine reports: per-transfer statistics, transfer events and engine totals.

All are frozen dataclasses built on the event loop from alerts and status polls; none holds a
libtorrent object. Byte counts are payload bytes (no protocol overhead), counted as received
(a block later discarded by a failed hash check still counts). ``from_web_seeds`` is measured
per web seed connection (blocks received from a web seed's address, and the per-connection
counters polled each tick; the larger of the two, as each can miss a few blocks);
``from_peers`` is the rest of ``payload_downloaded``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

__all__ = [
    "EngineStats",
    "Event",
    "Finished",
    "PeerBanned",
    "PieceHashFailed",
    "Progress",
    "ResumeDataRejected",
    "Stalled",
    "Started",
    "TransferError",
    "TransferStats",
    "WebSeedFailed",
]


@dataclass(frozen=True)
class TransferStats:
    """A snapshot of one transfer (a seed or a download)."""

    btih: str
    role: Literal["seed", "download"]
    length: int
    have_bytes: int
    """Bytes of the file held and verified."""
    payload_downloaded: int
    """Payload bytes received in this session (peers and web seeds)."""
    payload_uploaded: int
    """Payload bytes sent to peers in this session."""
    from_peers: int
    from_web_seeds: int
    hash_failures: int
    peers_banned: int
    peers_seen: int
    """Distinct BitTorrent peers (by peer id) connected at some tick."""
    num_peers: int
    num_seeds: int
    download_rate: int
    upload_rate: int
    finished: bool

    @property
    def ratio(self) -> float:
        """Upload ratio: payload bytes uploaded per byte of the file."""
        return self.payload_uploaded / self.length if self.length else 0.0


@dataclass(frozen=True)
class EngineStats:
    """Totals over every transfer of the engine's life, stopped ones included."""

    payload_downloaded: int
    payload_uploaded: int
    from_peers: int
    from_web_seeds: int
    hash_failures: int
    peers_banned: int
    peers_seen: int
    alerts_dropped: int
    transfers: tuple[TransferStats, ...]
    """The transfers still running."""


@dataclass(frozen=True)
class Started:
    """The download is checked and running; ``have_bytes`` were already there (resumed)."""

    btih: str
    have_bytes: int
    from_resume_data: bool


@dataclass(frozen=True)
class Progress:
    """Sent at most once per engine tick, when something changed."""

    stats: TransferStats


@dataclass(frozen=True)
class Stalled:
    """No new verified byte for ``idle_seconds`` (sent once per stall). A hint to add a web seed."""

    btih: str
    idle_seconds: float
    num_peers: int
    num_seeds: int


@dataclass(frozen=True)
class PieceHashFailed:
    btih: str
    piece: int


@dataclass(frozen=True)
class PeerBanned:
    btih: str
    address: tuple[str, int]


@dataclass(frozen=True)
class WebSeedFailed:
    btih: str
    url: str
    message: str


@dataclass(frozen=True)
class ResumeDataRejected:
    """The saved resume data did not match the files; libtorrent re-checks them instead."""

    btih: str
    message: str


@dataclass(frozen=True)
class TransferError:
    """libtorrent stopped the transfer with an error (disk full, permission...)."""

    btih: str
    message: str


@dataclass(frozen=True)
class Finished:
    """Every piece is verified; the file is complete at ``path`` (still seeded until stopped)."""

    btih: str
    path: Path


Event: TypeAlias = (
    Started
    | Progress
    | Stalled
    | PieceHashFailed
    | PeerBanned
    | WebSeedFailed
    | ResumeDataRejected
    | TransferError
    | Finished
)
