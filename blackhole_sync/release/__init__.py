"""The release side: repository life cycle, release builder, drafts and signature merging,
and the design's UpdateServer / UpdateSigning facades.

Modules, bottom up: ``blobs`` (the content-addressed blob store), ``layout`` (every path under
REPO, the lock, the repository's own files read back), ``drafts`` (signers, one holder's
signature, the blobs a release needs, listings), ``builder`` (artifacts to an unsigned draft:
archives, blobs, deltas, encryption, the sandbox step), ``repository`` (create, roots and
rotation, the index, publish, withdraw) and ``facades``. Import from this package, not from the
modules. ``archive_format``, ``list_members`` and ``pack_directory`` live in
:mod:`blackhole_sync.codecs` (the one archive implementation); they are re-exported here.
"""

from __future__ import annotations

from ..codecs import archive_format, list_members, pack_directory
from .blobs import BlobStore, check_blob, store_blob
from .builder import (
    AUTO_DELTA_COUNT,
    DELTA_MAX_RATIO_BP,
    BuildOptions,
    ReleaseBuilder,
    SandboxRunner,
    SyncSandboxRunner,
)
from .drafts import (
    check_release_blobs,
    list_releases,
    release_blobs,
    release_signers,
    show_release,
    sign_draft,
)
from .facades import SignatureVerification, UpdateServer, UpdateSigning
from .layout import ReleaseState, RepoConfig, RepoLayout
from .repository import Repository

__all__ = [
    "AUTO_DELTA_COUNT",
    "BlobStore",
    "BuildOptions",
    "DELTA_MAX_RATIO_BP",
    "ReleaseBuilder",
    "ReleaseState",
    "RepoConfig",
    "RepoLayout",
    "Repository",
    "SandboxRunner",
    "SignatureVerification",
    "SyncSandboxRunner",
    "UpdateServer",
    "UpdateSigning",
    "archive_format",
    "check_blob",
    "check_release_blobs",
    "list_members",
    "list_releases",
    "pack_directory",
    "release_blobs",
    "release_signers",
    "show_release",
    "sign_draft",
    "store_blob",
]
