"""Every limit of the HTTP plugin, with its default, in one place.

Pass a :class:`ServerLimits` to the server and a :class:`ClientLimits` to the transport
(``HttpTransport(limits=ClientLimits(...))``); individual client limits can also be given as
transport options of the same name (``rate_limit=50_000_000``), which is how node
configuration reaches them.
"""

from __future__ import annotations

from attrs import field, frozen, validators

__all__ = ["ClientLimits", "ServerLimits"]


@frozen
class ServerLimits:
    """Limits of the repository server."""

    #: Requests served at once; more are answered ``503`` with ``Retry-After``.
    max_concurrent_requests: int = field(default=64, validator=validators.gt(0))
    #: Requests served at once to one client: an IPv4 address, or an IPv6 /64 (what one host
    #: gets); more are answered ``429`` with ``Retry-After``. A client transport opens at most
    #: ``ClientLimits.max_connections_per_host`` (8) connections to a server. Behind a reverse
    #: proxy every request comes from the proxy's address: raise it to
    #: ``max_concurrent_requests`` there.
    max_requests_per_client: int = field(default=8, validator=validators.gt(0))
    #: Seconds a response may wait on a client that accepts no byte at all (it stopped reading
    #: and the socket buffers are full) before its connection is aborted and its slot freed.
    write_timeout: float = field(default=30.0, validator=validators.gt(0.0))
    #: A client must accept at least ``min_send_rate`` bytes per second of the time the server
    #: waits on it, over each ``send_rate_window`` seconds, or its connection is aborted and
    #: its slot freed (a slow-read attack); 0: no minimum rate (``write_timeout`` still holds).
    #: The default equals the client's own stall floor (``ClientLimits.stall_min_rate``).
    min_send_rate: int = field(default=4096, validator=validators.ge(0))
    send_rate_window: float = field(default=30.0, validator=validators.gt(0.0))
    #: Longest ``Range`` header accepted, in characters; longer ones are answered ``400``.
    max_range_header: int = field(default=256, validator=validators.gt(0))
    #: Most ranges in one ``Range`` header; more are answered ``416`` (RFC 9110 section
    #: 15.5.17: an excessive number of ranges). Several ranges are otherwise ignored (the whole
    #: file is served: multipart responses are not offered).
    max_ranges: int = field(default=8, validator=validators.gt(0))
    #: Most digits in a ``Range`` position (leading zeros aside); longer ones are answered
    #: ``400``. 19 digits reach past any file size (2**63).
    max_range_digits: int = field(default=19, validator=validators.gt(0))
    #: Bytes read from disk and written to the socket per step.
    chunk_size: int = field(default=256 * 1024, validator=validators.gt(0))
    #: Seconds given to in-flight responses on shutdown before connections are closed.
    shutdown_timeout: float = field(default=5.0, validator=validators.ge(0.0))
    #: Seconds a client has to send its request headers; idle keep-alive connections close.
    keepalive_timeout: float = field(default=15.0, validator=validators.ge(0.0))
    #: Longest request line, and longest header line, accepted (aiohttp refuses longer ones
    #: with 400).
    max_line_size: int = field(default=8190, validator=validators.gt(0))
    #: Seconds a client is told to wait when the server is busy.
    retry_after: int = field(default=1, validator=validators.gt(0))


@frozen
class ClientLimits:
    """Limits of the HTTP client transport."""

    #: Seconds to establish a connection (TCP and TLS).
    connect_timeout: float = field(default=10.0, validator=validators.gt(0.0))
    #: Seconds to wait for the response headers once connected.
    response_timeout: float = field(default=30.0, validator=validators.gt(0.0))
    #: Extra attempts after a connection failure, timeout or 5xx (0: try once). Each retry
    #: resumes with ``Range`` from what the sink already holds.
    retries: int = field(default=3, validator=validators.ge(0))
    #: First backoff delay in seconds; doubles per retry up to ``backoff_max``, with full jitter.
    backoff_initial: float = field(default=0.25, validator=validators.ge(0.0))
    backoff_max: float = field(default=5.0, validator=validators.ge(0.0))
    #: Stall detector: a source delivering fewer than ``stall_min_rate`` bytes/s on average
    #: over ``stall_window`` seconds (including sending nothing at all) raises StallError.
    stall_min_rate: int = field(default=4096, validator=validators.ge(0))
    stall_window: float = field(default=15.0, validator=validators.gt(0.0))
    #: Bytes per read from the socket and per write into the sink.
    chunk_size: int = field(default=256 * 1024, validator=validators.gt(0))
    #: Bandwidth limit in bytes/s for this transport (all its fetches together); None: no limit.
    rate_limit: int | None = field(default=None, validator=validators.optional(validators.gt(0)))
    #: Token bucket depth in bytes; None: a tenth of a second of ``rate_limit``, at least
    #: one chunk.
    rate_burst: int | None = field(default=None, validator=validators.optional(validators.gt(0)))
    #: Open connections per transport, and per host.
    max_connections: int = field(default=32, validator=validators.gt(0))
    max_connections_per_host: int = field(default=8, validator=validators.gt(0))

    def burst(self) -> int:
        """The effective token bucket depth."""
        if self.rate_burst is not None:
            return self.rate_burst
        assert self.rate_limit is not None
        return max(self.chunk_size, self.rate_limit // 10)
