"""Field readers: how every document reads, checks and writes its fields.

:class:`_Reader` pops typed fields off a parsed object (what is left is the unknown-field
``extra``, kept so a newer writer's documents still verify and round-trip); optional fields are
omitted when unset and an explicit ``null`` is refused. The shared value rules live here too:
versions (semver without build metadata), times (``YYYY-MM-DDTHH:MM:SSZ``), safe names and
paths, file modes, hashes (sha256 only), channel/role names, key ids, and :class:`MetaFile`,
the (length, hashes) of a file one document lists for another.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import semver
from attrs import field, frozen

from .._fsutil import sha256_hex
from ..errors import FormatError, UnsafePathError
from .canonical import MAX_INT

__all__ = [
    "HASH_ALGORITHMS",
    "SPEC_VERSION",
    "MetaFile",
    "check_safe_name",
    "check_safe_path",
    "format_time",
    "parse_time",
    "parse_version",
]

#: Supported hash algorithms; any other is refused.
HASH_ALGORITHMS = frozenset({"sha256"})
SPEC_VERSION = "1"

_T = TypeVar("_T")
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

    def obj_(self, key: str, parse: Callable[[Any, str], _T], default: Any = _MISSING) -> Any:
        value = self.obj.pop(key, _MISSING)
        if value is _MISSING or value is None:
            return self._absent(key, value, default)
        return parse(value, f"{self.where}.{key}")

    def items(
        self,
        key: str,
        parse: Callable[[Any, str], _T],
        default: Any = _MISSING,
        *,
        max_items: int = 10_000,
        fast: Callable[[Any], _T | None] | None = None,
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
        parse: Callable[[Any, str], _T],
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


def _keyid(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise FormatError(f"{where}: a key id is 64 lowercase hex digits")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 65_536:
        raise FormatError(f"{where}: expected a string")
    return value


def _nonneg_int(value: Any, where: str) -> int:
    if type(value) is not int:
        raise FormatError(f"{where}: expected an integer")
    return value


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
        return cls(len(data), {"sha256": sha256_hex(data)})

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
        return len(data) == self.length and sha256_hex(data) == self.sha256
