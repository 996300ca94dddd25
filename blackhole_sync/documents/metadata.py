"""Signed documents: strict parsing from bytes, attrs models and the canonical encoding.

Every document is ``{"signed": {...}, "signatures": [{"keyid": HEX, "sig": HEX}]}``. Signatures
cover :func:`canonical_bytes` of ``signed``: UTF-8 JSON, keys sorted, no insignificant
whitespace, integers only, minimal escaping. Parsing is strict so that re-encoding is faithful:
the size is capped before parsing; duplicate keys, floats, NaN/Infinity, integers outside
``0..2**63-1``, lone surrogates and non-UTF-8 input are refused with :class:`FormatError`.
Unknown fields are kept (``extra``) so a newer writer's documents still verify and round-trip.

Models are frozen attrs classes with ``from_dict`` (strict, raises FormatError) and ``to_dict``.
Optional fields are omitted when unset; an explicit ``null`` is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import semver
from attrs import field, frozen

from ..errors import FormatError, UnsafePathError
from .signing import PrivateKey, PublicKey, Signature, verify_threshold

__all__ = [
    "DOCUMENT_TYPES",
    "HASH_ALGORITHMS",
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_SIZES",
    "SPEC_VERSION",
    "UPDATE_TYPES",
    "Artifact",
    "Command",
    "Compatibility",
    "ConfigChange",
    "DeltaRecord",
    "Encryption",
    "Envelope",
    "HaltDoc",
    "HealthReport",
    "Index",
    "IndexChannel",
    "MetaFile",
    "Member",
    "Migration",
    "NodeStatusDoc",
    "Proposal",
    "ProtocolInfo",
    "Recipient",
    "ReleaseManifest",
    "Role",
    "Root",
    "RolloutPhase",
    "RolloutPlan",
    "SchemaInfo",
    "Unpack",
    "Vote",
    "canonical_bytes",
    "check_safe_name",
    "check_safe_path",
    "format_time",
    "parse_time",
    "parse_version",
    "strict_loads",
]

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
}
#: Deepest JSON nesting accepted.
MAX_DEPTH = 32
#: Supported hash algorithms; any other is refused.
HASH_ALGORITHMS = frozenset({"sha256"})
UPDATE_TYPES = ("binary", "configuration", "protocol", "schema")
SPEC_VERSION = "1"


# -- strict JSON ----------------------------------------------------------------------------


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


# -- field readers ----------------------------------------------------------------------------

T = TypeVar("T")
_MISSING: Any = object()
_TIME_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Names and paths that are plainly safe (ASCII, no leading dot, components of at most 255
#: bytes): a fast path past the detailed checks, which accept a superset of these.
_PLAIN_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}"
_PLAIN_NAME = re.compile(_PLAIN_COMPONENT + r"\Z")
_PLAIN_PATH = re.compile(rf"{_PLAIN_COMPONENT}(?:/{_PLAIN_COMPONENT})*\Z")
#: ``MAJOR.MINOR.PATCH`` without leading zeros, pre-release or build: semver accepts it and
#: prints it back unchanged (components short enough for any int conversion limit).
_PLAIN_VERSION = re.compile(r"(?:0|[1-9][0-9]{0,17})(?:\.(?:0|[1-9][0-9]{0,17})){2}\Z")


class _Reader:
    """Pops typed fields from a dict; whatever is left over is the unknown-field ``extra``."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise FormatError(f"{where}: expected an object")
        self.obj = dict(obj)
        self.where = where

    def _absent(self, key: str, value: Any, default: Any) -> Any:
        """``key`` was missing or null: the default if it may be omitted, else raise."""
        if value is None:
            raise FormatError(f"{self.where}.{key}: null is not allowed (omit the field)")
        if default is _MISSING:
            raise FormatError(f"{self.where}: missing field {key!r}")
        return default

    def integer(
        self, key: str, default: Any = _MISSING, *, minimum: int = 0, maximum: int = MAX_INT
    ) -> Any:
        value = self.obj.pop(key, _MISSING)
        if value is _MISSING or value is None:
            return self._absent(key, value, default)
        if type(value) is not int:
            raise FormatError(f"{self.where}.{key}: expected an integer")
        if not minimum <= value <= maximum:
            raise FormatError(f"{self.where}.{key}: {value} outside {minimum}..{maximum}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self.obj.pop(key, _MISSING)
        if value is _MISSING or value is None:
            return self._absent(key, value, default)
        if type(value) is not bool:
            raise FormatError(f"{self.where}.{key}: expected true or false")
        return value

    def string(self, key: str, default: Any = _MISSING, *, max_len: int = 4096) -> Any:
        value = self.obj.pop(key, _MISSING)
        if value is _MISSING or value is None:
            return self._absent(key, value, default)
        if not isinstance(value, str):
            raise FormatError(f"{self.where}.{key}: expected a string")
        if len(value) > max_len:
            raise FormatError(f"{self.where}.{key}: longer than {max_len} characters")
        return value

    def value(self, key: str, default: Any = _MISSING) -> Any:
        value = self.obj.pop(key, _MISSING)
        if value is _MISSING or value is None:
            return self._absent(key, value, default)
        return value

    def obj_(self, key: str, parse: Callable[[Any, str], T], default: Any = _MISSING) -> Any:
        value = self.obj.pop(key, _MISSING)
        if value is _MISSING or value is None:
            return self._absent(key, value, default)
        return parse(value, f"{self.where}.{key}")

    def items(
        self,
        key: str,
        parse: Callable[[Any, str], T],
        default: Any = _MISSING,
        *,
        max_items: int = 10_000,
        fast: Callable[[Any], T | None] | None = None,
    ) -> Any:
        """A list field. ``fast``, if given, is an accept-only shortcut: it returns the parsed
        item for plainly valid input and None otherwise, and ``parse`` then decides (and names
        the error), so results and errors are those of ``parse`` alone."""
        value = self.obj.pop(key, _MISSING)
        if value is _MISSING or value is None:
            return self._absent(key, value, default)
        if not isinstance(value, list):
            raise FormatError(f"{self.where}.{key}: expected a list")
        if len(value) > max_items:
            raise FormatError(f"{self.where}.{key}: more than {max_items} items")
        if fast is None:
            return tuple(parse(item, f"{self.where}.{key}[{i}]") for i, item in enumerate(value))
        out = []
        for i, item in enumerate(value):
            parsed = fast(item)
            out.append(parse(item, f"{self.where}.{key}[{i}]") if parsed is None else parsed)
        return tuple(out)

    def mapping(
        self,
        key: str,
        parse: Callable[[Any, str], T],
        default: Any = _MISSING,
        *,
        max_items: int = 100_000,
    ) -> Any:
        value = self.obj.pop(key, _MISSING)
        if value is _MISSING or value is None:
            return self._absent(key, value, default)
        if not isinstance(value, dict):
            raise FormatError(f"{self.where}.{key}: expected an object")
        if len(value) > max_items:
            raise FormatError(f"{self.where}.{key}: more than {max_items} entries")
        return {k: parse(v, f"{self.where}.{key}.{k}") for k, v in value.items()}

    def version(self, key: str, default: Any = _MISSING) -> Any:
        value = self.string(key, default, max_len=256)
        if value is default and default is not _MISSING:
            return value
        return parse_version(value, f"{self.where}.{key}")

    def time(self, key: str, default: Any = _MISSING) -> Any:
        value = self.string(key, default, max_len=32)
        if value is default and default is not _MISSING:
            return value
        return parse_time(value, f"{self.where}.{key}")

    def const(self, key: str, expected: str) -> None:
        value = self.string(key)
        if value != expected:
            raise FormatError(f"{self.where}.{key}: expected {expected!r}, got {value!r}")

    def extra(self) -> dict[str, Any]:
        return self.obj


def parse_version(value: Any, where: str = "version") -> str:
    """A semver string without build metadata (``1.2.3``, ``1.2.3-rc.1``)."""
    if not isinstance(value, str):
        raise FormatError(f"{where}: expected a version string")
    if _PLAIN_VERSION.match(value):  # plainly valid and canonical: what the checks below accept
        return value
    try:
        parsed = semver.Version.parse(value)
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{where}: {value!r} is not a semantic version") from exc
    if parsed.build is not None:
        raise FormatError(f"{where}: {value!r} carries build metadata")
    if str(parsed) != value:
        raise FormatError(f"{where}: {value!r} is not in canonical form")
    return value


def parse_time(value: Any, where: str = "time") -> _dt.datetime:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds) to an aware datetime."""
    match = _TIME_RE.match(value) if isinstance(value, str) else None
    if match is None:  # ASCII digits only: int() and strptime() also take other digits
        raise FormatError(f"{where}: expected YYYY-MM-DDTHH:MM:SSZ")
    try:
        year, month, day, hour, minute, second = map(int, match.groups())
        return _dt.datetime(year, month, day, hour, minute, second, tzinfo=_dt.UTC)
    except ValueError as exc:
        raise FormatError(f"{where}: {value!r} is not a valid time") from exc


def format_time(value: _dt.datetime) -> str:
    return value.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_safe_name(name: Any, where: str = "name") -> str:
    """An artifact name: one path component, safe on every platform we target."""
    if isinstance(name, str) and _PLAIN_NAME.match(name):
        return name
    check_safe_path(name, where)
    if "/" in name:
        raise UnsafePathError(f"{where}: {name!r} must be a plain file name")
    return str(name)


def check_safe_path(path: Any, where: str = "path") -> str:
    """A relative POSIX path that cannot escape its directory."""
    if isinstance(path, str) and len(path) <= 255 * 16 and _PLAIN_PATH.match(path):
        return path
    if not isinstance(path, str):
        raise FormatError(f"{where}: expected a string")
    if not path:
        raise UnsafePathError(f"{where}: empty name")
    if len(path.encode("utf-8", "surrogatepass")) > 255 * 16 or any(
        len(part.encode("utf-8", "surrogatepass")) > 255 for part in path.split("/")
    ):
        raise UnsafePathError(f"{where}: name component over 255 bytes")
    if "\x00" in path:
        raise UnsafePathError(f"{where}: NUL in name")
    if "\\" in path:
        raise UnsafePathError(f"{where}: backslash in name {path!r}")
    if path.startswith("/"):
        raise UnsafePathError(f"{where}: absolute name {path!r}")
    if _CONTROL.search(path):
        raise UnsafePathError(f"{where}: control character in name {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePathError(f"{where}: {path!r} has an empty, '.' or '..' component")
    if len(parts[0]) == 2 and parts[0][1] == ":":
        raise UnsafePathError(f"{where}: drive-qualified name {path!r}")
    return path


def _check_mode(mode: int, where: str) -> int:
    if mode & ~0o777:
        raise UnsafePathError(f"{where}: mode {oct(mode)} has setuid/setgid/sticky or type bits")
    return mode


def _hashes(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise FormatError(f"{where}: expected a non-empty object of hashes")
    for algorithm, digest in value.items():
        if algorithm not in HASH_ALGORITHMS:
            raise FormatError(f"{where}: unknown hash algorithm {algorithm!r}")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise FormatError(f"{where}.{algorithm}: expected 64 lowercase hex digits")
    return dict(value)


def _channel_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise FormatError(f"{where}: {value!r} is not a valid channel or role name")
    return value


def _drop_unset(extra: Mapping[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    """Known fields ``d`` without the unset (None) ones, plus every unknown field as parsed.

    Unknown fields are kept even when null, so canonical bytes round-trip.
    """
    return {**extra, **{k: v for k, v in d.items() if v is not None}}


# -- building blocks ----------------------------------------------------------------------


@frozen
class MetaFile:
    """Length and hashes of a file another document refers to."""

    length: int
    hashes: Mapping[str, str]
    extra: Mapping[str, Any] = field(factory=dict)

    @property
    def sha256(self) -> str:
        return self.hashes["sha256"]

    @classmethod
    def of(cls, data: bytes) -> MetaFile:
        return cls(len(data), {"sha256": hashlib.sha256(data).hexdigest()})

    @classmethod
    def from_dict(cls, obj: Any, where: str = "file") -> MetaFile:
        r = _Reader(obj, where)
        length = r.integer("length")
        hashes = r.obj_("hashes", _hashes)
        if "sha256" not in hashes:
            raise FormatError(f"{where}.hashes: sha256 is required")
        return cls(length, hashes, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "length": self.length, "hashes": dict(self.hashes)}

    def matches(self, data: bytes) -> bool:
        return len(data) == self.length and hashlib.sha256(data).hexdigest() == self.sha256


@frozen
class Role:
    keyids: tuple[str, ...]
    threshold: int
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "role") -> Role:
        r = _Reader(obj, where)
        keyids = r.items("keyids", _keyid, max_items=256)
        threshold = r.integer("threshold", minimum=1, maximum=256)
        if threshold > len(set(keyids)):
            raise FormatError(f"{where}: threshold {threshold} exceeds its distinct keys")
        return cls(keyids, threshold, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "keyids": list(self.keyids), "threshold": self.threshold}


def _keyid(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise FormatError(f"{where}: a key id is 64 lowercase hex digits")
    return value


def _public_key(value: Any, where: str) -> PublicKey:
    r = _Reader(value, where)
    r.const("keytype", "ed25519")
    r.const("scheme", "ed25519")
    key = PublicKey.from_hex(r.string("public", max_len=64))
    if r.extra():
        raise FormatError(f"{where}: unknown key fields {sorted(r.extra())}")
    return key


@frozen
class Command:
    """A command a node runs: a release's self-test or health check."""

    argv: tuple[str, ...]
    timeout: int = 60
    window: int | None = None  # health only: seconds the version must stay healthy
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "command") -> Command:
        r = _Reader(obj, where)
        argv = r.items("argv", _string, max_items=256)
        if not argv:
            raise FormatError(f"{where}.argv: empty")
        return cls(
            argv,
            r.integer("timeout", 60, minimum=1, maximum=86_400),
            r.integer("window", None, maximum=30 * 86_400),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra, {"argv": list(self.argv), "timeout": self.timeout, "window": self.window}
        )


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 65_536:
        raise FormatError(f"{where}: expected a string")
    return value


