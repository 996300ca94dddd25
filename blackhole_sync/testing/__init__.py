"""Public test kit: an in-memory transport and the transport conformance checks."""

from __future__ import annotations

from .conformance import CHECKS, RecordingSink, TransportUnderTest, check_transport
from .memory import MEMORY_TRANSPORT_SPEC, MemoryHub, MemoryTransport, Subscription

__all__ = [
    "CHECKS",
    "MEMORY_TRANSPORT_SPEC",
    "MemoryHub",
    "MemoryTransport",
    "RecordingSink",
    "Subscription",
    "TransportUnderTest",
    "check_transport",
]
