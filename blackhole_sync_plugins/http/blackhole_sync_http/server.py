"""The repository origin server (aiohttp).

It serves exactly the repository layout of ARCHITECTURE.md section 5 and nothing else::

    root.json  <N>.root.json  index.json  manifests/<version>.json  blobs/<sha256 hex>

Any other path -- drafts, keys, ``.bhsync/``, dot files, directories -- is ``404``, as is any
request path holding ``..``, ``//``, a backslash or a percent-escape (no legitimate name needs
one), and any file whose real path (after symlinks) leaves the root. There is no directory
listing. GET and HEAD only.

Responses carry ``ETag`` (mtime, size and inode) and ``Last-Modified``; ``Range`` requests get
``206`` with ``Content-Range`` or ``416`` with ``Content-Range: bytes */size``; ``If-Range``
that does not match serves the whole file; ``If-None-Match`` gives ``304``. Blobs, manifests and
numbered roots are immutable (``Cache-Control: public, max-age=31536000, immutable``);
``root.json`` and ``index.json`` change and are ``no-cache``.

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
import os
import re
import ssl
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
from aiohttp import web
from attrs import define, frozen

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
    r"|blobs/[0-9a-f]{64})"
)
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@define
class ServerStats:
    """Counters a host (or a test, or the benchmark) can read."""

    requests: int = 0
    bytes_sent: int = 0
    busy_refusals: int = 0
    active: int = 0


_ROOT_KEY = web.AppKey("blackhole_sync_http.root", Path)
_LIMITS_KEY = web.AppKey("blackhole_sync_http.limits", ServerLimits)
_STATS_KEY = web.AppKey("blackhole_sync_http.stats", ServerStats)


def make_app(
    root: str | os.PathLike[str],
    *,
    limits: ServerLimits | None = None,
    stats: ServerStats | None = None,
) -> web.Application:
    """An aiohttp application serving the repository directory ``root``."""
    app = web.Application(handler_args={"max_line_size": (limits or ServerLimits()).max_line_size})
    app[_ROOT_KEY] = Path(os.path.realpath(root))
    app[_LIMITS_KEY] = limits or ServerLimits()
    app[_STATS_KEY] = stats if stats is not None else ServerStats()
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


def _byte_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """Parse a Range header against ``size``.

    Returns ``(first, last)`` (inclusive) to serve a part, ``None`` to ignore the header and
    serve everything (not a single bytes range, or invalid), ``False`` when unsatisfiable.
    """
    match = _RANGE.fullmatch(header.replace(" ", ""))
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # suffix: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text:
        last = int(last_text)
        if last < first:
            return None
    else:
        last = size - 1
    if first >= size:
        return False
    return first, min(last, size - 1)


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
    if stats.active >= limits.max_concurrent_requests:
        stats.busy_refusals += 1
        return web.Response(
            status=503, headers={"Retry-After": str(limits.retry_after)}, text="busy\n"
        )
    stats.active += 1
    try:
        opened = await anyio.to_thread.run_sync(_open_regular, real)
        if opened is None:
            return _not_found()
        fd, info = opened
        try:
            return await _send(request, fd, info, real, limits, stats)
        finally:
            os.close(fd)
    finally:
        stats.active -= 1


async def _send(
    request: web.Request,
    fd: int,
    info: os.stat_result,
    real: str,
    limits: ServerLimits,
    stats: ServerStats,
) -> web.StreamResponse:
    size = info.st_size
    etag = f'"{info.st_mtime_ns:x}-{size:x}-{info.st_ino:x}"'
    last_modified = email.utils.formatdate(info.st_mtime, usegmt=True)
    relative = request.match_info["path"]
    mutable = relative in ("root.json", "index.json")
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
            parsed = _byte_range(range_header, size)
            if parsed is False:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            if isinstance(parsed, tuple):
                first, last, status = parsed[0], parsed[1], 206
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"

    response = web.StreamResponse(status=status, headers=headers)
    length = last - first + 1
    response.content_length = length
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return response
    position = first
    end = last + 1
    try:
        while position < end:
            want = min(limits.chunk_size, end - position)
            block = await anyio.to_thread.run_sync(os.pread, fd, want, position)
            if not block:  # truncated under us: the client sees a short body
                break
            await response.write(block)
            stats.bytes_sent += len(block)
            position += len(block)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing more to send
    return response


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
            ready(server.url)
            await anyio.sleep_forever()
