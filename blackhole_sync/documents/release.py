"""The release manifest: what to install and how. Signed offline by k-of-n release keys.

A :class:`ReleaseManifest` is immutable once published. Besides its artifacts (``artifacts``)
it carries what a node does with them: schema :class:`Migration` steps and :class:`SchemaInfo`,
network-wide :class:`ConfigChange` entries, :class:`ProtocolInfo`, :class:`Compatibility`
rules, and the self-test and health :class:`Command` a node runs.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError
from .artifacts import Artifact, DeltaRecord, _plain_artifact
from .fields import (
    SPEC_VERSION,
    _channel_name,
    _drop_unset,
    _nonneg_int,
    _Reader,
    _string,
    format_time,
)

__all__ = [
    "CONFIG_SCOPES",
    "UPDATE_TYPES",
    "Command",
    "Compatibility",
    "ConfigChange",
    "Migration",
    "ProtocolInfo",
    "ReleaseManifest",
    "SchemaInfo",
]

UPDATE_TYPES = ("binary", "configuration", "protocol", "schema")


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
