"""blackhole-sync-http: the HTTP transport plugin for blackhole-sync.

- :class:`HttpTransport`: the client (``http``/``https`` locators; asyncio only);
  :class:`TLSError`, :class:`CertificateVerificationError` for https sources that fail TLS.
- :func:`make_app`, :func:`serve_repository`, :class:`RepositoryServer`: the origin server.
- :class:`ClientLimits`, :class:`ServerLimits`: every limit and its default.
- :class:`TokenBucket`, :class:`StallDetector`: the bandwidth limiter and stall detector.
"""

from __future__ import annotations

from .client import (
    HTTP_TRANSPORT_SPEC,
    CertificateVerificationError,
    HttpTransport,
    TLSError,
    TransferStats,
    client_tls_context,
)
from .limits import ClientLimits, ServerLimits
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