@frozen
class Member:
    """One entry of an archive marked to unpack: a file or a directory."""

    path: str
    mode: int
    type: str = "file"  # "file" | "dir"
    length: int | None = None
    hashes: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = field(factory=dict)

    @property
    def sha256(self) -> str | None:
        return None if self.hashes is None else self.hashes["sha256"]

    @classmethod
    def from_dict(cls, obj: Any, where: str = "member") -> Member:
        r = _Reader(obj, where)
        path = check_safe_path(r.string("path", max_len=4096), f"{where}.path")
        mode = _check_mode(r.integer("mode", maximum=0o7777), f"{where}.mode")
        kind = r.string("type", "file")
        if kind not in ("file", "dir"):
            raise UnsafePathError(f"{where}.type: {kind!r} (only files and directories)")
        length = r.integer("length", None)
        hashes = r.obj_("hashes", _hashes, None)
        if kind == "file" and (length is None or hashes is None or "sha256" not in hashes):
            raise FormatError(f"{where}: a file member needs length and sha256")
        if kind == "dir" and (length is not None or hashes is not None):
            raise FormatError(f"{where}: a directory has no length or hashes")
        return cls(path, mode, kind, length, hashes, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "path": self.path,
                "mode": self.mode,
                "type": self.type,
                "length": self.length,
                "hashes": None if self.hashes is None else dict(self.hashes),
            },
        )


