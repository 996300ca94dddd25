"""The repository origin server (aiohttp).

It serves exactly the repository layout of ARCHITECTURE.md section 5 and nothing else::

    root.json  <N>.root.json  index.json  manifests/<version>.json  blobs/<sha256 hex>
    torrents/<btih>.torrent (written next to the blobs when the BitTorrent plugin is installed)
    governance/validators.json  governance/{proposals,deprecations}/<id>.json
    governance/{rollouts,halts}/<version>.json  downgrades/<version>.json

Any other path -- drafts, keys, ``.bhsync/``, dot files, directories -- is ``404``, as is any
request path holding ``..``, ``//``, a backslash or a percent-escape (no legitimate name needs
one), and any file whose real path (after symlinks) leaves the root. There is no directory
listing. GET and HEAD only.

Responses carry ``ETag`` (mtime, size and inode) and ``Last-Modified``; ``Range`` requests get
``206`` with ``Content-Range`` or ``416`` with ``Content-Range: bytes */size``; ``If-Range``
that does not match serves the whole file; ``If-None-Match`` gives ``304``. Blobs, manifests and
numbered roots are immutable (``Cache-Control: public, max-age=31536000, immutable``);
``root.json`` and ``index.json`` change and are ``no-cache``.

Hostile clients (every bound is a :class:`~blackhole_sync_http.limits.ServerLimits` field):

- At most ``max_concurrent_requests`` requests are served at once (more: ``503``), at most
  ``max_requests_per_client`` of them to one client address -- an IPv4 address, or an IPv6
  /64 -- (more: ``429``); both with ``Retry-After``.
- A client that stops reading is dropped: a response that waits ``write_timeout`` seconds
  without the client accepting a byte, or whose client accepts fewer than ``min_send_rate``
  bytes per second of the time the server waits on it (measured over ``send_rate_window``
  seconds), has its connection aborted, and its slot is free at once.
- ``Range`` is parsed within bounds: a header longer than ``max_range_header`` characters or a
  position longer than ``max_range_digits`` digits is ``400``, more than ``max_ranges`` ranges
  is ``416`` (RFC 9110 section 15.5.17: an excessive number of ranges).
- What a client causes -- a refused range, a malformed request, a client that went away or
  was dropped -- is logged as one line (``blackhole_sync_http.server``, INFO), never with a
  traceback; tracebacks are left for the server's own bugs.

Embedding: :func:`make_app` returns an ``aiohttp.web.Application`` (mount it with
``add_subapp``), :func:`serve_repository` runs it on a socket as an async context manager,
and :class:`RepositoryServer` is what the ``blackhole_sync_server`` hook returns.

TLS: pass ``tls_cert`` and ``tls_key`` (PEM files; the certificate file may hold the chain) to
serve ``https://`` (TLS 1.2 or newer). ``tls_client_ca`` (a PEM bundle) additionally requires
every client to present a certificate issued by one of those CAs (mutual TLS); only that
bundle is trusted for client certificates, never the system store.

Edge cache: a node serves what it holds to its neighbours by pointing the same server at a
directory in the repository layout (its verified signed documents and blobs, hard-linked or
copied there after verification). The server never trusts that directory's content more than
an origin's: every client verifies against signed metadata anyway.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import re
import socket
import ssl
import stat
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from attrs import define, field, frozen

from .limits import ServerLimits

__all__ = [
    "RepositoryServer",
    "RunningServer",
    "ServerStats",
    "make_app",
    "serve_repository",
    "server_tls_context",
]

#: Paths the server answers, relative to the root. Everything else is 404.
LAYOUT = re.compile(
    r"(?:root\.json"
    r"|index\.json"
    r"|[1-9][0-9]{0,18}\.root\.json"
    r"|manifests/[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*\.json"
    r"|blobs/[0-9a-f]{64}"
    r"|torrents/[0-9a-f]{40}\.torrent"  # the BitTorrent plugin's companions of blobs
    # coordination documents the index lists (blackhole_sync.documents.coordination_relpath)
    r"|governance/validators\.json"
    r"|governance/(?:proposals|deprecations)/[a-z0-9][a-z0-9._-]{0,63}\.json"
    r"|governance/(?:rollouts|halts)/[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*\.json"
    r"|downgrades/[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*\.json)"
)
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")

log = logging.getLogger(__name__)


@define
class ServerStats:
    """Counters a host (or a test, or the benchmark) can read."""

    requests: int = 0
    bytes_sent: int = 0
    #: Requests refused with 503: ``max_concurrent_requests`` were being served.
    busy_refusals: int = 0
    #: Requests refused with 429: their client already had ``max_requests_per_client``.
    client_refusals: int = 0
    #: Connections reset because their client stopped reading (or read too slowly).
    dropped: int = 0
    #: Requests being served now (each holds a slot until its handler returns).
    active: int = 0
    #: Bytes sent per served path (relative to the root, e.g. ``blobs/<sha256>``).
    by_path: dict[str, int] = field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The counters as JSON-ready values (what ``serve`` writes to its status file)."""
        return {
            "requests": self.requests,
            "bytes_sent": self.bytes_sent,
            "busy_refusals": self.busy_refusals,
            "client_refusals": self.client_refusals,
            "dropped": self.dropped,
            "active": self.active,
            "by_path": dict(self.by_path),
        }


