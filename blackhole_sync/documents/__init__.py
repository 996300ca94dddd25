"""Signed documents, no I/O: strict JSON and canonical bytes, the document models,
in-memory signing, the trusted state machine, and version ordering.

Modules, bottom up: ``signing`` (keys, signatures, thresholds), ``canonical`` (strict parse,
canonical bytes), ``fields`` (field readers, shared value rules, ``MetaFile``), ``envelope`` (the
signed envelope), the documents (``root``, ``index``, ``artifacts`` and ``release``,
``governance``, ``node_documents``, ``announcement``, ``certificate``, ``downgrade``; ``registry`` lists them by type), ``trust`` (the trusted
state machine) and ``versions`` (ordering and compatibility). Import from this package, not
from the modules: the split between them may change. Key files are read and written by
:mod:`blackhole_sync.codecs.keyfile` (this package does no I/O).

Names load lazily (PEP 562): importing the package builds none of the document classes;
a name imports the module that defines it on first use (``node status`` loads the root, the
index and the trusted state, not the governance or announcement documents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module of this package that defines it
_EXPORTS: dict[str, str] = {
    "MAX_ANNOUNCEMENT_BYTES": "announcement",
    "Announcement": "announcement",
    "Artifact": "artifacts",
    "DeltaRecord": "artifacts",
    "Encryption": "artifacts",
    "Member": "artifacts",
    "Recipient": "artifacts",
    "Transfer": "artifacts",
    "Unpack": "artifacts",
    "MAX_DEPTH": "canonical",
    "MAX_INT": "canonical",
    "MAX_SIZES": "canonical",
    "canonical_bytes": "canonical",
    "strict_loads": "canonical",
    "MAX_CERTIFIED_VOTES": "certificate",
    "CertifiedVote": "certificate",
    "LockInCertificate": "certificate",
    "Downgrade": "downgrade",
    "Envelope": "envelope",
    "HASH_ALGORITHMS": "fields",
    "SPEC_VERSION": "fields",
    "MetaFile": "fields",
    "check_safe_name": "fields",
    "check_safe_path": "fields",
    "format_time": "fields",
    "parse_time": "fields",
    "parse_version": "fields",
    "MAX_VALIDATORS": "governance",
    "Deprecation": "governance",
    "HaltDoc": "governance",
    "Proposal": "governance",
    "RolloutPhase": "governance",
    "RolloutPlan": "governance",
    "ValidatorSet": "governance",
    "governance_subject": "governance",
    "COORDINATION_LISTINGS": "index",
    "Index": "index",
    "IndexChannel": "index",
    "coordination_relpath": "index",
    "HealthReport": "node_documents",
    "NodeStatusDoc": "node_documents",
    "Vote": "node_documents",
    "plain_vote_envelope": "node_documents",
    "DOCUMENT_TYPES": "registry",
    "CONFIG_SCOPES": "release",
    "UPDATE_TYPES": "release",
    "Command": "release",
    "Compatibility": "release",
    "ConfigChange": "release",
    "Migration": "release",
    "ProtocolInfo": "release",
    "ReleaseManifest": "release",
    "SchemaInfo": "release",
    "Role": "root",
    "Root": "root",
    "VERIFY_BACKEND": "signing",
    "PrivateKey": "signing",
    "PublicKey": "signing",
    "Signature": "signing",
    "Signer": "signing",
    "key_id": "signing",
    "verify_backend": "signing",
    "verify_threshold": "signing",
    "MAX_ROOT_ROTATIONS": "trust",
    "TrustedState": "trust",
    "CompatibilityInfo": "versions",
    "VersionComparison": "versions",
    "VersionInfo": "versions",
    "VersionManager": "versions",
    "VersionSource": "versions",
    "compare_versions": "versions",
    "newer_versions": "versions",
    "sort_versions": "versions",
    "version_key": "versions",
}

__all__ = [
    "COORDINATION_LISTINGS",
    "coordination_relpath",
    "governance_subject",
    "plain_vote_envelope",
    "ValidatorSet",
    "MAX_VALIDATORS",
    "MAX_CERTIFIED_VOTES",
    "LockInCertificate",
    "Downgrade",
    "Deprecation",
    "CertifiedVote",
    "Announcement",
    "Artifact",
    "CONFIG_SCOPES",
    "Command",
    "Compatibility",
    "CompatibilityInfo",
    "ConfigChange",
    "DOCUMENT_TYPES",
    "DeltaRecord",
    "Encryption",
    "Envelope",
    "HASH_ALGORITHMS",
    "HaltDoc",
    "HealthReport",
    "Index",
    "IndexChannel",
    "MAX_ANNOUNCEMENT_BYTES",
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_ROOT_ROTATIONS",
    "MAX_SIZES",
    "Member",
    "MetaFile",
    "Migration",
    "NodeStatusDoc",
    "PrivateKey",
    "Proposal",
    "ProtocolInfo",
    "PublicKey",
    "Recipient",
    "ReleaseManifest",
    "Role",
    "RolloutPhase",
    "RolloutPlan",
    "Root",
    "SPEC_VERSION",
    "SchemaInfo",
    "Signature",
    "Signer",
    "Transfer",
    "TrustedState",
    "UPDATE_TYPES",
    "Unpack",
    "VERIFY_BACKEND",
    "VersionComparison",
    "VersionInfo",
    "VersionManager",
    "VersionSource",
    "Vote",
    "canonical_bytes",
    "check_safe_name",
    "check_safe_path",
    "compare_versions",
    "format_time",
    "key_id",
    "parse_time",
    "parse_version",
    "newer_versions",
    "sort_versions",
    "strict_loads",
    "verify_backend",
    "verify_threshold",
    "version_key",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # static names for type checkers
    from .announcement import (
        MAX_ANNOUNCEMENT_BYTES as MAX_ANNOUNCEMENT_BYTES,
        Announcement as Announcement,
    )
    from .artifacts import (
        Artifact as Artifact,
        DeltaRecord as DeltaRecord,
        Encryption as Encryption,
        Member as Member,
        Recipient as Recipient,
        Transfer as Transfer,
        Unpack as Unpack,
    )
    from .canonical import (
        MAX_DEPTH as MAX_DEPTH,
        MAX_INT as MAX_INT,
        MAX_SIZES as MAX_SIZES,
        canonical_bytes as canonical_bytes,
        strict_loads as strict_loads,
    )
    from .certificate import (
        MAX_CERTIFIED_VOTES as MAX_CERTIFIED_VOTES,
        CertifiedVote as CertifiedVote,
        LockInCertificate as LockInCertificate,
    )
    from .downgrade import Downgrade as Downgrade
    from .envelope import Envelope as Envelope
    from .fields import (
        HASH_ALGORITHMS as HASH_ALGORITHMS,
        SPEC_VERSION as SPEC_VERSION,
        MetaFile as MetaFile,
        check_safe_name as check_safe_name,
        check_safe_path as check_safe_path,
        format_time as format_time,
        parse_time as parse_time,
        parse_version as parse_version,
    )
    from .governance import (
        MAX_VALIDATORS as MAX_VALIDATORS,
        Deprecation as Deprecation,
        HaltDoc as HaltDoc,
        Proposal as Proposal,
        RolloutPhase as RolloutPhase,
        RolloutPlan as RolloutPlan,
        ValidatorSet as ValidatorSet,
        governance_subject as governance_subject,
    )
    from .index import (
        COORDINATION_LISTINGS as COORDINATION_LISTINGS,
        Index as Index,
        IndexChannel as IndexChannel,
        coordination_relpath as coordination_relpath,
    )
    from .node_documents import (
        HealthReport as HealthReport,
        NodeStatusDoc as NodeStatusDoc,
        Vote as Vote,
        plain_vote_envelope as plain_vote_envelope,
    )
    from .registry import DOCUMENT_TYPES as DOCUMENT_TYPES
    from .release import (
        CONFIG_SCOPES as CONFIG_SCOPES,
        UPDATE_TYPES as UPDATE_TYPES,
        Command as Command,
        Compatibility as Compatibility,
        ConfigChange as ConfigChange,
        Migration as Migration,
        ProtocolInfo as ProtocolInfo,
        ReleaseManifest as ReleaseManifest,
        SchemaInfo as SchemaInfo,
    )
    from .root import Role as Role, Root as Root
    from .signing import (
        VERIFY_BACKEND as VERIFY_BACKEND,
        PrivateKey as PrivateKey,
        PublicKey as PublicKey,
        Signature as Signature,
        Signer as Signer,
        key_id as key_id,
        verify_backend as verify_backend,
        verify_threshold as verify_threshold,
    )
    from .trust import MAX_ROOT_ROTATIONS as MAX_ROOT_ROTATIONS, TrustedState as TrustedState
    from .versions import (
        CompatibilityInfo as CompatibilityInfo,
        VersionComparison as VersionComparison,
        VersionInfo as VersionInfo,
        VersionManager as VersionManager,
        VersionSource as VersionSource,
        compare_versions as compare_versions,
        newer_versions as newer_versions,
        sort_versions as sort_versions,
        version_key as version_key,
    )