@frozen
class Unpack:
    format: str  # "tar" | "zip"
    members: tuple[Member, ...]
    extra: Mapping[str, Any] = field(factory=dict)

    FORMATS: ClassVar[tuple[str, ...]] = ("tar", "tar.gz", "tar.xz", "tar.bz2", "zip")

    @classmethod
    def from_dict(cls, obj: Any, where: str = "unpack") -> Unpack:
        r = _Reader(obj, where)
        fmt = r.string("format", max_len=16)
        if fmt not in cls.FORMATS:
            raise FormatError(f"{where}.format: unknown archive format {fmt!r}")
        members = r.items("members", Member.from_dict, max_items=100_000)
        seen: set[str] = set()
        for m in members:
            if m.path in seen:
                raise UnsafePathError(f"{where}: member {m.path!r} listed twice")
            seen.add(m.path)
        return cls(fmt, members, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "format": self.format, "members": [m.to_dict() for m in self.members]}


@frozen
class Recipient:
    """The artifact key sealed (X25519 sealed box) to one node's key."""

    public: str  # the node's ed25519 public key, hex
    sealed_key: str  # hex
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "recipient") -> Recipient:
        r = _Reader(obj, where)
        public = PublicKey.from_hex(r.string("public", max_len=64)).hex
        sealed = r.string("sealed_key", max_len=512)
        if not re.fullmatch(r"[0-9a-f]+", sealed):
            raise FormatError(f"{where}.sealed_key: expected hex")
        return cls(public, sealed, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "public": self.public, "sealed_key": self.sealed_key}


@frozen
class Encryption:
    """How an artifact's ciphertext blob is made; the artifact's own hashes are the plaintext's."""

    scheme: str
    ciphertext: MetaFile
    recipients: tuple[Recipient, ...]
    chunk_size: int = 65536
    extra: Mapping[str, Any] = field(factory=dict)

    SCHEMES: ClassVar[tuple[str, ...]] = ("secretstream-xchacha20poly1305+sealedbox-x25519",)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "encryption") -> Encryption:
        r = _Reader(obj, where)
        scheme = r.string("scheme", max_len=128)
        if scheme not in cls.SCHEMES:
            raise FormatError(f"{where}.scheme: unknown scheme {scheme!r}")
        ciphertext = r.obj_("ciphertext", MetaFile.from_dict)
        recipients = r.items("recipients", Recipient.from_dict, max_items=100_000)
        if not recipients:
            raise FormatError(f"{where}.recipients: empty")
        chunk = r.integer("chunk_size", 65536, minimum=1024, maximum=16 * 1024 * 1024)
        return cls(scheme, ciphertext, recipients, chunk, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "scheme": self.scheme,
            "ciphertext": self.ciphertext.to_dict(),
            "recipients": [x.to_dict() for x in self.recipients],
            "chunk_size": self.chunk_size,
        }