_ROOT_KEY = web.AppKey("blackhole_sync_http.root", Path)
_LIMITS_KEY = web.AppKey("blackhole_sync_http.limits", ServerLimits)
_STATS_KEY = web.AppKey("blackhole_sync_http.stats", ServerStats)
_CLIENTS_KEY = web.AppKey("blackhole_sync_http.clients", dict)


def _one_line(text: object, limit: int = 200) -> str:
    """``text`` safe for a single log line: control characters escaped, length bounded."""
    line = repr(" ".join(str(text).split()))[1:-1]
    return line if len(line) <= limit else line[:limit] + "..."


def _client_caused(exc: BaseException) -> bool:
    """Errors a client causes on its own: malformed requests, dropped or reset connections."""
    return isinstance(exc, (HttpProcessingError, ConnectionError, TimeoutError))


class _ClientErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, minus tracebacks for what clients cause.

    aiohttp logs a malformed request (``BadStatusLine``, ``LineTooLong``, an invalid header...)
    with ``logger.exception`` and the whole traceback; here that becomes one INFO line naming
    the client and the reason. Anything else -- a bug in the server -- keeps its traceback.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, BaseException) and _client_caused(exc):
            del kwargs["exc_info"]
            reason = exc.message if isinstance(exc, HttpProcessingError) else exc
            msg = f"{msg}: %s: %s"
            args = (*args, type(exc).__name__, _one_line(reason))
            level = min(level, logging.INFO)
        self.logger.log(level, msg, *args, **kwargs)


def _client_key(remote: str | None) -> str:
    """The address a per-client limit counts against: IPv4, or an IPv6 /64 (one host's)."""
    try:
        address = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return remote or "?"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def make_app(
    root: str | os.PathLike[str],
    *,
    limits: ServerLimits | None = None,
    stats: ServerStats | None = None,
) -> web.Application:
    """An aiohttp application serving the repository directory ``root``."""
    limits = limits or ServerLimits()
    app = web.Application(
        handler_args={
            "max_line_size": limits.max_line_size,
            "max_field_size": limits.max_line_size,
            "logger": _ClientErrorLog(logging.getLogger("aiohttp.server"), {}),
        }
    )
    app[_ROOT_KEY] = Path(os.path.realpath(root))
    app[_LIMITS_KEY] = limits
    app[_STATS_KEY] = stats if stats is not None else ServerStats()
    app[_CLIENTS_KEY] = {}
    app.router.add_route("*", "/{path:.*}", _handle)
    return app


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n")


def _resolve(root: Path, raw_path: str, relative: str) -> str | None:
    """The real path to serve for a request, or None (404)."""
    if "%" in raw_path or "\\" in raw_path or "//" in raw_path or ".." in raw_path:
        return None
    if "\x00" in relative or not LAYOUT.fullmatch(relative):
        return None
    real = os.path.realpath(root / relative)
    if not real.startswith(str(root) + os.sep):
        return None
    return real


def _open_regular(path: str) -> tuple[int, os.stat_result] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info


