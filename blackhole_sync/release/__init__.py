"""The release side: repository lifecycle, release builder, signing by separate holders,
and the UpdateServer / UpdateSigning facades."""

from __future__ import annotations

from .publisher import (
    AUTO_DELTA_COUNT,
    DELTA_MAX_RATIO_BP,
    BlobStore,
    RepoConfig,
    Repository,
    SandboxRunner,
    SignatureVerification,
    SyncSandboxRunner,
    UpdateServer,
    UpdateSigning,
    archive_format,
    list_members,
    pack_directory,
)

__all__ = [
    "AUTO_DELTA_COUNT",
    "BlobStore",
    "DELTA_MAX_RATIO_BP",
    "RepoConfig",
    "Repository",
    "SandboxRunner",
    "SignatureVerification",
    "SyncSandboxRunner",
    "UpdateServer",
    "UpdateSigning",
    "archive_format",
    "list_members",
    "pack_directory",
]
