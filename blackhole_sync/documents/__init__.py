"""Signed documents, no I/O: strict JSON and canonical bytes, the document models,
in-memory signing, the trusted state machine, and version ordering.

Modules, bottom up: ``signing`` (keys, signatures, thresholds), ``canonical`` (strict parse,
canonical bytes), ``fields`` (field readers, shared value rules, ``MetaFile``), ``envelope`` (the
signed envelope), the documents (``root``, ``index``, ``artifacts`` and ``release``,
``governance``, ``node_documents``, ``announcement``; ``registry`` lists them by type), ``trust`` (the trusted
state machine) and ``versions`` (ordering and compatibility). Import from this package, not
from the modules: the split between them may change. (Key files are still read and written in
``signing``; that I/O leaves this package in a later issue.)
"""

from __future__ import annotations

from .announcement import MAX_ANNOUNCEMENT_BYTES, Announcement
from .artifacts import Artifact, DeltaRecord, Encryption, Member, Recipient, Unpack
from .canonical import MAX_DEPTH, MAX_INT, MAX_SIZES, canonical_bytes, strict_loads
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
from .governance import HaltDoc, Proposal, RolloutPhase, RolloutPlan
from .index import Index, IndexChannel
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
    KEY_FILE_MAX,
    VERIFY_BACKEND,
    PrivateKey,
    PublicKey,
    Signature,
    WrongKeyKindError,
    key_id,
    load_private_key,
    load_public_key,
    verify_backend,
    verify_threshold,
    write_key_pair,
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
    sort_versions,
    version_key,
)

__all__ = [
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
    "KEY_FILE_MAX",
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
    "TrustedState",
    "UPDATE_TYPES",
    "Unpack",
    "VERIFY_BACKEND",
    "VersionComparison",
    "VersionInfo",
    "VersionManager",
    "VersionSource",
    "Vote",
    "WrongKeyKindError",
    "canonical_bytes",
    "check_safe_name",
    "check_safe_path",
    "compare_versions",
    "format_time",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_time",
    "parse_version",
    "sort_versions",
    "strict_loads",
    "verify_backend",
    "verify_threshold",
    "version_key",
    "write_key_pair",
]