class _RangeRefused(Exception):
    """A Range header refused outright (``status`` 400 or 416), with the reason to log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _byte_range(header: str, size: int, limits: ServerLimits) -> tuple[int, int] | bool | None:
    """Parse a Range header (RFC 9110 section 14.2) against ``size``, within ``limits``.

    Returns ``(first, last)`` (inclusive) to serve one part, ``None`` to ignore the header and
    serve everything (another unit, an invalid range, or several ranges: multipart is not
    offered), ``False`` when no range is satisfiable (416). Raises :class:`_RangeRefused` for
    a header past the bounds: longer than ``max_range_header`` or a position longer than
    ``max_range_digits`` digits (400), more than ``max_ranges`` ranges (416). No number is
    converted before its length is checked.
    """
    if len(header) > limits.max_range_header:
        raise _RangeRefused(400, f"Range header longer than {limits.max_range_header} characters")
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None  # a unit we do not know: ignored, as RFC 9110 requires
    # At most max_range_header characters: splitting them all is bounded work.
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]  # empty list elements are allowed, and ignored
    if len(specs) > limits.max_ranges:
        raise _RangeRefused(416, f"more than {limits.max_ranges} ranges")
    if not specs:
        return None
    satisfiable: list[tuple[int, int]] = []
    for spec in specs:
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return None
        first_text, last_text = match.groups()
        for text in (first_text, last_text):
            if len(text.lstrip("0")) > limits.max_range_digits:
                raise _RangeRefused(
                    400, f"a range position longer than {limits.max_range_digits} digits"
                )
        if not first_text:  # suffix: the last N bytes
            if not last_text:
                return None  # "-" alone is not a range
            suffix = int(last_text)
            if suffix > 0 and size > 0:
                satisfiable.append((max(0, size - suffix), size - 1))
            continue
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
        if last_text and last < first:
            return None  # invalid: the header is ignored
        if first < size:
            satisfiable.append((first, min(last, size - 1)))
    if not satisfiable:
        return False
    if len(specs) > 1:
        return None
    return satisfiable[0]


async def _handle(request: web.Request) -> web.StreamResponse:
    app = request.app
    stats = app[_STATS_KEY]
    limits = app[_LIMITS_KEY]
    stats.requests += 1
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=405, headers={"Allow": "GET, HEAD"}, text="method not allowed\n")
    real = _resolve(app[_ROOT_KEY], request.rel_url.raw_path, request.match_info["path"])
    if real is None:
        return _not_found()
    clients: dict[str, int] = app[_CLIENTS_KEY]
    client = _client_key(request.remote)
    retry_after = {"Retry-After": str(limits.retry_after)}
    if clients.get(client, 0) >= limits.max_requests_per_client:
        stats.client_refusals += 1
        log.debug("429 to %s: %d requests in flight already", client, clients[client])
        return web.Response(status=429, headers=retry_after, text="too many requests\n")
    if stats.active >= limits.max_concurrent_requests:
        stats.busy_refusals += 1
        log.debug("503 to %s: %d requests in flight", client, stats.active)
        return web.Response(status=503, headers=retry_after, text="busy\n")
    stats.active += 1
    clients[client] = clients.get(client, 0) + 1
    try:
        opened = await anyio.to_thread.run_sync(_open_regular, real)
        if opened is None:
            return _not_found()
        fd, info = opened
        try:
            return await _send(request, fd, info, limits, stats)
        finally:
            os.close(fd)
    finally:
        stats.active -= 1
        left = clients[client] - 1
        if left:
            clients[client] = left
        else:
            del clients[client]


def _describe(request: web.Request) -> str:
    return f"{request.remote} {request.method} {_one_line(request.rel_url.raw_path, 120)}"


async def _send(
    request: web.Request,
    fd: int,
    info: os.stat_result,
    limits: ServerLimits,
    stats: ServerStats,
) -> web.StreamResponse:
    size = info.st_size
    etag = f'"{info.st_mtime_ns:x}-{size:x}-{info.st_ino:x}"'
    last_modified = email.utils.formatdate(info.st_mtime, usegmt=True)
    relative = request.match_info["path"]
    mutable = relative in ("root.json", "index.json") or relative.startswith(
        ("governance/", "downgrades/")  # a newer version replaces the file
    )
    headers = {
        "ETag": etag,
        "Last-Modified": last_modified,
        "Cache-Control": NO_CACHE if mutable else IMMUTABLE,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Type": "application/json"
        if relative.endswith(".json")
        else "application/octet-stream",
    }
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        if "*" in tags or etag in tags or f"W/{etag}" in tags:
            return web.Response(status=304, headers=headers)

    first, last, status = 0, size - 1, 200
    range_header = request.headers.get("Range")
    if range_header is not None:
        if_range = request.headers.get("If-Range")
        if if_range is None or if_range.strip() in (etag, last_modified):
            try:
                parsed = _byte_range(range_header, size, limits)
            except _RangeRefused as refused:
                log.info("%s %d: %s", _describe(request), refused.status, refused.reason)
                if refused.status == 416:
                    headers["Content-Range"] = f"bytes */{size}"
                    return web.Response(status=416, headers=headers)
                return web.Response(status=400, text=f"bad Range: {refused.reason}\n")
            if parsed is False:
                log.info(
                    "%s 416: Range %s not satisfiable (%d bytes)",
                    _describe(request),
                    _one_line(range_header, 80),
                    size,
                )
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            if isinstance(parsed, tuple):
                first, last, status = parsed[0], parsed[1], 206
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"

    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = last - first + 1
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return response
    guard = _ReaderGuard(request, limits)
    async with anyio.create_task_group() as tg:
        tg.start_soon(guard.watch)
        try:
            await _send_body(request, response, fd, first, last + 1, guard, limits, stats)
        except ConnectionError as e:
            if guard.dropped is not None:
                stats.dropped += 1
                log.info("%s dropped: %s", _describe(request), guard.dropped)
            else:
                log.info(
                    "%s: the client went away after about %d of %d bytes (%s)",
                    _describe(request),
                    guard.handed,
                    last + 1 - first,
                    type(e).__name__,
                )
        finally:
            tg.cancel_scope.cancel()
    return response


async def _send_body(
    request: web.Request,
    response: web.StreamResponse,
    fd: int,
    position: int,
    end: int,
    guard: _ReaderGuard,
    limits: ServerLimits,
    stats: ServerStats,
) -> None:
    while position < end:
        want = min(limits.chunk_size, end - position)
        try:
            block = await anyio.to_thread.run_sync(os.pread, fd, want, position)
        except OSError as e:
            log.error("%s: reading the file failed at byte %d: %s", _describe(request), position, e)
            block = b""
        if not block:
            # Truncated under us, or unreadable: close the connection after this short body,
            # so the client sees it end before Content-Length (and resumes elsewhere).
            response.force_close()
            break
        await guard.write(response, block)
        stats.bytes_sent += len(block)
        path = request.match_info.get("path", "")
        stats.by_path[path] = stats.by_path.get(path, 0) + len(block)
        position += len(block)
    await guard.write(response, b"")


class _ReaderGuard:
    """Drops a client that stops reading a response, or reads it too slowly.

    The bytes a client has accepted are those handed to the connection minus those still
    buffered in it (``get_write_buffer_size``); the kernel's socket buffers count as accepted,
    so a client that never reads is caught once they are full. :meth:`watch` runs beside the
    sender and aborts the connection (``transport.abort()``) when, while the sender waits on
    the client, no byte is accepted for ``write_timeout`` seconds, or fewer than
    ``min_send_rate`` bytes per second of waiting are accepted over a ``send_rate_window``.
    The blocked write then fails with ``ConnectionError`` and the handler returns, freeing
    its slot. Aborting rather than cancelling the write keeps aiohttp's writer consistent.
    """

    def __init__(
        self,
        request: web.Request,
        limits: ServerLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = request.transport
        self._limits = limits
        self._clock = clock
        self.handed = 0
        self._waiting_since: float | None = None
        self._waited = 0.0
        self.dropped: str | None = None

    def accepted(self) -> int:
        transport = self._transport
        buffered = (
            0 if transport is None or transport.is_closing() else transport.get_write_buffer_size()
        )
        return max(0, self.handed - buffered)

    def waited(self, now: float) -> float:
        """Seconds spent, in all, waiting for the client to take bytes."""
        ongoing = 0.0 if self._waiting_since is None else now - self._waiting_since
        return self._waited + ongoing

    async def write(self, response: web.StreamResponse, block: bytes) -> None:
        """Hand ``block`` to the client (``b""``: end the response), timing the wait."""
        if self.dropped is not None:
            raise ConnectionAbortedError(self.dropped)
        self._waiting_since = start = self._clock()
        try:
            self.handed += len(block)
            if block:
                await response.write(block)
            else:
                await response.write_eof()
        finally:
            self._waiting_since = None
            self._waited += self._clock() - start
        if self.dropped is not None:
            raise ConnectionAbortedError(self.dropped)

    async def watch(self) -> None:
        limits = self._limits
        tick = max(0.01, min(1.0, limits.write_timeout / 4, limits.send_rate_window / 4))
        now = self._clock()
        last_accepted, last_progress = self.accepted(), now
        window_start, window_accepted, window_waited = now, last_accepted, 0.0
        while True:
            await anyio.sleep(tick)
            now = self._clock()
            accepted = self.accepted()
            if accepted > last_accepted or self._waiting_since is None:
                last_accepted, last_progress = accepted, now
            since = now if self._waiting_since is None else max(last_progress, self._waiting_since)
            stuck = now - since
            if stuck >= limits.write_timeout:
                self._drop(f"accepted no byte for {stuck:.1f} s (write_timeout)")
                return
            if now - window_start >= limits.send_rate_window:
                waited = self.waited(now) - window_waited
                taken = accepted - window_accepted
                if limits.min_send_rate and taken < limits.min_send_rate * waited:
                    self._drop(
                        f"accepted {taken} bytes in {waited:.1f} s of waiting, below "
                        f"min_send_rate {limits.min_send_rate} bytes/s"
                    )
                    return
                window_start, window_accepted, window_waited = now, accepted, self.waited(now)

    def _drop(self, reason: str) -> None:
        self.dropped = reason
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A reset, not a graceful close: otherwise the kernel would go on holding (and
            # offering) the megabytes already queued for a client that does not read them.
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


@frozen
class RunningServer:
    """A server listening on a socket: its base URL and counters."""

    url: str
    host: str
    port: int
    stats: ServerStats


PathArg = str | os.PathLike[str]


def server_tls_context(
    tls_cert: PathArg, tls_key: PathArg | None = None, *, tls_client_ca: PathArg | None = None
) -> ssl.SSLContext:
    """The server side TLS context: TLS 1.2 minimum, Python's default server ciphers.

    ``tls_key`` may be omitted when ``tls_cert`` holds the key too. With ``tls_client_ca``,
    clients must present a certificate that chains to a CA in that bundle (and only there).
    Raises ``ValueError`` naming the file when a certificate or key cannot be loaded.
    """
    try:
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH,
            cafile=None if tls_client_ca is None else os.fspath(tls_client_ca),
        )
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load the client CA bundle {tls_client_ca}: {e}") from e
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls_cert, tls_key)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load TLS certificate {tls_cert} / key {tls_key}: {e}") from e
    if tls_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@asynccontextmanager
async def serve_repository(
    root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    limits: ServerLimits | None = None,
    tls_cert: PathArg | None = None,
    tls_key: PathArg | None = None,
    tls_client_ca: PathArg | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve ``root`` on ``host:port`` (``port=0``: a free one) while the block runs.

    With ``tls_cert`` (and ``tls_key``) it serves HTTPS and ``server.url`` is ``https://``;
    ``tls_client_ca`` requires client certificates from those CAs (see
    :func:`server_tls_context`). On exit, in-flight responses get ``limits.shutdown_timeout``
    seconds to finish.
    """
    limits = limits or ServerLimits()
    if not Path(root).is_dir():
        raise NotADirectoryError(f"not a repository directory: {root}")
    if tls_cert is None and (tls_key is not None or tls_client_ca is not None):
        raise ValueError("tls_key and tls_client_ca need tls_cert")
    tls = (
        None
        if tls_cert is None
        else server_tls_context(tls_cert, tls_key, tls_client_ca=tls_client_ca)
    )
    stats = ServerStats()
    app = make_app(root, limits=limits, stats=stats)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=limits.shutdown_timeout,
        keepalive_timeout=limits.keepalive_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        url_host = f"[{host}]" if ":" in host else host
        scheme = "http" if tls is None else "https"
        yield RunningServer(f"{scheme}://{url_host}:{bound_port}", host, bound_port, stats)
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


class RepositoryServer:
    """What the ``blackhole_sync_server`` hook returns; ``blackhole-sync serve`` runs it."""

    def __init__(self, limits: ServerLimits | None = None) -> None:
        self.limits = limits or ServerLimits()
        #: The counters of the server running now (or last), None before it starts.
        self.stats: ServerStats | None = None

    async def serve(
        self,
        root: Path,
        host: str,
        port: int,
        *,
        ready: Callable[[str], None],
        tls_cert: PathArg | None = None,
        tls_key: PathArg | None = None,
        tls_client_ca: PathArg | None = None,
    ) -> None:
        """Serve ``root`` until cancelled; call ``ready(url)`` once listening (``https://``
        with ``tls_cert``; the TLS options are those of :func:`serve_repository`)."""
        async with serve_repository(
            root,
            host,
            port,
            limits=self.limits,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
        ) as server:
            self.stats = server.stats
            ready(server.url)
            await anyio.sleep_forever()
