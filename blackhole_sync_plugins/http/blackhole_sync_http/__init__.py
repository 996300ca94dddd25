"""blackhole-sync-http: the HTTP transport plugin for blackhole-sync.

- :class:`HttpTransport`: the client (``http``/``https`` locators; asyncio only);
  :class:`TLSError`, :class:`CertificateVerificationError` for https sources that fail TLS.
- :func:`make_app`, :func:`serve_repository`, :class:`RepositoryServer`: the origin server.
- :class:`ClientLimits`, :class:`ServerLimits`: every limit and its default.
- :class:`TokenBucket`, :class:`StallDetector`: the bandwidth limiter and stall detector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .server import (
        RepositoryServer,
        RunningServer,
        ServerStats,
        make_app,
        serve_repository,
        server_tls_context,
    )

__version__ = "0.1.0"

#: Names of the server module, imported on first use: a process that only downloads does not
#: pay for ``aiohttp.web``.
_SERVER_NAMES = frozenset(
    {
        "RepositoryServer",
        "RunningServer",
        "ServerStats",
        "make_app",
        "serve_repository",
        "server_tls_context",
    }
)


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SERVER_NAMES})


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
