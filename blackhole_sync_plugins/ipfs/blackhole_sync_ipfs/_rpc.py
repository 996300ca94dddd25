"""The rpc backend: a Kubo daemon reached through its HTTP RPC API (``/api/v0``).

Requests go over ``http.client`` (one connection per request, so any of them can be torn down
from another thread at once on cancellation, and ``cat`` can stop at the length cap);
``ipfshttpclient`` 0.7 encodes the multipart bodies (file uploads, pubsub data). Its own
transport is not used: ``connect()`` refuses any daemon newer than 0.8, and with current
urllib3 every request it makes emits a ``FutureWarning`` (it still passes ``strict=``), an
error under ``-W error``. Pubsub follows the wire format of Kubo 0.11+ (topics and data
multibase-encoded, data sent as a file part), which ``ipfshttpclient`` 0.7 predates.

Source form: ``ipfs+rpc://HOST:PORT`` (also ``http://HOST:PORT``), see :func:`parse_rpc_url`.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread

from ._api import DEFAULT_FETCH_TIMEOUT, NodeInfo, PubsubMessage, TransferCounters, Writer
from ._cid import Cid, CidError
from ._errors import (
    AddError,
    BackendUnavailableError,
    ConfigError,
    ConnectError,
    FetchTimeoutError,
    InvalidCidError,
    IpfsError,
    LengthExceededError,
    PinError,
    PubsubError,
)
from ._threads import start_thread, wait_future

__all__ = ["RpcEndpoint", "RpcNode", "parse_rpc_url"]

_READ_SIZE = 256 * 1024


class RpcEndpoint:
    """Where the daemon's RPC API listens."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @property
    def multiaddr(self) -> str:
        """The API address in ipfshttpclient's form (``/ip4/H/tcp/P/http``)."""
        try:
            import ipaddress

            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return f"/dns/{self.host}/tcp/{self.port}/http"
        proto = "ip4" if ip.version == 4 else "ip6"
        return f"/{proto}/{self.host}/tcp/{self.port}/http"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ipfs+rpc://{host}:{self.port}"


def parse_rpc_url(url: str) -> RpcEndpoint:
    """``ipfs+rpc://HOST:PORT`` (or ``http://HOST:PORT``) -> :class:`RpcEndpoint`."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("ipfs+rpc", "http"):
        raise ConfigError(f"not an ipfs+rpc:// source: {url!r}")
    if not parsed.hostname or parsed.port is None:
        raise ConfigError(f"an ipfs+rpc source needs HOST:PORT: {url!r}")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.username:
        raise ConfigError(f"an ipfs+rpc source is only HOST:PORT: {url!r}")
    return RpcEndpoint(parsed.hostname, parsed.port)


def _multibase_text(value: str | bytes) -> str:
    """Kubo's RPC form of pubsub topics and data: multibase base64url (``u`` prefix)."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return "u" + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _multibase_decode(text: str) -> bytes:
    if not text:
        return b""
    prefix, body = text[0], text[1:]
    if prefix == "u":
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    if prefix == "m":
        return base64.b64decode(body + "=" * (-len(body) % 4))
    if prefix in "bB":
        return base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    raise PubsubError(f"unsupported multibase prefix {prefix!r}")


class _Exchange:
    """One HTTP request on its own connection, whose socket another thread may shut down."""

    def __init__(self, endpoint: RpcEndpoint, timeout: float | None) -> None:
        self._conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
        self.response: http.client.HTTPResponse | None = None
        self.aborted = False
        self.closed = False

    def open(
        self,
        path: str,
        params: Mapping[str, str],
        body: Iterable[bytes] | None,
        headers: dict[str, str],
    ) -> None:
        query = urllib.parse.urlencode(list(params.items()))
        url = f"/api/v0/{path}?{query}"
        if body is None:
            self._conn.request("POST", url, headers=headers)
        else:
            headers = {**headers, "Transfer-Encoding": "chunked"}
            self._conn.request("POST", url, body=body, headers=headers, encode_chunked=True)

    def start(self) -> http.client.HTTPResponse:
        self.response = self._conn.getresponse()
        return self.response

    def abort(self) -> None:
        """Wake a thread blocked on this exchange (it then fails and closes)."""
        self.aborted = True
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        if self.response is not None:
            self.response.close()
        self._conn.close()


