"""Versions: semver ordering, installed versions, compatibility and migration paths.

Versions are semver strings without build metadata (``1.2.3``, ``1.2.3-rc.1``); ordering is
semver precedence (the ``semver`` package), which is total on such strings.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import semver
from attrs import field, frozen

from ..errors import MigrationError
from .fields import parse_version
from .release import Migration, ReleaseManifest

__all__ = [
    "CompatibilityInfo",
    "VersionComparison",
    "VersionInfo",
    "VersionManager",
    "VersionSource",
    "compare_versions",
    "newer_versions",
    "sort_versions",
    "version_key",
]


class VersionComparison(enum.IntEnum):
    OLDER = -1
    EQUAL = 0
    NEWER = 1


def compare_versions(v1: str, v2: str) -> VersionComparison:
    """Compare two versions by semver precedence: OLDER means ``v1 < v2``."""
    a, b = _precedence(parse_version(v1)), _precedence(parse_version(v2))
    return VersionComparison((a > b) - (a < b))


def sort_versions(versions: Iterable[str], *, reverse: bool = False) -> list[str]:
    return sorted(versions, key=_precedence, reverse=reverse)


def newer_versions(versions: Iterable[str], than: str | None) -> list[str]:
    """The ``versions`` newer than ``than`` (all when it is None), oldest first."""
    if than is None:
        return sort_versions(versions)
    floor = _precedence(than)
    return sorted((v for v in versions if _precedence(v) > floor), key=_precedence)


def version_key(version: str) -> semver.Version:
    """The version as a :class:`semver.Version` (semver precedence when compared)."""
    return _parsed(version)


@functools.lru_cache(maxsize=65_536)
def _parsed(version: str) -> semver.Version:
    return semver.Version.parse(version)


@functools.lru_cache(maxsize=65_536)
def _precedence(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Semver 2.0 precedence as a cached plain-tuple key: the numbers; then a release above any
    of its pre-releases; then the pre-release identifiers, numeric ones below alphanumeric ones
    and numbers compared as numbers (an identifier's tag keeps ints and strs apart), a longer
    list above its prefix. Build metadata is ignored, as semver says. (Parsing with semver on
    every comparison made a status with 1,000 known releases 50 times slower than with one.)"""
    v = _parsed(version)
    if not v.prerelease:
        return (v.major, v.minor, v.patch, 1, ())
    pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in v.prerelease.split("."))
    return (v.major, v.minor, v.patch, 0, pre)


@frozen
class VersionInfo:
    version: str
    installed_at: str | None = None  # ISO time
    state: str = "installed"  # installed | current | bad | good
    update_type: str = "binary"


@frozen
class CompatibilityInfo:
    """Per known release: the oldest version that may update to it and its protocols."""

    current: str | None
    entries: Mapping[str, Mapping[str, object]] = field(factory=dict)


class VersionSource(Protocol):
    def current_version(self) -> str | None: ...

    def installed_versions(self) -> Sequence[VersionInfo]: ...


class VersionManager:
    """The design's VersionManager over a node store and the trusted manifests."""

    def __init__(
        self,
        source: VersionSource,
        manifests: Callable[[], Mapping[str, ReleaseManifest]] = dict,
        *,
        schema_version: Callable[[], int | None] = lambda: None,
        protocol_versions: Callable[[], Sequence[int]] = tuple,
    ) -> None:
        self._source = source
        self._manifests = manifests
        self._schema_version = schema_version
        self._protocols = protocol_versions

    def get_current_version(self) -> str | None:
        return self._source.current_version()

    def get_installed_versions(self) -> list[VersionInfo]:
        infos = list(self._source.installed_versions())
        return sorted(infos, key=lambda i: version_key(i.version))

    def compare_versions(self, v1: str, v2: str) -> VersionComparison:
        return compare_versions(v1, v2)

    def get_compatibility_matrix(self) -> CompatibilityInfo:
        entries: dict[str, Mapping[str, object]] = {}
        for version, manifest in self._manifests().items():
            compat = manifest.compatibility
            entries[version] = {
                "min_from_version": compat.min_from_version if compat else None,
                "protocol_versions": list(compat.protocol_versions) if compat else [],
                "compatible": self._compatible(manifest),
            }
        return CompatibilityInfo(self.get_current_version(), entries)

    def check_compatibility(self, target: str) -> bool:
        """True when the current version may update to ``target`` (known manifest required)."""
        manifest = self._manifests().get(target)
        if manifest is None:
            return False
        return self._compatible(manifest)

    def _compatible(self, manifest: ReleaseManifest) -> bool:
        current = self.get_current_version()
        compat = manifest.compatibility
        if compat is None:
            return True
        if compat.min_from_version is not None and current is not None:
            if compare_versions(current, compat.min_from_version) < 0:
                return False
        network = self._protocols()
        if compat.protocol_versions and network:
            return bool(set(compat.protocol_versions) & set(network))
        return True

    def get_required_migrations(self, from_version: str | None, to_version: str) -> list[Migration]:
        """Migrations of every release in ``(from_version, to_version]``, in schema order.

        The chain must be contiguous from the node's schema version (when known); a gap or a
        fork (two migrations from one schema) raises :class:`MigrationError`.
        """
        manifests = self._manifests()
        steps: list[Migration] = []
        for version in sort_versions(manifests):
            if from_version is not None and compare_versions(version, from_version) <= 0:
                continue
            if compare_versions(version, to_version) > 0:
                continue
            steps.extend(manifests[version].migrations)
        steps.sort(key=lambda m: m.from_schema)
        schema = self._schema_version()
        chain: list[Migration] = []
        for migration in steps:
            if schema is not None and migration.to_schema <= schema:
                continue  # already applied
            if schema is not None and migration.from_schema != schema:
                raise MigrationError(
                    f"migration {migration.id} starts at schema {migration.from_schema}, "
                    f"node is at {schema}"
                )
            chain.append(migration)
            schema = migration.to_schema
        return chain
