"""The module the ``blackhole_sync`` entry point names: it registers the transport."""

from __future__ import annotations

from collections.abc import Sequence

from blackhole_sync import TransportSpec, hookimpl

from .transport import SPOOL_TRANSPORT_SPEC


@hookimpl
def blackhole_sync_transports() -> Sequence[TransportSpec]:
    return [SPOOL_TRANSPORT_SPEC]
