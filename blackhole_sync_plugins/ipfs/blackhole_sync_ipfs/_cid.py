"""Content identifiers and the UnixFS file DAG, in pure Python (no node needed).

Kubo's ``ipfs add --cid-version=1 --raw-leaves`` with the default chunker (``size-262144``) and
the balanced layout turns a file into a Merkle DAG:

- the file is cut into 256 KiB chunks (the last one shorter);
- each chunk is a *raw* block (codec ``raw``, 0x55);
- a file of at most one chunk is that single raw block (an empty file is the empty raw block);
- otherwise chunks hang under ``dag-pb`` (0x70) nodes holding a UnixFS ``File`` record, at most
  174 links each; the tree grows one level at a time, each new root taking the old one as its
  first child and filling up, depth first, with subtrees of the old root's depth.

Every block is identified by a sha2-256 multihash. :class:`DagBuilder` reproduces that exactly
and hands each block to a callback, so the same code computes a CID offline
(:func:`cid_of_file`) and produces the blocks an embedded node stores. The legacy CIDv0 form
(dag-pb leaves wrapping the chunk in a UnixFS record, what Kubo's add gives by default) is
available too, mainly to check the layout against a node that only adds that way.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "CHUNK_SIZE",
    "CODEC_DAG_PB",
    "CODEC_RAW",
    "MAX_LINKS",
    "Cid",
    "CidError",
    "DagBuilder",
    "DagPbNode",
    "cid_of_bytes",
    "cid_of_file",
    "decode_dag_pb",
]

CHUNK_SIZE = 262_144
"""Kubo's default chunker, ``size-262144``."""

MAX_LINKS = 174
"""Links per dag-pb node in Kubo's balanced layout (8 KiB / 47 bytes, rounded down)."""

CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
_SHA2_256 = 0x12
_SHA2_256_LEN = 32
_MAX_BLOCK = 2 * 1024 * 1024  # bitswap's block size limit; anything above is refused

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}

# UnixFS Data.DataType
_UNIXFS_RAW = 0
_UNIXFS_FILE = 2


class CidError(ValueError):
    """A CID string, a multihash or a dag-pb block that cannot be parsed or is not supported."""


