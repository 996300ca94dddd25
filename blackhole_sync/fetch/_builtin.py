"""The core's own hook implementations, registered like any plugin."""

from __future__ import annotations

from collections.abc import Sequence

from .hookspecs import hookimpl
from .transport import TransportSpec


@hookimpl
def blackhole_sync_transports() -> Sequence[TransportSpec]:
    from .local import LOCAL_TRANSPORT_SPEC

    return [LOCAL_TRANSPORT_SPEC]
