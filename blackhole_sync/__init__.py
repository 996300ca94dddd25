"""blackhole-sync: signed, atomic, peer-to-peer software updates for Blackhole nodes."""

from __future__ import annotations

__version__ = "0.1.0"
