"""Public test kit: an in-memory transport, the transport conformance checks, the
test-timeout scale, child processes that never outlive their test (:mod:`.processes`), and a
pytest plugin that scales pytest-timeout's limits (:mod:`.pytest_plugin`)."""

from __future__ import annotations

from .conformance import (
    CHECKS,
    RecordingSink,
    ScriptedValidator,
    TransportUnderTest,
    check_transport,
)
from .memory import MEMORY_TRANSPORT_SPEC, MemoryHub, MemoryTransport, Subscription
from .processes import kill_group, run, spawn, stop
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
    "kill_group",
    "run",
    "scaled",
    "spawn",
    "stop",
    "timeout_scale",
]
