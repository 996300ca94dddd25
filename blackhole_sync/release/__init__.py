"""The release side: repository life cycle, release builder, drafts and signature merging,
and the design's UpdateServer / UpdateSigning facades.

Modules, bottom up: ``blobs`` (the content-addressed blob store), ``layout`` (every path under
REPO, the lock, the repository's own files read back), ``drafts`` (signers, one holder's
signature, the blobs a release needs, listings), ``builder`` (artifacts to an unsigned draft:
archives, blobs, deltas, encryption, the sandbox step), ``repository`` (create, roots and
rotation, the index, publish, withdraw) and ``facades``. Import from this package, not from the
modules. ``archive_format``, ``list_members`` and ``pack_directory`` live in
:mod:`blackhole_sync.codecs` (the one archive implementation); they are re-exported here.

Names load lazily (PEP 562): importing the package costs nothing until a name
is used, so a command imports only the modules it needs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: name -> the module of this package that provides it
_EXPORTS: dict[str, str] = {
    "AUTO_DELTA_COUNT": "builder",
    "BlobStore": "blobs",
    "BuildOptions": "builder",
    "DELTA_MAX_RATIO_BP": "builder",
    "ReleaseBuilder": "builder",
    "ReleaseState": "layout",
    "RepoConfig": "layout",
    "RepoLayout": "layout",
    "Repository": "repository",
    "SandboxRunner": "builder",
    "SignatureVerification": "facades",
    "SyncSandboxRunner": "builder",
    "UpdateServer": "facades",
    "UpdateSigning": "facades",
    "check_blob": "blobs",
    "check_release_blobs": "drafts",
    "list_releases": "drafts",
    "release_blobs": "drafts",
    "release_signers": "drafts",
    "show_release": "drafts",
    "sign_draft": "drafts",
    "store_blob": "blobs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static names for type checkers
    from .blobs import (
        BlobStore as BlobStore,
        check_blob as check_blob,
        store_blob as store_blob,
    )
    from .builder import (
        AUTO_DELTA_COUNT as AUTO_DELTA_COUNT,
        DELTA_MAX_RATIO_BP as DELTA_MAX_RATIO_BP,
        BuildOptions as BuildOptions,
        ReleaseBuilder as ReleaseBuilder,
        SandboxRunner as SandboxRunner,
        SyncSandboxRunner as SyncSandboxRunner,
    )
    from .drafts import (
        check_release_blobs as check_release_blobs,
        list_releases as list_releases,
        release_blobs as release_blobs,
        release_signers as release_signers,
        show_release as show_release,
        sign_draft as sign_draft,
    )
    from .facades import (
        SignatureVerification as SignatureVerification,
        UpdateServer as UpdateServer,
        UpdateSigning as UpdateSigning,
    )
    from .layout import (
        ReleaseState as ReleaseState,
        RepoConfig as RepoConfig,
        RepoLayout as RepoLayout,
    )
    from .repository import (
        Repository as Repository,
    )