@frozen
class Artifact:
    """One file of a release, content-addressed by sha256 (``blobs/<sha256>``)."""

    name: str
    length: int
    hashes: Mapping[str, str]
    mode: int = 0o644
    platform: str = "any"
    arch: str = "any"
    unpack: Unpack | None = None
    locators: tuple[Mapping[str, str], ...] = ()
    encryption: Encryption | None = None
    extra: Mapping[str, Any] = field(factory=dict)

    @property
    def sha256(self) -> str:
        return self.hashes["sha256"]

    @property
    def blob(self) -> MetaFile:
        """What is fetched: the ciphertext when encrypted, else the artifact itself."""
        if self.encryption is not None:
            return self.encryption.ciphertext
        return MetaFile(self.length, self.hashes)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "artifact") -> Artifact:
        plain = _plain_artifact(obj)
        if plain is not None:
            return plain
        r = _Reader(obj, where)
        name = check_safe_name(r.string("name", max_len=1024), f"{where}.name")
        length = r.integer("length")
        hashes = r.obj_("hashes", _hashes)
        if "sha256" not in hashes:
            raise FormatError(f"{where}.hashes: sha256 is required")
        mode = _check_mode(r.integer("mode", 0o644, maximum=0o7777), f"{where}.mode")
        platform = _channel_name(r.string("platform", "any", max_len=64), f"{where}.platform")
        arch = _channel_name(r.string("arch", "any", max_len=64), f"{where}.arch")
        unpack = r.obj_("unpack", Unpack.from_dict, None)
        locators = r.items("locators", _locator, (), max_items=64)
        encryption = r.obj_("encryption", Encryption.from_dict, None)
        return cls(
            name, length, hashes, mode, platform, arch, unpack, locators, encryption, r.extra()
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "name": self.name,
                "length": self.length,
                "hashes": dict(self.hashes),
                "mode": self.mode,
                "platform": self.platform,
                "arch": self.arch,
                "unpack": None if self.unpack is None else self.unpack.to_dict(),
                "locators": [dict(x) for x in self.locators] if self.locators else None,
                "encryption": None if self.encryption is None else self.encryption.to_dict(),
            },
        )


_PLAIN_ARTIFACT_FIELDS = frozenset(
    {"name", "length", "hashes", "mode", "platform", "arch", "locators"}
)


def _plain_locator(value: Any) -> dict[str, str] | None:
    """:func:`_locator` for plainly valid input; None means "ask :func:`_locator`"."""
    if type(value) is not dict or len(value) != 2:
        return None
    kind = value.get("kind")
    loc = value.get("value")
    if (
        type(kind) is not str
        or type(loc) is not str
        or len(loc) > 4096
        or _NAME_RE.match(kind) is None  # at most 64 characters; 32 is the field's cap
        or len(kind) > 32
    ):
        return None
    return {"kind": kind, "value": loc}


def _plain_artifact(obj: Any) -> Artifact | None:
    """:meth:`Artifact.from_dict` for the common, plainly valid shape, without the generic
    reader: the same checks, accept-only. Anything else (unknown, null or optional nested
    fields, any doubt) returns None and the full parser decides, with its exact errors."""
    if type(obj) is not dict or not obj.keys() <= _PLAIN_ARTIFACT_FIELDS:
        return None
    name = obj.get("name")
    length = obj.get("length")
    hashes = obj.get("hashes")
    mode = obj.get("mode", 0o644)
    platform = obj.get("platform", "any")
    arch = obj.get("arch", "any")
    # ``type(x) is int`` refuses booleans; names in _PLAIN_NAME are safe and <= 255 chars.
    if (
        type(name) is not str
        or _PLAIN_NAME.match(name) is None
        or type(length) is not int
        or not 0 <= length <= MAX_INT
        or type(mode) is not int
        or not 0 <= mode <= 0o777
        or type(platform) is not str
        or _NAME_RE.match(platform) is None
        or type(arch) is not str
        or _NAME_RE.match(arch) is None
        or type(hashes) is not dict
        or len(hashes) != 1
    ):
        return None
    digest = hashes.get("sha256")
    if type(digest) is not str or _HEX64.match(digest) is None:
        return None
    locators: tuple[dict[str, str], ...] = ()
    if "locators" in obj:
        items = obj["locators"]
        if type(items) is not list or len(items) > 64:
            return None
        parsed = [_plain_locator(item) for item in items]
        if None in parsed:
            return None
        locators = tuple(parsed)  # type: ignore[arg-type]
    return Artifact(
        name, length, {"sha256": digest}, mode, platform, arch, None, locators, None, {}
    )


def _locator(value: Any, where: str) -> dict[str, str]:
    r = _Reader(value, where)
    kind = _channel_name(r.string("kind", max_len=32), f"{where}.kind")
    loc = r.string("value", max_len=4096)
    if r.extra():
        raise FormatError(f"{where}: unknown locator fields")
    return {"kind": kind, "value": loc}