# --------------------------------------------------------------------------- encodings


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CidError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CidError("varint too long")


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for char in text:
        try:
            n = n * 58 + _B58_INDEX[char]
        except KeyError:
            raise CidError(f"not base58btc: {char!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    text = text.upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError as exc:
        raise CidError(f"not base32: {exc}") from None


# --------------------------------------------------------------------------- CID


@dataclass(frozen=True, slots=True)
class Cid:
    """A CID: version (0 or 1), codec (raw or dag-pb) and a sha2-256 multihash.

    ``str(cid)`` is the canonical text: base58btc ``Qm...`` for v0, lowercase base32 ``b...``
    for v1. Equality is on all three fields; compare :attr:`multihash` to ignore version and
    codec (that is what a blockstore keys on).
    """

    version: int
    codec: int
    multihash: bytes

    @classmethod
    def for_block(cls, block: bytes, codec: int, version: int = 1) -> Cid:
        """The CID of ``block`` under ``codec`` (sha2-256)."""
        if version == 0 and codec != CODEC_DAG_PB:
            raise CidError("CIDv0 is dag-pb only")
        digest = hashlib.sha256(block).digest()
        return cls(version, codec, bytes((_SHA2_256, _SHA2_256_LEN)) + digest)

    @classmethod
    def parse(cls, text: str) -> Cid:
        """Parse a CID string (``Qm...`` v0, or v1 in base32 ``b`` / base58btc ``z``)."""
        if not isinstance(text, str) or not text:
            raise CidError("empty CID")
        if len(text) == 46 and text.startswith("Qm"):
            return cls.from_bytes(_b58decode(text))
        prefix, body = text[0], text[1:]
        if prefix in "bB":
            raw = _b32decode(body)
        elif prefix == "z":
            raw = _b58decode(body)
        else:
            raise CidError(f"unsupported multibase prefix {prefix!r} in {text!r}")
        return cls.from_bytes(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Cid:
        """Parse binary CID bytes (a bare multihash is a CIDv0)."""
        if len(raw) == 2 + _SHA2_256_LEN and raw[0] == _SHA2_256 and raw[1] == _SHA2_256_LEN:
            return cls(0, CODEC_DAG_PB, bytes(raw))
        version, pos = _read_varint(raw, 0)
        if version != 1:
            raise CidError(f"unsupported CID version {version}")
        codec, pos = _read_varint(raw, pos)
        if codec not in (CODEC_RAW, CODEC_DAG_PB):
            raise CidError(f"unsupported codec 0x{codec:x}")
        mh = bytes(raw[pos:])
        if len(mh) != 2 + _SHA2_256_LEN or mh[0] != _SHA2_256 or mh[1] != _SHA2_256_LEN:
            raise CidError("only sha2-256 multihashes are supported")
        return cls(1, codec, mh)

    def to_bytes(self) -> bytes:
        """Binary form, as carried in dag-pb links."""
        if self.version == 0:
            return self.multihash
        return _varint(1) + _varint(self.codec) + self.multihash

    @property
    def digest(self) -> bytes:
        """The 32-byte sha2-256 digest."""
        return self.multihash[2:]

    def as_raw(self) -> Cid:
        """The CIDv1 ``raw`` CID of the same block bytes (asks a node for exactly one block)."""
        return Cid(1, CODEC_RAW, self.multihash)

    def verify(self, block: bytes) -> bool:
        """True when ``block`` hashes to this CID's multihash."""
        return hashlib.sha256(block).digest() == self.digest

    def __str__(self) -> str:
        if self.version == 0:
            return _b58encode(self.multihash)
        return "b" + _b32encode(self.to_bytes())


# --------------------------------------------------------------------------- dag-pb / UnixFS


def _field_bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _unixfs_file(data: bytes | None, filesize: int, blocksizes: list[int]) -> bytes:
    out = bytearray(_field_varint(1, _UNIXFS_FILE))
    if data:
        out += _field_bytes(2, data)
    out += _field_varint(3, filesize)
    for size in blocksizes:
        out += _field_varint(4, size)
    return bytes(out)


def _dag_pb(links: list[tuple[bytes, int]], data: bytes) -> bytes:
    out = bytearray()
    for cid_bytes, tsize in links:
        link = _field_bytes(1, cid_bytes) + _field_bytes(2, b"") + _field_varint(3, tsize)
        out += _field_bytes(2, link)
    out += _field_bytes(1, data)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class DagPbNode:
    """A decoded dag-pb node holding a UnixFS record (what a file's inner node is).

    ``links`` are ``(cid, tsize)`` in order; ``data`` is the inline file data (leaves in CIDv0
    form carry the chunk here); ``filesize`` and ``blocksizes`` are the UnixFS fields.
    """

    links: tuple[tuple[Cid, int], ...]
    unixfs_type: int
    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


def _parse_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield field, wire, value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise CidError("truncated protobuf field")
            yield field, wire, buf[pos : pos + length]
            pos += length
        else:
            raise CidError(f"unsupported protobuf wire type {wire}")


def decode_dag_pb(block: bytes) -> DagPbNode:
    """Decode a dag-pb block holding a UnixFS file or raw record; :class:`CidError` otherwise."""
    links: list[tuple[Cid, int]] = []
    data_field: bytes | None = None
    for field, wire, value in _parse_fields(block):
        if field == 2 and wire == 2:
            assert isinstance(value, bytes)
            link_cid: Cid | None = None
            tsize = 0
            for lfield, lwire, lvalue in _parse_fields(value):
                if lfield == 1 and lwire == 2:
                    assert isinstance(lvalue, bytes)
                    link_cid = Cid.from_bytes(lvalue)
                elif lfield == 3 and lwire == 0:
                    assert isinstance(lvalue, int)
                    tsize = lvalue
            if link_cid is None:
                raise CidError("dag-pb link without a hash")
            links.append((link_cid, tsize))
        elif field == 1 and wire == 2:
            assert isinstance(value, bytes)
            data_field = value
        else:
            raise CidError(f"unexpected dag-pb field {field}")
    if data_field is None:
        raise CidError("dag-pb node without UnixFS data")
    kind: int | None = None
    inline = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for field, wire, value in _parse_fields(data_field):
        if field == 1 and wire == 0:
            assert isinstance(value, int)
            kind = value
        elif field == 2 and wire == 2:
            assert isinstance(value, bytes)
            inline = value
        elif field == 3 and wire == 0:
            assert isinstance(value, int)
            filesize = value
        elif field == 4 and wire == 0:
            assert isinstance(value, int)
            blocksizes.append(value)
        elif field == 4 and wire == 2:  # packed, in case a writer packs them
            assert isinstance(value, bytes)
            pos = 0
            while pos < len(value):
                size, pos = _read_varint(value, pos)
                blocksizes.append(size)
    if kind not in (_UNIXFS_FILE, _UNIXFS_RAW):
        raise CidError(f"not a UnixFS file node (type {kind})")
    if links and len(blocksizes) != len(links):
        raise CidError("UnixFS blocksizes do not match the links")
    return DagPbNode(tuple(links), kind, inline, filesize, tuple(blocksizes))


# --------------------------------------------------------------------------- the builder

BlockSink = Callable[[Cid, bytes], None]
"""Receives every block of a DAG, children before parents, the root last."""


@dataclass(slots=True)
class _Built:
    cid: Cid
    tsize: int  # the size a parent's link records: this block plus everything under it
    filesize: int  # file bytes under this node


class DagBuilder:
    """Build the UnixFS DAG of a byte stream exactly as Kubo's balanced importer does.

    ``cid_version=1`` (the default) gives raw leaves and CIDv1 dag-pb nodes (``--cid-version=1
    --raw-leaves``); ``cid_version=0`` gives Kubo's legacy default (dag-pb leaves, CIDv0).
    ``sink`` receives each block as it is made, so memory stays at one chunk plus the links of
    the nodes being filled.
    """

    def __init__(
        self,
        sink: BlockSink | None = None,
        *,
        cid_version: int = 1,
        chunk_size: int = CHUNK_SIZE,
        max_links: int = MAX_LINKS,
    ) -> None:
        if cid_version not in (0, 1):
            raise ValueError("cid_version is 0 or 1")
        if not 0 < chunk_size <= _MAX_BLOCK - 1024:
            raise ValueError("chunk_size out of range")
        if max_links < 2:
            raise ValueError("max_links must be at least 2")
        self._sink = sink
        self._version = cid_version
        self._chunk_size = chunk_size
        self._max_links = max_links
        self._reader: BinaryIO | None = None
        self._next: bytes | None = None
        self.blocks = 0
        self.total_bytes = 0

    # The reader keeps one chunk of look-ahead: "is there more data" decides the layout.
    def _pull(self) -> None:
        assert self._reader is not None
        parts: list[bytes] = []
        need = self._chunk_size
        while need:
            part = self._reader.read(need)
            if not part:
                break
            parts.append(part)
            need -= len(part)
        self._next = b"".join(parts) if parts else None

    def _done(self) -> bool:
        return self._next is None

    def _take(self) -> bytes:
        chunk = self._next
        assert chunk is not None
        self._pull()
        return chunk

    def _emit(self, cid: Cid, block: bytes) -> None:
        self.blocks += 1
        if self._sink is not None:
            self._sink(cid, block)

    def _leaf(self, chunk: bytes) -> _Built:
        self.total_bytes += len(chunk)
        if self._version == 1:
            cid = Cid.for_block(chunk, CODEC_RAW, 1)
            self._emit(cid, chunk)
            return _Built(cid, len(chunk), len(chunk))
        block = _dag_pb([], _unixfs_file(chunk, len(chunk), []))
        cid = Cid.for_block(block, CODEC_DAG_PB, 0)
        self._emit(cid, block)
        return _Built(cid, len(block), len(chunk))

    def _inner(self, children: list[_Built]) -> _Built:
        filesize = sum(child.filesize for child in children)
        data = _unixfs_file(None, filesize, [child.filesize for child in children])
        block = _dag_pb([(child.cid.to_bytes(), child.tsize) for child in children], data)
        cid = Cid.for_block(block, CODEC_DAG_PB, self._version)
        self._emit(cid, block)
        return _Built(cid, len(block) + sum(child.tsize for child in children), filesize)

    def _fill(self, children: list[_Built], depth: int) -> _Built:
        while len(children) < self._max_links and not self._done():
            if depth == 1:
                children.append(self._leaf(self._take()))
            else:
                children.append(self._fill([], depth - 1))
        return self._inner(children)

    def build(self, reader: BinaryIO) -> Cid:
        """Read ``reader`` to its end and return the root CID."""
        self._reader = reader
        self._pull()
        if self._done():
            root = self._leaf(b"")
            return root.cid
        root = self._leaf(self._take())
        depth = 1
        while not self._done():
            root = self._fill([root], depth)
            depth += 1
        return root.cid


def cid_of_file(path: str | os.PathLike[str], *, cid_version: int = 1) -> str:
    """The CID Kubo's add gives ``path`` (CIDv1, raw leaves, 256 KiB chunks, balanced).

    Pure Python, no node: reads the file once (about the speed of sha256).
    """
    with open(path, "rb") as reader:
        return str(DagBuilder(cid_version=cid_version).build(reader))


def cid_of_bytes(data: bytes, *, cid_version: int = 1) -> str:
    """:func:`cid_of_file` for bytes in memory."""
    import io

    return str(DagBuilder(cid_version=cid_version).build(io.BytesIO(data)))
