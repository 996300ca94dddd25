"""The core's own hook implementations, registered like any plugin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .transport import TransportSpec


@hookimpl
def blackhole_sync_transports() -> Sequence[TransportSpec]:
    from .local import LOCAL_TRANSPORT_SPEC

    return [LOCAL_TRANSPORT_SPEC]
