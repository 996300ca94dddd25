"""Public test kit: an in-memory transport, the transport conformance checks, and the
test-timeout scale."""

from __future__ import annotations

from .conformance import (
    CHECKS,
    RecordingSink,
    ScriptedValidator,
    TransportUnderTest,
    check_transport,
)
from .memory import MEMORY_TRANSPORT_SPEC, MemoryHub, MemoryTransport, Subscription
from .timeouts import TIMEOUT_SCALE_ENV, scaled, timeout_scale

__all__ = [
    "CHECKS",
    "MEMORY_TRANSPORT_SPEC",
    "TIMEOUT_SCALE_ENV",
    "MemoryHub",
    "MemoryTransport",
    "RecordingSink",
    "ScriptedValidator",
    "Subscription",
    "TransportUnderTest",
    "check_transport",
    "scaled",
    "timeout_scale",
]
