"""The HTTP client transport: streaming, resumable, rate-limited, stall-aware fetches.

Every byte goes into the caller's sink; nothing here decides whether bytes are good (the
core's :class:`~blackhole_sync.fetch.transport.VerifyingSink` does). ``Content-Length`` is used only
to refuse early; the cap is enforced on the bytes actually read, and never more than one byte
past it is read from the socket. Every aiohttp or OS error leaves as a
:class:`~blackhole_sync.errors.DownloadError` subclass (``raise ... from e``); cancellation is
never caught.

TLS: ``https://`` sources are always verified (certificate chain, validity, host name or IP
address), against the system trust store or, with ``ca_file``, against that bundle only. There
is no option to turn verification off. A source whose certificate does not verify raises
:class:`CertificateVerificationError` (not retried: it will not verify on the next attempt
either; the core moves on to the next source). An ``https`` source that redirects to plain
``http`` is refused (:class:`TLSError`).
"""

from __future__ import annotations

import random
import re
import ssl
from typing import Any, ClassVar, Self

import aiohttp
import anyio
import anyio.lowlevel
from attrs import define, evolve, fields

from blackhole_sync.errors import (
    BlobNotFoundError,
    ConfigurationError,
    DownloadError,
    LengthExceededError,
    SourceUnavailableError,
)
from blackhole_sync.fetch import (
    CAP_FETCH,
    CAP_RANGE,
    CAP_READ_RANGE,
    BaseTransport,
    Locator,
    Sink,
)

from ._spec import HTTP_TRANSPORT_SPEC
from .limits import ClientLimits
from .ratelimit import Clock, Sleep, StallDetector, TokenBucket

__all__ = [
    "HTTP_TRANSPORT_SPEC",
    "CertificateVerificationError",
    "HttpTransport",
    "TLSError",
    "TransferStats",
    "client_tls_context",
]

# Bounded digits: a hostile server's 5000-digit position is a mismatch, not a ValueError.
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/([0-9]{1,19})")
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_REDIRECTS = 5


class TLSError(DownloadError):
    """An ``https`` source failed at the TLS layer. Not retried; another source may work."""


class CertificateVerificationError(TLSError):
    """The source's certificate failed verification (untrusted issuer, self-signed, expired,
    or not issued for the host name / IP address in the URL)."""


#: Option names other HTTP clients use to turn certificate verification off. Refused loudly
#: rather than ignored, so nobody believes they got an insecure mode (there is none).
_VERIFY_OFF_OPTIONS = ("ssl", "verify", "verify_ssl", "insecure", "ssl_verify")


def client_tls_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """The client TLS context: TLS 1.2 minimum, certificate and host name always verified.

    ``ca_file``: a PEM bundle trusted *instead of* the system store. ``cert_file`` (and
    ``key_file`` unless the key is in ``cert_file``): a client certificate, presented when a
    server asks for one (mutual TLS). Raises ``ConfigurationError`` naming an unusable file.
    """
    if key_file is not None and cert_file is None:
        raise ConfigurationError("key_file needs cert_file")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigurationError(f"cannot load the CA bundle {ca_file}: {e}") from e
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigurationError(
                f"cannot load the client certificate {cert_file} / key {key_file}: {e}"
            ) from e
    # create_default_context already sets both; asserted so that no later edit weakens them.
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


@define
class TransferStats:
    """What a transport moved: body bytes read off the network, requests, retries."""

    bytes_received: int = 0
    requests: int = 0
    retries: int = 0


class _BufferSink:
    def __init__(self, start: int) -> None:
        self.start = start
        self.data = bytearray()

    @property
    def received(self) -> int:
        return self.start + len(self.data)

    async def write(self, data: bytes) -> None:
        self.data += data