@frozen
class DeltaRecord:
    """A patch from an earlier version's artifact (or archive member) to this one's."""

    artifact: str
    from_version: str
    source: MetaFile
    patch: MetaFile
    output_length: int
    codec: str
    member: str | None = None
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "delta") -> DeltaRecord:
        r = _Reader(obj, where)
        artifact = check_safe_name(r.string("artifact", max_len=1024), f"{where}.artifact")
        from_version = r.version("from_version")
        source = r.obj_("source", MetaFile.from_dict)
        patch = r.obj_("patch", MetaFile.from_dict)
        output_length = r.integer("output_length")
        codec = _channel_name(r.string("codec", max_len=64), f"{where}.codec")
        member = r.string("member", None, max_len=4096)
        if member is not None:
            check_safe_path(member, f"{where}.member")
        return cls(artifact, from_version, source, patch, output_length, codec, member, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "artifact": self.artifact,
                "from_version": self.from_version,
                "source": self.source.to_dict(),
                "patch": self.patch.to_dict(),
                "output_length": self.output_length,
                "codec": self.codec,
                "member": self.member,
            },
        )


@frozen
class Migration:
    """An ordered schema migration of the node's SQLite database."""

    id: str
    from_schema: int
    to_schema: int
    sql: str
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "migration") -> Migration:
        r = _Reader(obj, where)
        mid = r.string("id", max_len=128)
        from_schema = r.integer("from_schema")
        to_schema = r.integer("to_schema")
        if to_schema <= from_schema:
            raise FormatError(f"{where}: to_schema must be above from_schema")
        return cls(mid, from_schema, to_schema, r.string("sql", max_len=1024 * 1024), r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "from_schema": self.from_schema,
            "to_schema": self.to_schema,
            "sql": self.sql,
        }


@frozen
class SchemaInfo:
    from_version: int
    to_version: int
    backup_required: bool = True
    estimated_seconds: int = 0
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "schema") -> SchemaInfo:
        r = _Reader(obj, where)
        return cls(
            r.integer("from_version"),
            r.integer("to_version"),
            r.boolean("backup_required", True),
            r.integer("estimated_seconds", 0),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "backup_required": self.backup_required,
            "estimated_seconds": self.estimated_seconds,
        }


CONFIG_SCOPES = ("global", "regional", "node-type")


@frozen
class ConfigChange:
    """A network-wide configuration change, scoped to all nodes, a region or a node type."""

    key: str
    value: Any
    scope: str = "global"
    selector: str | None = None  # region or node type for scoped changes
    effective: _dt.datetime | None = None
    rollback_window: int = 0  # seconds
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "config_change") -> ConfigChange:
        r = _Reader(obj, where)
        key = r.string("key", max_len=256)
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", key):
            raise FormatError(f"{where}.key: {key!r} is not a dotted name")
        value = r.value("value")
        scope = r.string("scope", "global", max_len=16)
        if scope not in CONFIG_SCOPES:
            raise FormatError(f"{where}.scope: {scope!r} not one of {CONFIG_SCOPES}")
        selector = r.string("selector", None, max_len=128)
        if (scope == "global") != (selector is None):
            raise FormatError(f"{where}: a selector is required for scoped changes only")
        effective = r.time("effective", None)
        window = r.integer("rollback_window", 0, maximum=365 * 86_400)
        return cls(key, value, scope, selector, effective, window, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "key": self.key,
                "value": self.value,
                "scope": self.scope,
                "selector": self.selector,
                "effective": None if self.effective is None else format_time(self.effective),
                "rollback_window": self.rollback_window,
            },
        )

    def applies_to(self, *, region: str | None, node_type: str | None) -> bool:
        if self.scope == "global":
            return True
        if self.scope == "regional":
            return region == self.selector
        return node_type == self.selector


@frozen
class ProtocolInfo:
    version: int
    breaking: bool = False
    migration_required: bool = False
    consensus_threshold_bp: int = 9000
    activation_height: int | None = None
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "protocol") -> ProtocolInfo:
        r = _Reader(obj, where)
        return cls(
            r.integer("version"),
            r.boolean("breaking", False),
            r.boolean("migration_required", False),
            r.integer("consensus_threshold_bp", 9000, maximum=10_000),
            r.integer("activation_height", None),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "version": self.version,
                "breaking": self.breaking,
                "migration_required": self.migration_required,
                "consensus_threshold_bp": self.consensus_threshold_bp,
                "activation_height": self.activation_height,
            },
        )


@frozen
class Compatibility:
    """Which installed versions may update to this one, and which protocols it speaks."""

    min_from_version: str | None = None
    protocol_versions: tuple[int, ...] = ()
    deprecated: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "compatibility") -> Compatibility:
        r = _Reader(obj, where)
        return cls(
            r.version("min_from_version", None),
            r.items("protocol_versions", _nonneg_int, (), max_items=64),
            r.items("deprecated", _string, (), max_items=1024),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "min_from_version": self.min_from_version,
                "protocol_versions": list(self.protocol_versions) or None,
                "deprecated": list(self.deprecated) or None,
            },
        )


def _nonneg_int(value: Any, where: str) -> int:
    if type(value) is not int:
        raise FormatError(f"{where}: expected an integer")
    return value


# -- documents --------------------------------------------------------------------------------


