"""Strict JSON and canonical bytes: the encoding every signature covers.

Signatures cover :func:`canonical_bytes` of a document's ``signed`` object: UTF-8 JSON, keys
sorted, no insignificant whitespace, integers only, minimal escaping. :func:`strict_loads` makes
that re-encoding faithful: the size is capped before anything is parsed; duplicate keys, floats,
NaN/Infinity, integers outside ``0..2**63-1``, nesting deeper than :data:`MAX_DEPTH`, lone
surrogates, a byte order mark and non-UTF-8 input are refused with :class:`FormatError`.

This module also holds the fast path for envelopes already in canonical form (what every writer
here produces): it accepts exactly what the strict parser accepts, or steps aside.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import FormatError

__all__ = ["MAX_DEPTH", "MAX_INT", "MAX_SIZES", "canonical_bytes", "strict_loads"]

#: The largest integer a document may hold (and no negative ones): what every JSON parser in
#: every language we target reads exactly.
MAX_INT = 2**63 - 1

#: Size caps (bytes) applied before parsing, per document type.
MAX_SIZES: Mapping[str, int] = {
    "root": 512 * 1024,
    "index": 16 * 1024 * 1024,
    "release": 4 * 1024 * 1024,
    "rollout": 256 * 1024,
    "halt": 64 * 1024,
    "proposal": 256 * 1024,
    "vote": 16 * 1024,
    "health": 64 * 1024,
    "status": 64 * 1024,
    "announcement": 16 * 1024,
    "validators": 256 * 1024,
    "certificate": 512 * 1024,
    "downgrade": 16 * 1024,
    "deprecation": 16 * 1024,
}
#: Deepest JSON nesting accepted.
MAX_DEPTH = 32


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FormatError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _int(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_INT:
        raise FormatError(f"integer out of range 0..2^63-1: {text[:40]}")
    return value


def _no_float(text: str) -> Any:
    raise FormatError(f"floats are not allowed: {text[:40]}")


def _no_constant(text: str) -> Any:
    raise FormatError(f"{text} is not allowed")


def _depth(obj: Any, level: int = 0) -> None:
    if level > MAX_DEPTH:
        raise FormatError(f"nesting deeper than {MAX_DEPTH}")
    children = obj.values() if type(obj) is dict else obj if type(obj) is list else None
    if not children:
        return
    if level + 1 > MAX_DEPTH:  # a scalar member sits one level deeper too
        raise FormatError(f"nesting deeper than {MAX_DEPTH}")
    for value in children:
        if type(value) is dict or type(value) is list:  # only containers nest further
            _depth(value, level + 1)


#: Valid UTF-8 holds no surrogates, so a lone one can only come from a ``\uD800``-``\uDFFF``
#: escape; this (over-)matches every such escape.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def strict_loads(data: bytes, *, max_size: int) -> Any:
    """Parse JSON strictly (see module docstring). The cap applies before anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("strict_loads takes bytes")
    if len(data) > max_size:
        raise FormatError(f"document is {len(data)} bytes, over the {max_size}-byte cap")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("document is not UTF-8") from exc
    if text.startswith("\ufeff"):
        raise FormatError("document starts with a byte order mark")
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_int,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"not valid JSON: {exc}") from exc
    _depth(obj)
    if _SURROGATE_ESCAPE.search(text):
        canonical_bytes(obj)  # refuses lone surrogates (they can only come from \u escapes)
    return obj


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
#: The same encoding for trees fresh from the JSON parser, which cannot hold cycles.
_CANONICAL_TREE = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
)


def canonical_bytes(obj: Any) -> bytes:
    """The canonical encoding signatures cover."""
    try:
        return _CANONICAL.encode(obj).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError("string is not valid Unicode (lone surrogate)") from exc
    except (TypeError, ValueError) as exc:
        raise FormatError(f"cannot encode canonically: {exc}") from exc


#: The strict parser's hooks minus the two that cost on every document (``object_pairs_hook``,
#: ``parse_int``); floats and NaN/Infinity still raise as they are met.
_LENIENT_DECODER = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_constant)


def _plain_tree(obj: Any, level: int) -> bool:
    """True when every integer under container ``obj`` is in ``0..MAX_INT`` and no container
    sits at or below level ``MAX_DEPTH`` (stricter than :func:`_depth`: False only means
    "let the strict parser decide")."""
    for value in obj.values() if type(obj) is dict else obj:
        kind = type(value)
        if kind is int:
            if not 0 <= value <= MAX_INT:
                return False
        elif kind is dict or kind is list:
            if level + 1 >= MAX_DEPTH or not _plain_tree(value, level + 1):
                return False
    return True


def _canonical_envelope(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """Parse an envelope that is already in canonical form, as every writer here produces it:
    ``{"signatures":[...],"signed":{...}}`` byte for byte. Returns the parsed object and the
    canonical bytes of ``signed``, or None when the strict parser must decide.

    Why this is as strict as :func:`strict_loads`: the document is accepted only if it equals
    the canonical encoding of what was parsed. That encoding writes each key of each object
    once (dict keys are unique, and distinct strings encode to distinct text), so a document
    equal to it holds no duplicate key; it is UTF-8 without a BOM; it has no lone surrogate
    (encoding would fail). Floats and NaN/Infinity raise while parsing; integers and depth are
    checked by :func:`_plain_tree`. Any failure or doubt returns None, never an error, so the
    strict path names every refusal exactly as before. The caller has applied the size cap.
    """
    try:
        text = data.decode("utf-8")
        obj = _LENIENT_DECODER.decode(text)
    except (ValueError, RecursionError, FormatError):  # UnicodeDecodeError is a ValueError
        return None
    if type(obj) is not dict or len(obj) != 2:
        return None
    signed = obj.get("signed")
    signatures = obj.get("signatures")
    if type(signed) is not dict or type(signatures) is not list:
        return None
    try:
        signed_bytes = _CANONICAL_TREE.encode(signed).encode("utf-8")
        sigs_bytes = _CANONICAL_TREE.encode(signatures).encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    if data != b'{"signatures":' + sigs_bytes + b',"signed":' + signed_bytes + b"}":
        return None
    if not _plain_tree(obj, 0):
        return None
    return obj, signed_bytes
