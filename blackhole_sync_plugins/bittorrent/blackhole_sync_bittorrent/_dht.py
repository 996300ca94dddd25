"""BEP 44 mutable items: signing with pynacl, and a small KRPC client that gets and puts them.

A mutable item is stored under ``target = sha1(public_key + salt)``. Its value here is always
a byte string (a signed document), bencoded as such. The DHT-level signature (ed25519 over
``4:salt<len>:<salt>3:seqi<seq>e1:v<bencoded value>``, the salt part only when the salt is not
empty) only proves that the holder of ``public_key`` wrote it; it says nothing about whether
the document is current or trusted. So :meth:`DhtClient.get` returns every distinct item the
responding nodes hold (:class:`Candidate`), signature-checked but otherwise untrusted, and the
caller decides (right key, document signature, sequence floor, equivocation).

Why a KRPC client of our own next to libtorrent's DHT node: libtorrent's Python binding
(``session.dht_put_mutable_item``) always publishes ``seq = (highest seq found) + 1`` and needs
the private key, so it cannot publish a chosen ``seq`` (our index version, so that the DHT
itself never goes back) nor re-put an item signed elsewhere. :class:`DhtClient` does an
iterative ``get`` lookup (BEP 5 routing, BEP 43 read-only queries) and a ``put`` of an item
exactly as signed, to the closest nodes that handed out write tokens. The engine's libtorrent
session still runs a full DHT node (it stores items and routes), and the native libtorrent
put/get stay available (:meth:`Engine.dht_put_native` / :meth:`Engine.dht_get_native`); they
use the 64-byte expanded secret of :func:`libtorrent_secret_key`.

With ``loopback_only`` the client binds 127.0.0.1 and never sends to a node outside
127.0.0.0/8, whatever other nodes report.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.abc
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from . import _bencode
from ._errors import DhtError

__all__ = [
    "MAX_SALT_BYTES",
    "MAX_VALUE_BYTES",
    "Candidate",
    "DhtClient",
    "DhtLimits",
    "GetResult",
    "MutableItem",
    "PutResult",
    "announcement_salt",
    "libtorrent_secret_key",
]

MAX_VALUE_BYTES: Final = 996
"""Largest value: BEP 44 nodes (libtorrent among them) refuse a bencoded ``v`` over 1000 bytes,
and a 996-byte string bencodes to ``996:`` + 996 bytes = 1000."""

MAX_SALT_BYTES: Final = 64
"""Largest salt BEP 44 allows."""

Address = tuple[str, int]


def announcement_salt(network: str, channel: str) -> bytes:
    """The salt of a network's channel announcement: ``blackhole-sync/<network>/<channel>``."""
    salt = f"blackhole-sync/{network}/{channel}".encode()
    if len(salt) > MAX_SALT_BYTES or "/" in network or "/" in channel:
        raise ValueError("network and channel must be short and contain no '/'")
    return salt


def libtorrent_secret_key(seed: bytes) -> bytes:
    """The 64-byte ed25519 secret libtorrent's DHT wants, from a 32-byte (pynacl) seed.

    It is the expanded key: ``sha512(seed)`` with the scalar half clamped (byte 0 ``&= 248``,
    byte 31 ``&= 63`` then ``|= 64``); the second half is the nonce prefix.
    """
    if len(seed) != 32:
        raise ValueError("an ed25519 seed is 32 bytes")
    expanded = bytearray(hashlib.sha512(seed).digest())
    expanded[0] &= 248
    expanded[31] &= 63
    expanded[31] |= 64
    return bytes(expanded)


def _signed_bytes(salt: bytes, seq: int, value: bytes) -> bytes:
    prefix = _bencode.encode(b"salt") + _bencode.encode(salt) if salt else b""
    return prefix + b"3:seqi%de1:v" % seq + _bencode.encode(value)


