"""The release side: repository life cycle, release builder, drafts and signature merging,
and the design's UpdateServer / UpdateSigning facades.

Modules, bottom up: ``blobs`` (the content-addressed blob store), ``layout`` (every path under
REPO, the lock, the repository's own files read back), ``signers`` (keys held by signer
plugins: HSMs, KMSs), ``progress`` (what a build reports while it runs), ``drafts`` (signers,
one holder's signature, the blobs a release needs, listings), ``bundles`` (a draft carried to a
holder, signed elsewhere, merged back), ``rootdrafts`` (a root signed by separate holders),
``builder`` (artifacts to an unsigned draft: archives, blobs, deltas, encryption, the sandbox
step), ``repository`` (create, roots and rotation, the index, publish, withdraw) and
``facades``. Import from this package, not from the
modules. ``archive_format``, ``list_members`` and ``pack_directory`` live in
:mod:`blackhole_sync.codecs` (the one archive implementation); they are re-exported here.

Names load lazily (PEP 562): importing the package costs nothing until a name
is used, so a command imports only the modules it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module of this package that provides it
_EXPORTS: dict[str, str] = {
    "COORDINATION_KINDS": "governance",
    "CoordinationDraft": "governance",
    "coordination_relpath": "governance",
    "discard_coordination_draft": "governance",
    "list_coordination_drafts": "governance",
    "next_coordination_version": "governance",
    "publish_coordination": "governance",
    "sign_coordination_draft": "governance",
    "write_coordination_draft": "governance",
    "AUTO_DELTA_COUNT": "builder",
    "BUNDLE_MAX": "bundles",
    "BUNDLE_TYPE": "bundles",
    "BlobStore": "blobs",
    "BuildOptions": "builder",
    "BuildProgress": "progress",
    "Bundle": "bundles",
    "DELTA_MAX_RATIO_BP": "builder",
    "NULL_PROGRESS": "progress",
    "PLUGIN_KEY_PREFIX": "signers",
    "PluginSigner": "signers",
    "ProgressStep": "progress",
    "ReleaseBuilder": "builder",
    "ReleaseState": "layout",
    "RepoConfig": "layout",
    "RepoLayout": "layout",
    "Repository": "repository",
    "RoleProgress": "rootdrafts",
    "RootDraftStatus": "rootdrafts",
    "SandboxRunner": "builder",
    "SignatureVerification": "facades",
    "SyncSandboxRunner": "builder",
    "UpdateServer": "facades",
    "UpdateSigning": "facades",
    "bundle_info": "bundles",
    "check_blob": "blobs",
    "check_release_blobs": "drafts",
    "discard_root_draft": "rootdrafts",
    "export_bundle": "bundles",
    "import_bundles": "bundles",
    "is_plugin_key": "signers",
    "list_releases": "drafts",
    "plugin_signer": "signers",
    "publish_root_draft": "rootdrafts",
    "release_blobs": "drafts",
    "release_signers": "drafts",
    "report_step": "progress",
    "root_draft_status": "rootdrafts",
    "show_release": "drafts",
    "sign_bundle": "bundles",
    "sign_draft": "drafts",
    "sign_root_draft": "rootdrafts",
    "signer_providers": "signers",
    "store_blob": "blobs",
    "write_root_draft": "rootdrafts",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


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
    from .bundles import (
        BUNDLE_MAX as BUNDLE_MAX,
        BUNDLE_TYPE as BUNDLE_TYPE,
        Bundle as Bundle,
        bundle_info as bundle_info,
        export_bundle as export_bundle,
        import_bundles as import_bundles,
        sign_bundle as sign_bundle,
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
    from .progress import (
        NULL_PROGRESS as NULL_PROGRESS,
        BuildProgress as BuildProgress,
        ProgressStep as ProgressStep,
        report_step as report_step,
    )
    from .repository import (
        Repository as Repository,
    )
    from .rootdrafts import (
        RoleProgress as RoleProgress,
        RootDraftStatus as RootDraftStatus,
        discard_root_draft as discard_root_draft,
        publish_root_draft as publish_root_draft,
        root_draft_status as root_draft_status,
        sign_root_draft as sign_root_draft,
        write_root_draft as write_root_draft,
    )
    from .signers import (
        PLUGIN_KEY_PREFIX as PLUGIN_KEY_PREFIX,
        PluginSigner as PluginSigner,
        is_plugin_key as is_plugin_key,
        plugin_signer as plugin_signer,
        signer_providers as signer_providers,
    )