@frozen
class Root:
    """Keys and thresholds of every role. Versions go up by exactly one."""

    version: int
    expires: _dt.datetime
    keys: Mapping[str, PublicKey]
    roles: Mapping[str, Role]
    network_id: str = "blackhole"
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "root"
    REQUIRED_ROLES: ClassVar[tuple[str, ...]] = ("root", "release", "index")
    KNOWN_ROLES: ClassVar[tuple[str, ...]] = ("root", "release", "index", "governance")

    @classmethod
    def from_dict(cls, obj: Any, where: str = "root") -> Root:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        version = r.integer("version", minimum=1)
        expires = r.time("expires")
        keys = r.mapping("keys", _public_key, max_items=1024)
        for kid, key in keys.items():
            if key.keyid != kid:
                raise FormatError(f"{where}.keys: key id {kid[:16]}... is not sha256 of its key")
        roles = r.mapping("roles", Role.from_dict, max_items=16)
        for name in cls.REQUIRED_ROLES:
            if name not in roles:
                raise FormatError(f"{where}.roles: the {name!r} role is required")
        for name, role in roles.items():
            if name not in cls.KNOWN_ROLES:
                raise FormatError(f"{where}.roles: unknown role {name!r}")
            for kid in role.keyids:
                if kid not in keys:
                    raise FormatError(f"{where}.roles.{name}: key {kid[:16]}... not in keys")
        network_id = _channel_name(
            r.string("network_id", "blackhole", max_len=64), f"{where}.network_id"
        )
        return cls(version, expires, keys, roles, network_id, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "expires": format_time(self.expires),
            "keys": {k: v.to_dict() for k, v in self.keys.items()},
            "roles": {k: v.to_dict() for k, v in self.roles.items()},
            "network_id": self.network_id,
        }

    def role_keys(self, role: str) -> tuple[Role, dict[str, PublicKey]]:
        if role not in self.roles:
            raise FormatError(f"root version {self.version} has no {role!r} role")
        spec = self.roles[role]
        return spec, {k: self.keys[k] for k in spec.keyids}

    def verify_role(self, envelope: Envelope, role: str) -> frozenset[str]:
        """Verify ``envelope`` meets ``role``'s threshold under this root."""
        spec, keys = self.role_keys(role)
        return verify_threshold(
            envelope.signed_bytes,
            envelope.signatures,
            keys,
            spec.keyids,
            spec.threshold,
            what=f"{envelope.type} (role {role}, root v{self.version})",
        )


@frozen
class IndexChannel:
    releases: Mapping[str, MetaFile]
    withdrawn: Mapping[str, str] = field(factory=dict)  # version -> reason
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "channel") -> IndexChannel:
        r = _Reader(obj, where)
        releases = r.mapping("releases", MetaFile.from_dict)
        for version in releases:
            parse_version(version, f"{where}.releases")
        withdrawn = r.mapping("withdrawn", _withdrawal, {})
        for version in withdrawn:
            parse_version(version, f"{where}.withdrawn")
            if version in releases:
                raise FormatError(f"{where}: {version} is both listed and withdrawn")
        return cls(releases, withdrawn, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "releases": {k: v.to_dict() for k, v in self.releases.items()},
            "withdrawn": {k: {"reason": v} for k, v in self.withdrawn.items()},
        }


def _withdrawal(value: Any, where: str) -> str:
    r = _Reader(value, where)
    reason: str = r.string("reason", "", max_len=1024)
    return reason


@frozen
class Index:
    """The online-signed catalogue of releases per channel. Short expiry; version increases."""

    version: int
    expires: _dt.datetime
    channels: Mapping[str, IndexChannel]
    rollouts: Mapping[str, MetaFile] = field(factory=dict)  # release version -> rollout plan doc
    halts: Mapping[str, MetaFile] = field(factory=dict)  # release version -> halt doc
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "index"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "index") -> Index:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        version = r.integer("version", minimum=1)
        expires = r.time("expires")
        channels = r.mapping("channels", IndexChannel.from_dict, max_items=64)
        for name in channels:
            _channel_name(name, f"{where}.channels")
        seen: dict[str, str] = {}
        for name, channel in channels.items():
            for v in (*channel.releases, *channel.withdrawn):
                if v in seen:
                    raise FormatError(f"{where}: {v} appears in channels {seen[v]} and {name}")
                seen[v] = name
        rollouts = r.mapping("rollouts", MetaFile.from_dict, {})
        halts = r.mapping("halts", MetaFile.from_dict, {})
        for v in (*rollouts, *halts):
            parse_version(v, f"{where}.rollouts/halts")
        return cls(version, expires, channels, rollouts, halts, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "expires": format_time(self.expires),
            "channels": {k: v.to_dict() for k, v in self.channels.items()},
            "rollouts": {k: v.to_dict() for k, v in self.rollouts.items()},
            "halts": {k: v.to_dict() for k, v in self.halts.items()},
        }

    def releases(self, channel: str) -> Mapping[str, MetaFile]:
        ch = self.channels.get(channel)
        return {} if ch is None else ch.releases

    def all_releases(self) -> dict[str, MetaFile]:
        out: dict[str, MetaFile] = {}
        for ch in self.channels.values():
            out.update(ch.releases)
        return out

    def all_withdrawn(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ch in self.channels.values():
            out.update(ch.withdrawn)
        return out


@frozen
class ReleaseManifest:
    """A release: what to install and how. Signed offline by k-of-n release keys; immutable."""

    version: str
    type: str
    channel: str
    artifacts: tuple[Artifact, ...]
    released: _dt.datetime
    critical: bool = False
    priority: int = 0
    deltas: tuple[DeltaRecord, ...] = ()
    migrations: tuple[Migration, ...] = ()
    schema: SchemaInfo | None = None
    config_changes: tuple[ConfigChange, ...] = ()
    protocol: ProtocolInfo | None = None
    compatibility: Compatibility | None = None
    self_test: Command | None = None
    health: Command | None = None
    notes: str = ""
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "release"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "release") -> ReleaseManifest:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        version = r.version("version")
        utype = r.string("type", max_len=32)
        if utype not in UPDATE_TYPES:
            raise FormatError(f"{where}.type: {utype!r} not one of {UPDATE_TYPES}")
        channel = _channel_name(r.string("channel", max_len=64), f"{where}.channel")
        artifacts = r.items("artifacts", Artifact.from_dict, max_items=4096, fast=_plain_artifact)
        keys = [(a.name, a.platform, a.arch) for a in artifacts]
        if len(set(keys)) != len(keys):
            raise FormatError(f"{where}.artifacts: the same name/platform/arch twice")
        released = r.time("released")
        critical = r.boolean("critical", False)
        priority = r.integer("priority", 0, maximum=1000)
        deltas = r.items("deltas", DeltaRecord.from_dict, (), max_items=100_000)
        names = {a.name for a in artifacts}
        for d in deltas:
            if d.artifact not in names:
                raise FormatError(f"{where}.deltas: no artifact named {d.artifact!r}")
        migrations = r.items("migrations", Migration.from_dict, (), max_items=10_000)
        schema = r.obj_("schema", SchemaInfo.from_dict, None)
        config_changes = r.items("config_changes", ConfigChange.from_dict, (), max_items=10_000)
        protocol = r.obj_("protocol", ProtocolInfo.from_dict, None)
        compatibility = r.obj_("compatibility", Compatibility.from_dict, None)
        self_test = r.obj_("self_test", Command.from_dict, None)
        health = r.obj_("health", Command.from_dict, None)
        notes = r.string("notes", "", max_len=65_536)
        return cls(
            version,
            utype,
            channel,
            artifacts,
            released,
            critical,
            priority,
            deltas,
            migrations,
            schema,
            config_changes,
            protocol,
            compatibility,
            self_test,
            health,
            notes,
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        def opt(x: Any) -> Any:
            return None if x is None else x.to_dict()

        return _drop_unset(
            self.extra,
            {
                "_type": self.TYPE,
                "spec_version": SPEC_VERSION,
                "version": self.version,
                "type": self.type,
                "channel": self.channel,
                "artifacts": [a.to_dict() for a in self.artifacts],
                "released": format_time(self.released),
                "critical": self.critical,
                "priority": self.priority,
                "deltas": [d.to_dict() for d in self.deltas] if self.deltas else None,
                "migrations": [m.to_dict() for m in self.migrations] if self.migrations else None,
                "schema": opt(self.schema),
                "config_changes": [c.to_dict() for c in self.config_changes] or None,
                "protocol": opt(self.protocol),
                "compatibility": opt(self.compatibility),
                "self_test": opt(self.self_test),
                "health": opt(self.health),
                "notes": self.notes or None,
            },
        )

    def artifact(self, name: str) -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        raise KeyError(name)

    def artifacts_for(self, platform: str, arch: str) -> tuple[Artifact, ...]:
        """The artifacts a node of this platform/arch installs (``any`` matches all)."""
        return tuple(
            a for a in self.artifacts if a.platform in ("any", platform) and a.arch in ("any", arch)
        )


# -- governance and node documents (data shapes; used by consensus and rollout) -----------------


@frozen
class RolloutPhase:
    name: str
    percentage_bp: int
    duration: int  # seconds
    success_threshold_bp: int = 9500
    selector: Mapping[str, str] = field(factory=dict)  # e.g. {"region": "eu"}
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "phase") -> RolloutPhase:
        r = _Reader(obj, where)
        return cls(
            r.string("name", max_len=64),
            r.integer("percentage_bp", maximum=10_000),
            r.integer("duration", maximum=365 * 86_400),
            r.integer("success_threshold_bp", 9500, maximum=10_000),
            r.mapping("selector", _string, {}, max_items=16),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "name": self.name,
            "percentage_bp": self.percentage_bp,
            "duration": self.duration,
            "success_threshold_bp": self.success_threshold_bp,
            "selector": dict(self.selector),
        }


