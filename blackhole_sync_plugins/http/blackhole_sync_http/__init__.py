"""blackhole-sync-http: the HTTP transport plugin for blackhole-sync.

- :class:`HttpTransport`: the client (``http``/``https`` locators; asyncio only);
  :class:`TLSError`, :class:`CertificateVerificationError` for https sources that fail TLS.
- :func:`make_app`, :func:`serve_repository`, :class:`RepositoryServer`: the origin server.
- :class:`ClientLimits`, :class:`ServerLimits`: every limit and its default.
- :class:`TokenBucket`, :class:`StallDetector`: the bandwidth limiter and stall detector.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