def _error_message(response: http.client.HTTPResponse) -> str:
    body = response.read(64 * 1024)
    try:
        return str(json.loads(body)["Message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status} {body[:200]!r}"


class _TimedOut(IpfsError):
    """No answer within the socket timeout (callers turn it into their own error)."""


class _RpcSubscription:
    """A ``/pubsub/sub`` stream: one JSON object per line.

    One line is read at a time, on a thread of its own; a :meth:`receive` that is cancelled
    leaves that read to the next call, so nothing is read twice and no message is lost.
    """

    def __init__(self, topic: str, exchange: _Exchange) -> None:
        self.topic = topic
        self._exchange = exchange
        self._started = False
        self._read: concurrent.futures.Future[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[PubsubMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[PubsubMessage]:
        while True:
            yield await self.receive()

    def _next_line(self) -> bytes:
        exchange = self._exchange
        if not self._started:
            response = exchange.start()
            self._started = True
            if response.status != 200:
                raise PubsubError(f"subscribe to {self.topic!r}: {_error_message(response)}")
        assert exchange.response is not None
        return exchange.response.readline()

    async def receive(self) -> PubsubMessage:
        while True:
            if self._read is None:
                self._read = start_thread(self._next_line, f"bhs-ipfs-sub-{self.topic[:20]}")
            try:
                line = await wait_future(self._read, None)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                raise PubsubError(f"subscription to {self.topic!r} failed: {exc}") from exc
            finally:
                if self._read.done():
                    self._read = None
            if not line:
                raise PubsubError(f"subscription to {self.topic!r} ended")
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
                data = _multibase_decode(str(value.get("data", "")))
                sender = str(value["from"])
            except (ValueError, KeyError, TypeError) as exc:
                raise PubsubError(f"unreadable pubsub message: {line[:200]!r}") from exc
            return PubsubMessage(sender, data, self.topic)


class RpcNode:
    """A Kubo daemon through its RPC API, behind the engine's async interface.

    ``timeout``: seconds any one network wait of the quick calls (id, pin rm, ...) may take;
    fetches and pins take their own. Use as
    ``async with RpcNode("ipfs+rpc://127.0.0.1:5001") as node: ...``. The daemon is trusted
    with the content it returns (the caller verifies what it gets).
    """

    kind = "rpc"

    def __init__(self, url: str | RpcEndpoint, *, timeout: float = 60.0) -> None:
        self.endpoint = url if isinstance(url, RpcEndpoint) else parse_rpc_url(url)
        self.timeout = timeout
        self.counters = TransferCounters()
        self._exchanges: set[_Exchange] = set()
        self._started = False
        self.daemon_version = ""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Check the daemon answers ``/version``."""
        self._started = True
        version = await self._json("version")
        self.daemon_version = str(version.get("Version", ""))

    async def aclose(self) -> None:
        """Tear down every request in progress (idempotent)."""
        self._started = False
        for exchange in list(self._exchanges):
            exchange.abort()

    async def _json(
        self,
        command: str,
        params: Mapping[str, str] | None = None,
        *,
        body: Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        error: type[IpfsError] = IpfsError,
    ) -> Any:
        """One request; returns the decoded JSON (the last object of a JSON-lines answer)."""
        if not self._started:
            raise BackendUnavailableError("the rpc backend is not started")
        wait = self.timeout if timeout is None else timeout
        exchange = _Exchange(self.endpoint, wait)

        def run() -> Any:
            try:
                exchange.open(command, params or {}, body, dict(headers or {}))
                response = exchange.start()
                if response.status != 200:
                    raise error(f"{self.endpoint}: {command}: {_error_message(response)}")
                text = response.read()
            finally:
                if not exchange.aborted:
                    exchange.close()
            lines = [line for line in text.splitlines() if line.strip()]
            return json.loads(lines[-1]) if lines else None

        self._exchanges.add(exchange)
        try:
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except TimeoutError:
            raise _TimedOut(f"{self.endpoint}: {command}: no answer within {wait:g} s") from None
        except ConnectionRefusedError as exc:
            raise BackendUnavailableError(f"{self.endpoint}: {exc}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise error(f"{self.endpoint}: {command}: {exc}") from exc
        finally:
            self._exchanges.discard(exchange)
            if exchange.aborted or not exchange.closed:
                exchange.abort()
                exchange.close()

    # ------------------------------------------------------------------ identity, peers

    async def id(self) -> NodeInfo:
        info = await self._json("id")
        peer = str(info["ID"])
        addrs = []
        for addr in info.get("Addresses") or []:
            addr = str(addr)
            addrs.append(addr if "/p2p/" in addr else f"{addr}/p2p/{peer}")
        return NodeInfo(peer, tuple(addrs))

    async def connect(self, multiaddr: str, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        if "/p2p/" not in multiaddr:
            raise ConnectError(f"{multiaddr} has no /p2p/<peer id>")
        try:
            await self._json("swarm/connect", {"arg": multiaddr}, timeout=timeout, error=ConnectError)
        except _TimedOut as exc:
            raise ConnectError(str(exc)) from None

    # ------------------------------------------------------------------ content

    async def add_file(self, path: str | os.PathLike[str]) -> str:
        from ipfshttpclient import multipart  # type: ignore[import-untyped]

        source = Path(path)
        if not source.is_file():
            raise AddError(f"not a file: {source}")
        size = source.stat().st_size
        body, headers = multipart.stream_files(str(source), chunk_size=_READ_SIZE)
        params = {
            "cid-version": "1",
            "raw-leaves": "true",
            "chunker": "size-262144",
            "pin": "true",
            "progress": "false",
            "stream-channels": "true",
        }
        try:
            entry = await self._json("add", params, body=body, headers=headers, error=AddError)
        except _TimedOut as exc:
            raise AddError(str(exc)) from None
        finally:
            body.close()
        if not isinstance(entry, dict) or "Hash" not in entry:
            raise AddError(f"{self.endpoint}: add {source}: unexpected answer {entry!r}")
        self.counters.bytes_added += size
        self.counters.files_added += 1
        return str(entry["Hash"])

    async def pin(self, cid: str, *, timeout: float = DEFAULT_FETCH_TIMEOUT) -> None:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        _check_cid(cid)
        try:
            await self._json("pin/add", {"arg": cid, "recursive": "true"}, timeout=timeout, error=PinError)
        except _TimedOut:
            raise FetchTimeoutError(cid, timeout) from None

    async def unpin(self, cid: str) -> None:
        _check_cid(cid)
        try:
            await self._json("pin/rm", {"arg": cid}, error=PinError)
        except _TimedOut as exc:
            raise PinError(str(exc)) from None

    async def pins(self) -> frozenset[str]:
        try:
            listing = await self._json("pin/ls", {"type": "all"}, error=PinError)
        except _TimedOut as exc:
            raise PinError(str(exc)) from None
        return frozenset(str(key) for key in ((listing or {}).get("Keys") or {}))

    async def get(
        self,
        cid: str,
        write: Writer,
        *,
        max_length: int,
        timeout: float = DEFAULT_FETCH_TIMEOUT,  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
    ) -> int:
        """Stream ``/cat`` into ``write``; ``timeout`` bounds each wait for data."""
        if max_length < 0:
            raise ValueError("max_length must be >= 0")
        _check_cid(cid)
        if not self._started:
            raise BackendUnavailableError("the rpc backend is not started")
        exchange = _Exchange(self.endpoint, timeout)
        self._exchanges.add(exchange)
        written = 0
        try:

            def begin() -> http.client.HTTPResponse:
                exchange.open("cat", {"arg": cid}, None, {})
                return exchange.start()

            response = await anyio.to_thread.run_sync(begin, abandon_on_cancel=True)
            if response.status != 200:
                message = await anyio.to_thread.run_sync(_error_message, response)
                raise IpfsError(f"{self.endpoint}: cat {cid}: {message}")
            expected = response.getheader("X-Content-Length")
            while True:
                chunk = await anyio.to_thread.run_sync(
                    response.read1, _READ_SIZE, abandon_on_cancel=True
                )
                if not chunk:
                    break
                room = max_length - written
                if len(chunk) > room:
                    if room:
                        await write(chunk[:room])
                        written += room
                        self.counters.bytes_fetched += room
                    raise LengthExceededError(cid, max_length)
                await write(chunk)
                written += len(chunk)
                self.counters.bytes_fetched += len(chunk)
            if expected is not None and expected.isdigit() and int(expected) != written:
                raise IpfsError(f"{self.endpoint}: cat {cid} ended after {written} of {expected} bytes")
        except TimeoutError:
            raise FetchTimeoutError(cid, timeout) from None
        except ConnectionRefusedError as exc:
            raise BackendUnavailableError(f"{self.endpoint}: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise IpfsError(f"{self.endpoint}: cat {cid}: {exc}") from exc
        finally:
            self._exchanges.discard(exchange)
            # A thread still blocked on the socket (after a cancellation) wakes up and fails.
            exchange.abort()
            exchange.close()
        self.counters.files_fetched += 1
        return written

    # ------------------------------------------------------------------ pubsub

    async def publish(self, topic: str, payload: bytes) -> None:
        from ipfshttpclient import multipart

        body, headers = multipart.stream_bytes(bytes(payload))
        try:
            await self._json(
                "pubsub/pub", {"arg": _multibase_text(topic)}, body=body, headers=headers, error=PubsubError
            )
        except _TimedOut as exc:
            raise PubsubError(str(exc)) from None

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[_RpcSubscription]:
        return self._subscribe(topic)

    @asynccontextmanager
    async def _subscribe(self, topic: str) -> AsyncIterator[_RpcSubscription]:
        exchange = _Exchange(self.endpoint, None)
        try:
            await anyio.to_thread.run_sync(
                exchange.open, "pubsub/sub", {"arg": _multibase_text(topic)}, None, {}
            )
        except OSError as exc:
            exchange.close()
            raise PubsubError(f"subscribe to {topic!r}: {exc}") from exc
        self._exchanges.add(exchange)
        sub = _RpcSubscription(topic, exchange)
        try:
            yield sub
        finally:
            self._exchanges.discard(exchange)
            exchange.abort()
            reader = sub._read
            if reader is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(concurrent.futures.wait, [reader], 10.0)
            exchange.close()


def _check_cid(cid: str) -> Cid:
    try:
        return Cid.parse(cid)
    except CidError as exc:
        raise InvalidCidError(f"not a CID this engine handles: {cid!r} ({exc})") from exc