class HttpTransport(BaseTransport):
    """Fetch ``http://`` and ``https://`` URLs.

    Options (unknown ones are ignored):

    ``limits``
        A :class:`~blackhole_sync_http.limits.ClientLimits`; any of its field names may also be
        given directly (``rate_limit=50_000_000``, ``retries=0``) and overrides it.
    ``ca_file``
        A PEM bundle of CAs to trust instead of the system store (a private CA). ``cert_file``
        / ``key_file``: a client certificate for servers that require one (mutual TLS).
        Verification cannot be disabled: ``ssl``/``verify``/``verify_ssl``/``insecure`` are
        refused with ``ConfigurationError``.
    ``headers``
        Extra request headers (a mapping), e.g. an ``Authorization`` for a private mirror.
    ``clock``, ``sleep``, ``rng``
        Injectable time source, sleep and ``random.Random`` (tests, benchmarks).
    """

    name: ClassVar[str] = "http"
    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_FETCH, CAP_RANGE, CAP_READ_RANGE})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        limits = options.get("limits") or ClientLimits()
        overrides = {f.name: options[f.name] for f in fields(ClientLimits) if f.name in options}
        self.limits: ClientLimits = evolve(limits, **overrides) if overrides else limits
        self._clock: Clock | None = options.get("clock")
        self._sleep: Sleep = options.get("sleep") or anyio.sleep
        self._rng: random.Random = options.get("rng") or random.Random()  # jitter, not secrets
        self._headers: dict[str, str] = dict(options.get("headers") or {})
        refused = [name for name in _VERIFY_OFF_OPTIONS if name in options]
        if refused:
            raise ConfigurationError(
                f"unsupported option {refused[0]!r}: TLS certificate verification cannot be "
                "disabled; trust a private CA with ca_file instead"
            )
        self._client_cert = options.get("cert_file") is not None
        tls_files = [options.get(name) for name in ("ca_file", "cert_file", "key_file")]
        # With files, the context is built now so that an unusable file fails here, and it is
        # used for every request (a plain http source redirecting to https keeps the private
        # CA and the client certificate). Without files it is built on the first https
        # request: loading the system trust store costs a tenth of a second that an http-only
        # process never needs.
        self._tls_files: tuple[str | None, ...] = tuple(tls_files)
        self._ssl: ssl.SSLContext | None = (
            client_tls_context(*tls_files) if any(f is not None for f in tls_files) else None
        )
        self.bucket: TokenBucket | None = None
        if self.limits.rate_limit is not None:
            bucket_clock = {"clock": self._clock} if self._clock is not None else {}
            self.bucket = TokenBucket(
                self.limits.rate_limit, self.limits.burst(), sleep=self._sleep, **bucket_clock
            )
        self.stats = TransferStats()
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self.closed:
            raise RuntimeError("transport is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.limits.max_connections,
                limit_per_host=self.limits.max_connections_per_host,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.limits.connect_timeout,
                    sock_connect=self.limits.connect_timeout,
                ),
                auto_decompress=False,
                # The response buffer holds up to twice this before aiohttp stops reading
                # the socket: a whole chunk arrives while the sink takes the previous one.
                read_bufsize=max(self.limits.chunk_size, 64 * 1024),
                headers=self._headers,
            )
        return self._session

    def _tls_for(self, url: str) -> ssl.SSLContext | bool:
        """The TLS context for a request to ``url`` (and the redirects it follows).

        ``True`` -- aiohttp's own verifying context: certificate chain and host name checked
        against the system store, TLS 1.2 minimum -- only stands for a plain ``http`` request
        of a transport configured without TLS files, where it can only apply to an https
        redirect target and is then as strict as :func:`client_tls_context`.
        """
        if self._ssl is None:
            if not _is_https(url):
                return True
            self._ssl = client_tls_context(*self._tls_files)
        return self._ssl

    async def __aenter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.close()
        await super().aclose()

    # -- fetching -----------------------------------------------------------------------------

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        """Stream ``locator`` from byte ``start`` into ``sink``.

        A connection failure, timeout or 5xx is retried (``limits.retries`` times, with
        backoff and jitter), resuming with ``Range`` from the bytes already delivered and
        ``If-Range`` so that a file that changed meanwhile is not spliced.
        """
        url = self._url(locator)
        if start < 0:
            raise ValueError("start must be >= 0")
        await self._with_retries(url, sink, max_length=max_length, start=start, end=None)

    async def read_range(
        self, locator: Locator, start: int, length: int, *, max_length: int
    ) -> bytes:
        """Return exactly ``length`` bytes at ``start`` of ``locator`` (for parallel fetches
        that split a blob between mirrors). ``max_length`` caps the whole content."""
        url = self._url(locator)
        if start < 0 or length < 0:
            raise ValueError("start and length must be >= 0")
        if start + length > max_length:
            raise LengthExceededError(f"range {start}+{length} is past the {max_length} cap")
        sink = _BufferSink(start)
        if length:
            await self._with_retries(
                url, sink, max_length=max_length, start=start, end=start + length
            )
        if len(sink.data) != length:
            raise SourceUnavailableError(f"{url}: got {len(sink.data)} of {length} range bytes")
        return bytes(sink.data)

    def _url(self, locator: Locator) -> str:
        if locator.kind != "url" or locator.scheme not in ("http", "https"):
            raise ValueError(f"http transport cannot fetch {locator}")
        return locator.value

    async def _with_retries(
        self, url: str, sink: Sink, *, max_length: int, start: int, end: int | None
    ) -> None:
        state = _Transfer(position=start, end=end)
        attempt = 0
        while True:
            try:
                await self._attempt(url, sink, state, max_length=max_length)
                return
            except SourceUnavailableError:
                if attempt >= self.limits.retries:
                    raise
            attempt += 1
            self.stats.retries += 1
            ceiling = min(self.limits.backoff_max, self.limits.backoff_initial * 2 ** (attempt - 1))
            await self._sleep(self._rng.uniform(0, ceiling))

    async def _attempt(self, url: str, sink: Sink, state: _Transfer, *, max_length: int) -> None:
        session = self._get_session()
        headers = {"Accept-Encoding": "identity"}
        if state.position > 0 or state.end is not None:
            last = "" if state.end is None else str(state.end - 1)
            headers["Range"] = f"bytes={state.position}-{last}"
            if state.etag is not None:
                headers["If-Range"] = state.etag
        self.stats.requests += 1
        try:
            with anyio.fail_after(self.limits.response_timeout):
                response = await session.get(
                    url,
                    headers=headers,
                    allow_redirects=True,
                    max_redirects=_MAX_REDIRECTS,
                    ssl=self._tls_for(url),
                )
        except TimeoutError as e:
            raise SourceUnavailableError(f"{url}: no response headers in time") from e
        except aiohttp.ClientConnectorCertificateError as e:
            raise CertificateVerificationError(
                f"{url}: the server's TLS certificate failed verification: {e.certificate_error}"
            ) from e
        except aiohttp.ClientSSLError as e:
            raise TLSError(f"{url}: TLS handshake failed: {e}") from e
        except aiohttp.ServerDisconnectedError as e:
            hint = ""
            if _is_https(url) and not self._client_cert:
                hint = " (a server that requires a client certificate does this: cert_file)"
            raise SourceUnavailableError(
                f"{url}: the server closed the connection before answering{hint}"
            ) from e
        except aiohttp.TooManyRedirects as e:
            raise DownloadError(f"{url}: too many redirects") from e
        except (aiohttp.InvalidURL, ValueError) as e:
            raise DownloadError(f"{url}: invalid URL: {e}") from e
        except (aiohttp.ClientError, OSError) as e:
            raise SourceUnavailableError(f"{url}: {type(e).__name__}: {e}") from e
        completed = False
        try:
            if _is_https(url) and response.url.scheme != "https":
                raise TLSError(f"{url}: refused a redirect from https to {response.url}")
            await self._read_response(url, response, sink, state, max_length=max_length)
            completed = True
        except (aiohttp.ClientError, OSError) as e:
            raise SourceUnavailableError(f"{url}: {type(e).__name__}: {e}") from e
        finally:
            if completed:
                response.release()
            else:
                response.close()

    async def _read_response(
        self,
        url: str,
        response: aiohttp.ClientResponse,
        sink: Sink,
        state: _Transfer,
        *,
        max_length: int,
    ) -> None:
        status = response.status
        if status in (403, 404, 410):
            # Object stores (S3 and the like) answer 403 for a missing key when listing is
            # not allowed; like python-tuf, treat it as "not there" (e.g. no newer root).
            raise BlobNotFoundError(f"{url}: HTTP {status}")
        if status in _RETRY_STATUS or status >= 500:
            raise SourceUnavailableError(f"{url}: HTTP {status}")
        if status == 416:
            match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == state.position and state.end is None:
                return  # the prefix we hold is already the whole content
            raise DownloadError(f"{url}: range from {state.position} not satisfiable")
        if status not in (200, 206):
            raise DownloadError(f"{url}: unexpected HTTP {status}")

        etag = response.headers.get("ETag")
        if etag is not None and not etag.startswith("W/"):
            if state.etag is not None and etag != state.etag:
                raise DownloadError(f"{url}: content changed during the transfer")
            state.etag = etag
        offset = 0  # absolute offset of the next body byte
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != state.position:
                raise DownloadError(f"{url}: 206 with a Content-Range we did not ask for")
            total = match.group(3)
            if total != "*" and int(total) > max_length:
                raise LengthExceededError(f"{url}: {total} bytes exceed the {max_length} cap")
            offset = state.position
        else:
            declared = response.content_length
            if declared is not None and declared > max_length:
                raise LengthExceededError(f"{url}: {declared} bytes exceed the {max_length} cap")
            if state.position > 0 and "If-Range" in response.request_info.headers:
                raise DownloadError(f"{url}: content changed during the transfer")
        await self._stream(url, response.content, sink, state, offset, max_length=max_length)

    async def _stream(
        self,
        url: str,
        content: aiohttp.StreamReader,
        sink: Sink,
        state: _Transfer,
        offset: int,
        *,
        max_length: int,
    ) -> None:
        limits = self.limits
        stall_clock = {"clock": self._clock} if self._clock is not None else {}
        stall = StallDetector(limits.stall_min_rate, limits.stall_window, **stall_clock)
        # Read at most one byte past the cap: enough to know it was exceeded.
        limit = max_length + 1 if state.end is None else state.end
        while offset < limit:
            want = min(limits.chunk_size, limit - offset)
            # Bytes aiohttp already buffered are taken without a wait (and without a timer);
            # only an empty buffer waits, for at most the rest of the stall window.
            block = content.read_nowait(want)
            if not block:
                if content.at_eof():
                    return  # end of body
                with anyio.move_on_after(stall.deadline()):
                    block = await content.read(want)
                    if not block:
                        return  # end of body
                if not block:
                    stall.check()  # a whole window without a byte: raises unless the rate was met
                    continue
            self.stats.bytes_received += len(block)
            if offset < state.position:  # a server that ignored Range: skip what we hold
                skip = min(len(block), state.position - offset)
                offset += skip
                block = block[skip:]
                if not block:
                    continue
            if offset + len(block) > max_length:
                raise LengthExceededError(f"{url}: body longer than the {max_length}-byte cap")
            if state.end is not None:
                block = block[: state.end - offset]
            await sink.write(block)
            offset += len(block)
            state.position = offset
            stall.record(len(block))
            if self.bucket is not None:
                stall.pause(await self.bucket.take(len(block)))
            await anyio.lowlevel.checkpoint()


def _is_https(url: str) -> bool:
    return url[:6].lower() == "https:"


@define
class _Transfer:
    position: int
    end: int | None = None
    etag: str | None = None