@dataclass(frozen=True)
class MutableItem:
    """A BEP 44 mutable item whose value is a byte string."""

    public_key: bytes
    salt: bytes
    seq: int
    value: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != 32 or len(self.signature) != 64:
            raise ValueError("public key is 32 bytes, signature 64")
        if len(self.salt) > MAX_SALT_BYTES:
            raise ValueError(f"salt is at most {MAX_SALT_BYTES} bytes")
        if len(self.value) > MAX_VALUE_BYTES:
            raise ValueError(f"value is at most {MAX_VALUE_BYTES} bytes")
        if not 0 <= self.seq < 2**63:
            raise ValueError("seq is a non-negative 64-bit integer")

    @classmethod
    def sign(cls, key: SigningKey, value: bytes, seq: int, salt: bytes = b"") -> MutableItem:
        """Sign ``value`` at ``seq`` under ``salt`` with ``key`` (pynacl)."""
        signature = key.sign(_signed_bytes(salt, seq, value)).signature
        return cls(bytes(key.verify_key), salt, seq, value, signature)

    @property
    def target(self) -> bytes:
        """The 20-byte DHT target: ``sha1(public_key + salt)``."""
        return hashlib.sha1(self.public_key + self.salt).digest()  # noqa: S324 - BEP 44

    def signature_valid(self) -> bool:
        """Whether the DHT-level signature verifies under ``public_key``."""
        try:
            VerifyKey(self.public_key).verify(
                _signed_bytes(self.salt, self.seq, self.value), self.signature
            )
        except (BadSignatureError, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Candidate:
    """One distinct item returned by a lookup, and how many nodes returned it."""

    item: MutableItem
    responders: int

    @property
    def value(self) -> bytes:
        return self.item.value

    @property
    def seq(self) -> int:
        return self.item.seq

    @property
    def public_key(self) -> bytes:
        return self.item.public_key

    @property
    def salt(self) -> bytes:
        return self.item.salt


@dataclass(frozen=True)
class GetResult:
    """The outcome of :meth:`DhtClient.get`: candidates by descending ``seq``, untrusted."""

    candidates: tuple[Candidate, ...]
    nodes_queried: int
    nodes_responded: int
    invalid: int
    """Items dropped: bad signature, wrong key, or a value that is not a byte string."""


@dataclass(frozen=True)
class PutResult:
    """The outcome of :meth:`DhtClient.put`."""

    stored: int
    """Nodes that answered the put without an error."""
    refused: tuple[tuple[int, str], ...]
    """``(code, message)`` of each node that answered with a KRPC error (302: lower seq...)."""
    unanswered: int
    nodes_queried: int


@dataclass(frozen=True)
class DhtLimits:
    """Bounds of one lookup (every loop and wait of the client is bounded)."""

    query_timeout: float = 2.0
    straggler_grace: float = 0.5
    """Once a round has its first reply, how long it waits for the rest of its queries."""
    alpha: int = 4
    k: int = 8
    max_rounds: int = 10
    max_queries: int = 100
    max_known_nodes: int = 512
    max_seed_nodes: int = 32
    unresponsive_ttl: float = 600.0
    """How long a node that did not answer is skipped by later lookups."""
    max_unresponsive: int = 1024


@dataclass
class _Pending:
    address: Address
    done: anyio.Event = field(default_factory=anyio.Event)
    reply: dict[bytes, _bencode.Value] | None = None
    error: tuple[int, str] | None = None


@dataclass
class _Node:
    address: Address
    node_id: bytes | None = None
    reply: dict[bytes, _bencode.Value] | None = None


class DhtClient:
    """A read-only KRPC client for BEP 44 ``get`` and ``put`` (IPv4).

    Run :meth:`serve` in a task group (``await tg.start(client.serve)``); it owns the UDP
    socket until cancelled. ``seed_nodes`` is awaited at the start of every lookup and returns
    the nodes to start from (known nodes, the local libtorrent node, its routing table).
    """

    def __init__(
        self,
        seed_nodes: Callable[[], Awaitable[Sequence[Address]]],
        *,
        loopback_only: bool = True,
        bind_host: str = "127.0.0.1",
        limits: DhtLimits | None = None,
    ) -> None:
        self._seed_nodes = seed_nodes
        self._loopback_only = loopback_only
        self._bind_host = "127.0.0.1" if loopback_only else bind_host
        self._limits = limits or DhtLimits()
        self._node_id = os.urandom(20)
        self._socket: anyio.abc.UDPSocket | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._send_lock = anyio.Lock()
        self._unresponsive: dict[Address, float] = {}
        self._next_tid = int.from_bytes(os.urandom(2), "big")

    @property
    def local_address(self) -> Address:
        if self._socket is None:
            raise RuntimeError("the DHT client is not running")
        address = self._socket.extra(anyio.abc.SocketAttribute.local_address)  # noqa: S610
        assert isinstance(address, tuple)
        return str(address[0]), int(address[1])

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the socket, report started, and route replies until cancelled."""
        async with await anyio.create_udp_socket(
            family=socket.AF_INET, local_host=self._bind_host, local_port=0
        ) as sock:
            self._socket = sock
            task_status.started()
            try:
                async for data, (host, port) in sock:
                    self._on_datagram(data, (str(host), int(port)))
            finally:
                self._socket = None
                for pending in self._pending.values():
                    pending.done.set()

    def _on_datagram(self, data: bytes, address: Address) -> None:
        try:
            message = _bencode.decode(data)
        except _bencode.BencodeError:
            return
        if not isinstance(message, dict):
            return
        tid = message.get(b"t")
        if not isinstance(tid, bytes):
            return
        pending = self._pending.get(tid)
        if pending is None or pending.address != address:
            return
        kind = message.get(b"y")
        if kind == b"r" and isinstance(reply := message.get(b"r"), dict):
            pending.reply = reply
        elif kind == b"e" and isinstance(error := message.get(b"e"), list) and len(error) >= 2:
            code, text = error[0], error[1]
            pending.error = (
                code if isinstance(code, int) else 0,
                text.decode("utf-8", "replace") if isinstance(text, bytes) else "",
            )
        else:
            return
        pending.done.set()

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return False
        if self._loopback_only:
            return address.is_loopback
        return not (address.is_unspecified or address.is_multicast)

    async def _query(
        self, address: Address, method: bytes, arguments: dict[bytes, _bencode.Value]
    ) -> _Pending:
        if self._socket is None:
            raise DhtError("the DHT client is not running")
        if not self._allowed(address[0]):
            raise DhtError(f"refusing to query {address[0]}")
        self._next_tid = (self._next_tid + 1) & 0xFFFF
        tid = self._next_tid.to_bytes(2, "big")
        pending = _Pending(address)
        self._pending[tid] = pending
        message: dict[bytes, _bencode.Value] = {
            b"t": tid,
            b"y": b"q",
            b"q": method,
            b"a": {b"id": self._node_id, **arguments},
            b"ro": 1,
        }
        try:
            async with self._send_lock:  # one sender at a time (anyio's socket guard)
                await self._socket.sendto(_bencode.encode(message), address[0], address[1])
            with anyio.move_on_after(self._limits.query_timeout):
                await pending.done.wait()
        except OSError:
            pass
        finally:
            self._pending.pop(tid, None)
        return pending

    async def _lookup(self, target: bytes) -> tuple[list[_Node], int]:
        """Iterative ``get`` towards ``target``: the nodes that replied (closest first) and
        how many nodes were queried."""
        limits = self._limits
        target_int = int.from_bytes(target, "big")

        def distance(node: _Node) -> int:
            if node.node_id is None:
                return 1 << 160
            return int.from_bytes(node.node_id, "big") ^ target_int

        now = time.monotonic()
        self._unresponsive = {
            a: t for a, t in self._unresponsive.items() if now - t < limits.unresponsive_ttl
        }
        known: dict[Address, _Node] = {}
        for host, port in list(await self._seed_nodes())[: limits.max_seed_nodes]:
            if self._allowed(host) and 0 < port < 65536:
                known.setdefault((host, port), _Node((host, port)))
        # Seed nodes are always asked; nodes learned from replies that did not answer a
        # recent lookup are skipped (marked as queried).
        queried: set[Address] = set()

        async def ask(node: _Node) -> None:
            pending = await self._query(node.address, b"get", {b"target": target})
            reply = pending.reply
            if reply is None:
                return
            node_id = reply.get(b"id")
            if isinstance(node_id, bytes) and len(node_id) == 20:
                node.node_id = node_id
            node.reply = reply
            compact = reply.get(b"nodes")
            if isinstance(compact, bytes):
                for offset in range(0, len(compact) - 25, 26):
                    entry = compact[offset : offset + 26]
                    host = socket.inet_ntoa(entry[20:24])
                    (port,) = struct.unpack("!H", entry[24:26])
                    if (
                        len(known) < limits.max_known_nodes
                        and port
                        and self._allowed(host)
                        and (host, port) not in known
                    ):
                        known[(host, port)] = _Node((host, port), entry[:20])
                        if (host, port) in self._unresponsive:
                            queried.add((host, port))

        first = True
        for _round in range(limits.max_rounds):
            ranked = sorted(known.values(), key=distance)
            responded = [n for n in ranked if n.reply is not None]
            unqueried = [n for n in ranked if n.address not in queried]
            if len(responded) >= limits.k:
                kth = distance(responded[limits.k - 1])
                unqueried = [n for n in unqueried if distance(n) < kth]
            batch = unqueried if first else unqueried[: limits.alpha]
            batch = batch[: max(0, limits.max_queries - len(queried))]
            if not batch:
                break
            first = False
            queried.update(n.address for n in batch)
            await self._round(batch, ask, enough=len(responded) >= limits.k)
        replied = sorted((n for n in known.values() if n.reply is not None), key=distance)
        return replied, len(queried)

    async def _round(
        self, batch: list[_Node], ask: Callable[[_Node], Awaitable[None]], *, enough: bool
    ) -> None:
        """Query ``batch`` in parallel. Stragglers get :attr:`DhtLimits.straggler_grace` after
        the round's first reply, or from the start when the lookup already has ``k`` replies
        (a dead node must not hold every lookup for a full timeout)."""
        progressed = anyio.Event()
        if enough:
            progressed.set()
        all_done = anyio.Event()
        remaining = len(batch)

        async def one(node: _Node) -> None:
            nonlocal remaining
            try:
                await ask(node)
            finally:
                if node.reply is None and len(self._unresponsive) < self._limits.max_unresponsive:
                    self._unresponsive[node.address] = time.monotonic()
                remaining -= 1
                if node.reply is not None or remaining == 0:
                    progressed.set()
                if remaining == 0:
                    all_done.set()

        async with anyio.create_task_group() as tg:
            for node in batch:
                tg.start_soon(one, node)

            async def watchdog() -> None:
                await progressed.wait()
                with anyio.move_on_after(self._limits.straggler_grace):
                    await all_done.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watchdog)

    async def get(self, public_key: bytes, salt: bytes = b"") -> GetResult:
        """Every distinct, correctly signed item under ``(public_key, salt)``; trust none."""
        if len(public_key) != 32:
            raise ValueError("public key is 32 bytes")
        target = hashlib.sha1(public_key + salt).digest()  # noqa: S324 - BEP 44 target
        nodes, queried = await self._lookup(target)
        counts: dict[MutableItem, int] = {}
        invalid = 0
        for node in nodes:
            reply = node.reply
            assert reply is not None
            if b"v" not in reply:
                continue
            key, seq, sig, value = (
                reply.get(b"k"),
                reply.get(b"seq"),
                reply.get(b"sig"),
                reply[b"v"],
            )
            try:
                if (
                    key != public_key
                    or not isinstance(seq, int)
                    or not isinstance(sig, bytes)
                    or not isinstance(value, bytes)
                ):
                    raise ValueError("not a byte-string item under this key")
                item = MutableItem(public_key, salt, seq, value, sig)
            except ValueError:
                invalid += 1
                continue
            if not item.signature_valid():
                invalid += 1
                continue
            counts[item] = counts.get(item, 0) + 1
        candidates = sorted(
            (Candidate(item, n) for item, n in counts.items()),
            key=lambda c: (-c.item.seq, -c.responders, c.item.value),
        )
        return GetResult(tuple(candidates), queried, len(nodes), invalid)

    async def put(self, item: MutableItem) -> PutResult:
        """Store ``item`` exactly as signed on the closest nodes (no key needed: a re-put)."""
        nodes, _queried = await self._lookup(item.target)
        writable = [n for n in nodes if isinstance((n.reply or {}).get(b"token"), bytes)]
        writable = writable[: self._limits.k]
        arguments_base: dict[bytes, _bencode.Value] = {
            b"k": item.public_key,
            b"seq": item.seq,
            b"sig": item.signature,
            b"v": item.value,
        }
        if item.salt:
            arguments_base[b"salt"] = item.salt
        stored = 0
        refused: list[tuple[int, str]] = []
        unanswered = 0

        async def put_one(node: _Node) -> None:
            nonlocal stored, unanswered
            token = (node.reply or {})[b"token"]
            pending = await self._query(node.address, b"put", {**arguments_base, b"token": token})
            if pending.error is not None:
                refused.append(pending.error)
            elif pending.reply is not None:
                stored += 1
            else:
                unanswered += 1

        async with anyio.create_task_group() as tg:
            for node in writable:
                tg.start_soon(put_one, node)
        return PutResult(stored, tuple(refused), unanswered, len(writable))
