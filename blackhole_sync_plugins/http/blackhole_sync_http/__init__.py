"""blackhole-sync-http: the HTTP transport plugin for blackhole-sync.

- :class:`HttpTransport`: the client (``http``/``https`` locators; asyncio only);
  :class:`TLSError`, :class:`CertificateVerificationError` for https sources that fail TLS.
- :func:`make_app`, :func:`serve_repository`, :class:`RepositoryServer`: the origin server.
- :class:`ClientLimits`, :class:`ServerLimits`: every limit and its default.
- :class:`TokenBucket`, :class:`StallDetector`: the bandwidth limiter and stall detector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blackhole_sync._lazy import lazy_exports

from ._spec import HTTP_TRANSPORT_SPEC
from .limits import ClientLimits, ServerLimits

if TYPE_CHECKING:
    from .client import (
        CertificateVerificationError,
        HttpTransport,
        TLSError,
        TransferStats,
        client_tls_context,
    )
    from .ratelimit import StallDetector, TokenBucket
    from .server import (
        RepositoryServer,
        RunningServer,
        ServerStats,
        make_app,
        serve_repository,
        server_tls_context,
    )

__version__ = "0.1.0"

#: Names imported on first use, by module: the plugin module (loaded by every command that
#: loads plugins) imports neither aiohttp nor anyio; a process that only downloads does not
#: pay for ``aiohttp.web``.
_LAZY = {
    "CertificateVerificationError": "client",
    "HttpTransport": "client",
    "TLSError": "client",
    "TransferStats": "client",
    "client_tls_context": "client",
    "StallDetector": "ratelimit",
    "TokenBucket": "ratelimit",
    "RepositoryServer": "server",
    "RunningServer": "server",
    "ServerStats": "server",
    "make_app": "server",
    "serve_repository": "server",
    "server_tls_context": "server",
}


# the core's one lazy-export loader (this plugin depends on the core; the IPFS engine package,
# which does not, keeps its own)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "HTTP_TRANSPORT_SPEC",
    "CertificateVerificationError",
    "ClientLimits",
    "HttpTransport",
    "RepositoryServer",
    "RunningServer",
    "ServerLimits",
    "ServerStats",
    "StallDetector",
    "TLSError",
    "TokenBucket",
    "TransferStats",
    "client_tls_context",
    "make_app",
    "serve_repository",
    "server_tls_context",
]