@frozen
class RolloutPlan:
    release: str
    version: int
    expires: _dt.datetime
    start: _dt.datetime
    phases: tuple[RolloutPhase, ...]
    salt: str = ""
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "rollout"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "rollout") -> RolloutPlan:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        release = r.version("release")
        version = r.integer("version", minimum=1)
        expires = r.time("expires")
        start = r.time("start")
        phases = r.items("phases", RolloutPhase.from_dict, max_items=64)
        last = 0
        for p in phases:
            if p.percentage_bp < last:
                raise FormatError(f"{where}.phases: percentages must not decrease")
            last = p.percentage_bp
        return cls(
            release, version, expires, start, phases, r.string("salt", "", max_len=128), r.extra()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "release": self.release,
            "version": self.version,
            "expires": format_time(self.expires),
            "start": format_time(self.start),
            "phases": [p.to_dict() for p in self.phases],
            "salt": self.salt,
        }


@frozen
class HaltDoc:
    release: str
    reason: str
    version: int
    expires: _dt.datetime
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "halt"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "halt") -> HaltDoc:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        return cls(
            r.version("release"),
            r.string("reason", max_len=1024),
            r.integer("version", minimum=1),
            r.time("expires"),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "release": self.release,
            "reason": self.reason,
            "version": self.version,
            "expires": format_time(self.expires),
        }


@frozen
class Proposal:
    """A protocol activation proposal (BIP9-style signalling)."""

    id: str
    release: str
    protocol_version: int
    threshold_bp: int
    start: _dt.datetime
    timeout: _dt.datetime
    expires: _dt.datetime
    activation_delay: int = 0  # seconds after lock-in
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "proposal"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "proposal") -> Proposal:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        return cls(
            r.string("id", max_len=128),
            r.version("release"),
            r.integer("protocol_version"),
            r.integer("threshold_bp", maximum=10_000),
            r.time("start"),
            r.time("timeout"),
            r.time("expires"),
            r.integer("activation_delay", 0),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "id": self.id,
            "release": self.release,
            "protocol_version": self.protocol_version,
            "threshold_bp": self.threshold_bp,
            "start": format_time(self.start),
            "timeout": format_time(self.timeout),
            "expires": format_time(self.expires),
            "activation_delay": self.activation_delay,
        }


@frozen
class _NodeDoc:
    node_id: str  # hex ed25519 public key of the node
    network_id: str
    seq: int
    expires: _dt.datetime


def _node_fields(r: _Reader) -> tuple[str, str, int, _dt.datetime]:
    node_id = PublicKey.from_hex(r.string("node_id", max_len=64)).hex
    return (
        node_id,
        _channel_name(r.string("network_id", max_len=64), "network_id"),
        r.integer("seq"),
        r.time("expires"),
    )


@frozen
class Vote:
    node_id: str
    network_id: str
    seq: int
    expires: _dt.datetime
    proposal: str
    release_digest: str  # sha256 of the release manifest voted for
    support: bool
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "vote"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "vote") -> Vote:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        node_id, network_id, seq, expires = _node_fields(r)
        proposal = r.string("proposal", max_len=128)
        digest = _keyid(r.string("release_digest", max_len=64), f"{where}.release_digest")
        return cls(
            node_id, network_id, seq, expires, proposal, digest, r.boolean("support"), r.extra()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "node_id": self.node_id,
            "network_id": self.network_id,
            "seq": self.seq,
            "expires": format_time(self.expires),
            "proposal": self.proposal,
            "release_digest": self.release_digest,
            "support": self.support,
        }


