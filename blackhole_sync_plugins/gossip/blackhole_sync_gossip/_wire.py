"""Framing of the engine's own stream protocols (hello, query, peer exchange).

Every frame is an unsigned-varint length followed by that many bytes, the usual
libp2p framing; every read states its maximum *before* the body is read, so a
peer cannot make us allocate more than the cap. A list is a 2-byte big-endian
count frame followed by that many item frames.

Peer records (peer exchange) are UTF-8 text: the base58 peer id then its
multiaddrs, separated by single spaces. They are hints: a wrong address only
costs a failed dial (which Noise turns into an error if the key does not match).
"""

from __future__ import annotations

from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

__all__ = [
    "HELLO_PROTOCOL",
    "MAX_KIND_BYTES",
    "read_query_request",
    "decode_peer_record",
    "encode_peer_record",
    "read_frame",
    "read_list",
    "write_frame",
    "write_list",
]

HELLO_PROTOCOL = "/blackhole/hello/1"
_MAX_RECORD = 1024
#: A query request is one frame: the kind's name.
MAX_KIND_BYTES = 64


async def write_frame(stream: INetStream, data: bytes) -> None:
    await stream.write(encode_varint_prefixed(data))


async def read_frame(stream: INetStream, max_size: int) -> bytes:
    """Read one frame of at most ``max_size`` bytes (larger claims raise before reading)."""
    return await read_varint_prefixed_bytes_limited(stream, max(max_size, 1))


async def write_list(stream: INetStream, items: list[bytes]) -> None:
    if len(items) > 0xFFFF:
        raise ValueError("too many items for one list")
    buf = bytearray(encode_varint_prefixed(len(items).to_bytes(2, "big")))
    for item in items:
        buf += encode_varint_prefixed(item)
    await stream.write(bytes(buf))


async def read_list(
    stream: INetStream,
    *,
    max_items: int,
    max_item_size: int,
    into: list[bytes],
) -> None:
    """Read a list into ``into`` as items arrive, so a caller that times out
    keeps what it already has. Items beyond ``max_items`` are not read."""
    header = await read_frame(stream, 2)
    if len(header) != 2:
        raise ValueError("bad list header")
    count = min(int.from_bytes(header, "big"), max_items)
    for _ in range(count):
        into.append(await read_frame(stream, max_item_size))


def encode_peer_record(peer_id: ID, addrs: list[Multiaddr]) -> bytes:
    return " ".join([peer_id.to_base58(), *(str(a) for a in addrs)]).encode()[:_MAX_RECORD]


def decode_peer_record(data: bytes, max_addrs: int) -> tuple[ID, list[Multiaddr]]:
    """Parse a peer record; raises ``ValueError`` on anything malformed."""
    if len(data) > _MAX_RECORD:
        raise ValueError("peer record too large")
    parts = data.decode("utf-8").split(" ")
    peer_id = ID.from_base58(parts[0])
    addrs = [Multiaddr(p) for p in parts[1 : 1 + max_addrs]]
    return peer_id, addrs


async def read_query_request(stream: INetStream) -> str:
    """The kind a catch-up query asks for (``ValueError`` when not UTF-8)."""
    return (await read_frame(stream, MAX_KIND_BYTES)).decode("utf-8")
