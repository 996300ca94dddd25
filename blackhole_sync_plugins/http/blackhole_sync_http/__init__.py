"""blackhole-sync-http: the HTTP transport plugin for blackhole-sync.

- :class:`HttpTransport`: the client (``http``/``https`` locators; asyncio only).
- :func:`make_app`, :func:`serve_repository`, :class:`RepositoryServer`: the origin server.
- :class:`ClientLimits`, :class:`ServerLimits`: every limit and its default.
- :class:`TokenBucket`, :class:`StallDetector`: the bandwidth limiter and stall detector.
"""

from __future__ import annotations

from .client import HTTP_TRANSPORT_SPEC, HttpTransport, TransferStats
from .limits import ClientLimits, ServerLimits
from .ratelimit import StallDetector, TokenBucket
from .server import RepositoryServer, RunningServer, ServerStats, make_app, serve_repository

__version__ = "0.1.0"

__all__ = [
    "HTTP_TRANSPORT_SPEC",
    "ClientLimits",
    "HttpTransport",
    "RepositoryServer",
    "RunningServer",
    "ServerLimits",
    "ServerStats",
    "StallDetector",
    "TokenBucket",
    "TransferStats",
    "make_app",
    "serve_repository",
]
