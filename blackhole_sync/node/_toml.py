"""TOML mechanics for the node's configuration: a strict table reader, writing, and editing
a document in place (comments kept). The configuration's schema is in config.py.

Reading uses :mod:`tomllib`; :mod:`tomlkit` (slow to import) is loaded only to write or edit."""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import ConfigurationError

__all__ = ["Table", "describe", "dumps", "edit", "merge", "parse", "value_text"]

T = TypeVar("T")


def parse(text: str, where: str) -> dict[str, Any]:
    """``tomllib`` parse; a syntax error is a :class:`ConfigurationError` naming ``where``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{where}: not valid TOML: {exc}") from exc


def dumps(data: Mapping[str, Any]) -> str:
    """A TOML document of scalars, arrays and (nested) tables."""
    import tomlkit

    return tomlkit.dumps(data)


def value_text(value: Any) -> str:
    """One TOML value as text (a scalar or an array of scalars)."""
    import tomlkit

    return str(tomlkit.item(value).as_string())


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def edit(text: str, data: Mapping[str, Any]) -> str | None:
    """``text`` edited in place to hold ``data`` (see :func:`merge`); None when ``text`` is
    not a TOML document tomlkit can edit."""
    import tomlkit

    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError:
        return None
    merge(document, data)
    return tomlkit.dumps(document)


def merge(table: Any, data: Mapping[str, Any]) -> None:
    """Make the tomlkit ``table`` hold ``data``: changed values replaced where they are (their
    comments stay), new keys and tables added, keys ``data`` lacks removed."""
    import tomlkit
    from tomlkit.items import Table as _TomlTable

    for key, value in data.items():
        if isinstance(value, Mapping):
            if not isinstance(table.get(key), _TomlTable):
                table[key] = tomlkit.table()
            merge(table[key], value)
        elif key not in table or _plain(table[key]) != value:
            table[key] = value
    for key in [k for k in table if k not in data]:
        del table[key]


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else "a string"
    return repr(value) if isinstance(value, int | float) else type(value).__name__


class Table:
    """Reads keys from one TOML table, remembering which were read (for :meth:`finish`)."""

    def __init__(self, data: Any, where: str, path: str) -> None:
        self.where = where
        self.path = path
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{where}: {path or 'document'}: expected a table")
        self.data: Mapping[str, Any] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> None:
        raise ConfigurationError(f"{self.where}: {self.key(name)}: {message}")

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def remaining(self) -> list[str]:
        return [k for k in self.data if k not in self.seen]

    def finish(self) -> None:
        extra = self.remaining()
        if extra:
            raise ConfigurationError(f"{self.where}: unknown key {self.key(extra[0])!r}")

    def _wrong(self, name: str, expected: str, value: Any) -> None:
        self.fail(name, f"expected {expected}, got {describe(value)}")

    def string(self, name: str, default: str, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self._wrong(name, "a string", value)
        if pattern is not None and not pattern.match(value):
            self.fail(name, f"{value!r} is not a valid name")
        return str(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._wrong(name, "true or false", value)
        return bool(value)

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**63 - 1
    ) -> int:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(name, f"an integer >= {minimum}", value)
        if not minimum <= value <= maximum:
            bound = f"from {minimum} to {maximum}" if maximum < 2**63 - 1 else f">= {minimum}"
            self.fail(name, f"expected an integer {bound}, got {value}")
        return int(value)

    def number(self, name: str, default: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong(name, "a number of seconds", value)
        if not math.isfinite(value) or value <= 0:
            self.fail(name, f"expected a positive number of seconds, got {value}")
        return float(value)

    def seconds(self, name: str, default: int) -> _dt.timedelta:
        return _dt.timedelta(seconds=self.integer(name, default))

    def strings(
        self,
        name: str,
        default: Sequence[str] = (),
        *,
        required: bool = False,
        non_empty_items: bool = False,
    ) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            if required:
                self.fail(name, "missing (required)")
            return tuple(default)
        if not isinstance(value, list):
            self._wrong(name, "an array of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(name, f"item {i}: expected a string, got {describe(item)}")
            if non_empty_items and not item:
                self.fail(name, f"item {i}: empty string")
        if len(set(value)) != len(value):
            self.fail(name, "the same value appears twice")
        return tuple(value)

    def integers(
        self, name: str, default: Sequence[int] = (), *, minimum: int = 0, maximum: int = 2**31
    ) -> tuple[int, ...]:
        """An array of distinct integers from ``minimum`` to ``maximum``."""
        value = self._get(name)
        if value is None:
            return tuple(default)
        if not isinstance(value, list):
            self._wrong(name, "an array of integers", value)
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int):
                self.fail(name, f"item {i}: expected an integer, got {describe(item)}")
            if not minimum <= item <= maximum:
                self.fail(name, f"item {i}: expected {minimum} to {maximum}, got {item}")
        if len(set(value)) != len(value):
            self.fail(name, "the same value appears twice")
        return tuple(value)

    def table(self, name: str) -> Table:
        value = self._get(name)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self._wrong(name, "a table", value)
        return Table(value, self.where, self.key(name))

    def raw_table(self, name: str) -> dict[str, Any]:
        """The table ``name`` as parsed, for a plugin to validate (plain data, copied)."""
        value = self._get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self._wrong(name, "a table", value)
        copied: dict[str, Any] = json.loads(json.dumps(value, default=str))
        return copied

    def build(self, cls: Callable[..., T], **kwargs: Any) -> T:
        """Construct ``cls``; its validators' ValueErrors become ConfigurationErrors."""
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"{self.where}: {self.path or 'document'}: {exc}") from exc
