"""A small strict bencode codec for DHT messages and BEP 44 signatures.

Only what the DHT client needs: integers, byte strings, lists and dictionaries with byte-string
keys. Decoding is strict and bounded (canonical integers, sorted unique keys, no trailing bytes,
a depth limit, a size limit), because its input is untrusted UDP datagrams. Torrent files are
parsed by libtorrent, not here.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["BencodeError", "Value", "decode", "encode"]

Value: TypeAlias = "int | bytes | list[Value] | dict[bytes, Value]"

MAX_INPUT = 64 * 1024
"""Largest input :func:`decode` accepts (a UDP datagram is at most 64 KiB)."""

MAX_DEPTH = 16
"""Deepest nesting of lists and dictionaries :func:`decode` accepts."""


class BencodeError(ValueError):
    """The input is not canonical bencode within the limits."""


def encode(value: Value) -> bytes:
    """Bencode ``value`` (dictionary keys are sorted as raw bytes)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value):
            if not isinstance(key, bytes):
                raise TypeError("bencode dictionary keys must be bytes")
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """Decode one canonical bencoded value that spans all of ``data``."""
    if len(data) > MAX_INPUT:
        raise BencodeError("input too large")
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes after the value")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Value, int]:
    if pos >= len(data):
        raise BencodeError("truncated input")
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError("unterminated integer")
        digits = data[pos + 1 : end]
        body = digits[1:] if digits.startswith(b"-") else digits
        if not body.isdigit() or (body.startswith(b"0") and (len(body) > 1 or digits != body)):
            raise BencodeError("non-canonical integer")
        return int(digits), end + 1
    if lead.isdigit():
        colon = data.find(b":", pos)
        if colon < 0 or colon - pos > 8:
            raise BencodeError("bad string length")
        digits = data[pos:colon]
        if not digits.isdigit() or (digits.startswith(b"0") and len(digits) > 1):
            raise BencodeError("non-canonical string length")
        start = colon + 1
        stop = start + int(digits)
        if stop > len(data):
            raise BencodeError("truncated string")
        return data[start:stop], stop
    if depth >= MAX_DEPTH:
        raise BencodeError("nesting too deep")
    if lead == b"l":
        items: list[Value] = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos + 1
    if lead == b"d":
        result: dict[bytes, Value] = {}
        previous: bytes | None = None
        pos += 1
        while data[pos : pos + 1] != b"e":
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is not a string")
            if previous is not None and key <= previous:
                raise BencodeError("dictionary keys not sorted or not unique")
            previous = key
            result[key], pos = _decode(data, pos, depth + 1)
        return result, pos + 1
    raise BencodeError("unexpected byte")