@frozen
class HealthReport:
    node_id: str
    network_id: str
    seq: int
    expires: _dt.datetime
    release: str
    release_digest: str
    healthy: bool
    detail: Mapping[str, Any] = field(factory=dict)
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "health"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "health") -> HealthReport:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        node_id, network_id, seq, expires = _node_fields(r)
        release = r.version("release")
        digest = _keyid(r.string("release_digest", max_len=64), f"{where}.release_digest")
        healthy = r.boolean("healthy")
        detail = r.obj_("detail", lambda v, w: _Reader(v, w).extra(), {})
        return cls(node_id, network_id, seq, expires, release, digest, healthy, detail, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "node_id": self.node_id,
            "network_id": self.network_id,
            "seq": self.seq,
            "expires": format_time(self.expires),
            "release": self.release,
            "release_digest": self.release_digest,
            "healthy": self.healthy,
            "detail": dict(self.detail),
        }


@frozen
class NodeStatusDoc:
    node_id: str
    network_id: str
    seq: int
    expires: _dt.datetime
    current_version: str | None
    state: str
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "status"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "status") -> NodeStatusDoc:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        node_id, network_id, seq, expires = _node_fields(r)
        current = r.version("current_version", None)
        return cls(
            node_id, network_id, seq, expires, current, r.string("state", max_len=64), r.extra()
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "_type": self.TYPE,
                "node_id": self.node_id,
                "network_id": self.network_id,
                "seq": self.seq,
                "expires": format_time(self.expires),
                "current_version": self.current_version,
                "state": self.state,
            },
        )


DOCUMENT_TYPES: Mapping[str, Any] = {
    cls.TYPE: cls
    for cls in (
        Root,
        Index,
        ReleaseManifest,
        RolloutPlan,
        HaltDoc,
        Proposal,
        Vote,
        HealthReport,
        NodeStatusDoc,
    )
}

D = TypeVar("D")


# -- the signed envelope ------------------------------------------------------------------------


@frozen
class Envelope:
    """A parsed signed document: the raw ``signed`` object, its canonical bytes, signatures.

    Signatures are verified over :attr:`signed_bytes`, the canonical re-encoding of the strictly
    parsed ``signed`` object, so unknown fields are covered too.
    """

    signed: Mapping[str, Any]
    signatures: tuple[Signature, ...]
    signed_bytes: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    MAX_SIGNATURES: ClassVar[int] = 256

    @property
    def type(self) -> str:
        value = self.signed.get("_type")
        return value if isinstance(value, str) else "?"

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_type: str | None = None) -> Envelope:
        cap = MAX_SIZES.get(expected_type or "", max(MAX_SIZES.values()))
        fast = None
        if type(data) is bytes and len(data) <= cap:  # the cap, before anything is parsed
            fast = _canonical_envelope(data)
        if fast is None:
            obj, signed_bytes = strict_loads(data, max_size=cap), None
        else:
            obj, signed_bytes = fast
        r = _Reader(obj, "document")
        signed = r.obj_("signed", lambda v, w: _Reader(v, w).extra())
        sigs = r.items(
            "signatures", _signature, max_items=cls.MAX_SIGNATURES, fast=_plain_signature
        )
        if r.extra():
            raise FormatError(f"document: unknown top-level fields {sorted(r.extra())}")
        if expected_type is not None and signed.get("_type") != expected_type:
            raise FormatError(f"expected a {expected_type} document, got {signed.get('_type')!r}")
        if signed_bytes is None:
            signed_bytes = canonical_bytes(signed)
        return cls(signed, sigs, signed_bytes, bytes(data))

    def parse(self, model: Callable[[Any], D]) -> D:
        return model(self.signed)

    @classmethod
    def sign(cls, signed: Mapping[str, Any], keys: Sequence[PrivateKey]) -> Envelope:
        body = canonical_bytes(signed)
        sigs = tuple(k.sign(body) for k in keys)
        return cls.of(signed, sigs)

    @classmethod
    def of(cls, signed: Mapping[str, Any], signatures: Sequence[Signature]) -> Envelope:
        body = canonical_bytes(signed)
        raw = canonical_bytes({"signed": signed, "signatures": [s.to_dict() for s in signatures]})
        return cls(dict(signed), tuple(signatures), body, raw)

    def add_signature(self, key: PrivateKey) -> Envelope:
        """A copy with ``key``'s signature added (a no-op if that key already signed)."""
        if any(s.keyid == key.keyid for s in self.signatures):
            return self
        return Envelope.of(self.signed, (*self.signatures, key.sign(self.signed_bytes)))

    def keyids(self) -> set[str]:
        return {s.keyid for s in self.signatures}


_SIG_HEX = re.compile(r"[0-9a-f]{128}\Z")


def _plain_signature(value: Any) -> Signature | None:
    """:func:`_signature` for plainly valid input; None means "ask :func:`_signature`"."""
    if type(value) is not dict or len(value) != 2:
        return None
    kid = value.get("keyid")
    sig = value.get("sig")
    if (
        type(kid) is not str
        or type(sig) is not str
        or _HEX64.match(kid) is None
        or _SIG_HEX.match(sig) is None
    ):
        return None
    return Signature(kid, sig)


def _signature(value: Any, where: str) -> Signature:
    r = _Reader(value, where)
    kid = _keyid(r.string("keyid", max_len=64), f"{where}.keyid")
    sig = r.string("sig", max_len=128)
    if not _SIG_HEX.match(sig):
        raise FormatError(f"{where}.sig: expected 128 lowercase hex digits")
    if r.extra():
        raise FormatError(f"{where}: unknown signature fields")
    return Signature(kid, sig)
