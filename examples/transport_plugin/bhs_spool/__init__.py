"""blackhole-sync-spool: a transport over a shared spool directory (see README.md)."""

from .transport import SPOOL_TRANSPORT_SPEC, SpoolTransport

__all__ = ["SPOOL_TRANSPORT_SPEC", "SpoolTransport"]
