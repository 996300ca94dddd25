"""Signed documents, no I/O: strict JSON and canonical bytes, the document models,
in-memory signing, the trusted state machine, and version ordering.

Modules, bottom up: ``signing`` (keys, signatures, thresholds), ``canonical`` (strict parse,
canonical bytes), ``fields`` (field readers, shared value rules, ``MetaFile``), ``envelope`` (the
signed envelope), the documents (``root``, ``index``, ``artifacts`` and ``release``,
``governance``, ``node_documents``, ``announcement``, ``certificate``, ``downgrade``; ``registry`` lists them by type), ``trust`` (the trusted
state machine) and ``versions`` (ordering and compatibility). Import from this package, not
from the modules: the split between them may change. Key files are read and written by
:mod:`blackhole_sync.codecs.keyfile` (this package does no I/O).
"""

from __future__ import annotations

from .announcement import MAX_ANNOUNCEMENT_BYTES, Announcement
from .artifacts import Artifact, DeltaRecord, Encryption, Member, Recipient, Transfer, Unpack
from .canonical import MAX_DEPTH, MAX_INT, MAX_SIZES, canonical_bytes, strict_loads
from .certificate import MAX_CERTIFIED_VOTES, CertifiedVote, LockInCertificate
from .downgrade import Downgrade
from .envelope import Envelope
from .fields import (
    HASH_ALGORITHMS,
    SPEC_VERSION,
    MetaFile,
    check_safe_name,
    check_safe_path,
    format_time,
    parse_time,
    parse_version,
)
from .governance import (
    MAX_VALIDATORS,
    Deprecation,
    HaltDoc,
    Proposal,
    RolloutPhase,
    RolloutPlan,
    ValidatorSet,
    governance_subject,
)
from .index import COORDINATION_LISTINGS, Index, IndexChannel, coordination_relpath
from .node_documents import HealthReport, NodeStatusDoc, Vote
from .registry import DOCUMENT_TYPES
from .release import (
    CONFIG_SCOPES,
    UPDATE_TYPES,
    Command,
    Compatibility,
    ConfigChange,
    Migration,
    ProtocolInfo,
    ReleaseManifest,
    SchemaInfo,
)
from .root import Role, Root
from .signing import (
    VERIFY_BACKEND,
    PrivateKey,
    PublicKey,
    Signature,
    Signer,
    key_id,
    verify_backend,
    verify_threshold,
)
from .trust import (
    MAX_ROOT_ROTATIONS,
    TrustedState,
)
from .versions import (
    CompatibilityInfo,
    VersionComparison,
    VersionInfo,
    VersionManager,
    VersionSource,
    compare_versions,
    newer_versions,
    sort_versions,
    version_key,
)

__all__ = [
    "COORDINATION_LISTINGS",
    "coordination_relpath",
    "governance_subject",
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
