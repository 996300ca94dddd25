"""The design's update types, as read-only views of a verified release manifest.

A release manifest carries everything (ARCHITECTURE.md section 3); these attrs classes give
the design's names to the part each update type is about:

* :class:`BinaryUpdate`: one artifact per platform/architecture, its checksum, the release's
  signatures and the delta patches that lead to it;
* :class:`ConfigurationUpdate`: scoped configuration changes, effective date, rollback window;
* :class:`ProtocolUpdate`: protocol version, breaking changes, consensus threshold;
* :class:`SchemaUpdate`: database schema versions and the ordered migrations;
* :class:`DeltaUpdate`: the patches from one installed version to this one.

Build them with :func:`update_views` (or each class's ``from_manifest``); they never replace
the signed manifest, which stays the only thing decisions rest on.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

from attrs import frozen

from ._fsutil import sha256_hex
from .documents import (
    ConfigChange,
    DeltaRecord,
    Envelope,
    Migration,
    ReleaseManifest,
    Signature,
)

__all__ = [
    "BinaryUpdate",
    "ConfigurationUpdate",
    "DeltaUpdate",
    "ProtocolUpdate",
    "SchemaUpdate",
    "update_views",
]


@frozen
class BinaryUpdate:
    type = "binary"
    platform: str
    architecture: str
    version: str
    checksum: str  # sha256 of the artifact
    signature: tuple[Signature, ...]  # the release manifest's signatures
    delta_patches: tuple[DeltaRecord, ...] = ()

    @classmethod
    def from_manifest(cls, manifest: ReleaseManifest, envelope: Envelope) -> list[BinaryUpdate]:
        return [
            cls(
                a.platform, a.arch, manifest.version, a.sha256, envelope.signatures,
                tuple(d for d in manifest.deltas if d.artifact == a.name),
            )
            for a in manifest.artifacts
        ]  # fmt: skip


@frozen
class ConfigurationUpdate:
    type = "configuration"
    scope: str  # "global" | "regional" | "node-type" (the widest scope of the changes)
    changes: tuple[ConfigChange, ...]
    effective_date: _dt.datetime | None
    rollback_window: _dt.timedelta

    @classmethod
    def from_manifest(cls, manifest: ReleaseManifest) -> ConfigurationUpdate | None:
        changes = manifest.config_changes
        if not changes:
            return None
        scopes = {c.scope for c in changes}
        scope = "global" if "global" in scopes else sorted(scopes)[0]
        dates = [c.effective for c in changes if c.effective is not None]
        return cls(
            scope, changes, min(dates) if dates else None,
            _dt.timedelta(seconds=max(c.rollback_window for c in changes)),
        )  # fmt: skip


@frozen
class ProtocolUpdate:
    type = "protocol"
    protocol_version: int
    breaking_changes: bool
    migration_required: bool
    consensus_threshold: int  # basis points
    activation_height: int | None = None

    @classmethod
    def from_manifest(cls, manifest: ReleaseManifest) -> ProtocolUpdate | None:
        p = manifest.protocol
        if p is None:
            return None
        return cls(
            p.version, p.breaking, p.migration_required, p.consensus_threshold_bp,
            p.activation_height,
        )  # fmt: skip


@frozen
class SchemaUpdate:
    type = "schema"
    from_version: int
    to_version: int
    migrations: tuple[Migration, ...]
    backup_required: bool
    estimated_duration: _dt.timedelta

    @classmethod
    def from_manifest(cls, manifest: ReleaseManifest) -> SchemaUpdate | None:
        if not manifest.migrations and manifest.schema is None:
            return None
        migrations = tuple(sorted(manifest.migrations, key=lambda m: m.from_schema))
        schema = manifest.schema
        start = schema.from_version if schema else migrations[0].from_schema
        end = schema.to_version if schema else migrations[-1].to_schema
        return cls(
            start, end, migrations, schema.backup_required if schema else True,
            _dt.timedelta(seconds=schema.estimated_seconds if schema else 0),
        )  # fmt: skip


@frozen
class DeltaUpdate:
    from_version: str
    to_version: str
    patches: tuple[DeltaRecord, ...]
    compression_type: str  # the patch codec(s), e.g. "bsdiff4-lzma"
    compressed_size: int  # bytes to fetch: the patches
    uncompressed_size: int  # bytes produced: the artifacts or members patched
    checksum: str  # sha256 of the signed release manifest the patches belong to
    signature: tuple[Signature, ...]

    @classmethod
    def from_manifest(
        cls, manifest: ReleaseManifest, envelope: Envelope, from_version: str
    ) -> DeltaUpdate | None:
        patches = tuple(d for d in manifest.deltas if d.from_version == from_version)
        if not patches:
            return None
        codecs = sorted({d.codec for d in patches})
        return cls(
            from_version, manifest.version, patches, "+".join(codecs),
            sum(d.patch.length for d in patches), sum(d.output_length for d in patches),
            _manifest_digest(envelope), envelope.signatures,
        )  # fmt: skip


def _manifest_digest(envelope: Envelope) -> str:

    return sha256_hex(envelope.raw)


def update_views(
    manifest: ReleaseManifest, envelope: Envelope, *, installed: Sequence[str] = ()
) -> dict[str, object]:
    """Every view that applies to a release: binary, configuration, protocol, schema, deltas."""
    return {
        "binary": BinaryUpdate.from_manifest(manifest, envelope),
        "configuration": ConfigurationUpdate.from_manifest(manifest),
        "protocol": ProtocolUpdate.from_manifest(manifest),
        "schema": SchemaUpdate.from_manifest(manifest),
        "deltas": [d for v in installed if (d := DeltaUpdate.from_manifest(manifest, envelope, v))],
    }
