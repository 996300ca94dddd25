"""The repository life cycle: create, roots and their rotation, the index, publish, withdraw.

:class:`Repository` is the publisher's handle on a repository directory (its layout and reads
are :class:`~blackhole_sync.release.layout.RepoLayout`'s). It signs and writes what nodes trust:
roots, the index, published manifests. Builds and signatures are delegated to the
:class:`~blackhole_sync.release.builder.ReleaseBuilder` and :mod:`~blackhole_sync.release.drafts`.

Every write is atomic (temporary file in the same directory, fsync, rename, fsync of the
directory); blobs are content-addressed; every mutation holds the repository's lock. Before
anything signed is written, it is checked by a fresh
:class:`~blackhole_sync.documents.TrustedState` walking ``1.root.json`` .. ``N.root.json``:
the publisher never writes what a node would refuse. A release is *published* when the index
lists it (in ``releases`` or ``withdrawn``); the index is written last, so a crash mid-publish
leaves a draft that can be published again.

Refusals (what the command line maps them to):

* :class:`SignatureError` (exit 3): ``sign_with`` below the root threshold (init), below the old
  or the new root threshold (rotate), a revocation that leaves a role below its threshold, a
  key outside the release role (sign), publishing below the release threshold, an index key
  outside the index role, a root draft signed by a key outside the old and new root roles,
  publishing a root draft below either threshold. Nothing is written.
* :class:`ConflictError` (exit 1): an existing repository (init), a version that exists as a
  draft or published (build), signing or publishing a published release, yanking twice, a
  rotation while a root draft is pending.
* :class:`NoSuchVersionError` (exit 1): no such draft / release, ``delta_from`` not published.
* :class:`FormatError` (exit 3): a version that is not canonical semver.
* :class:`UnsafePathError` (exit 3): setuid/setgid/sticky artifacts or archive members, links
  or special files in a directory or archive, unsafe member names.
* ``ValueError`` (exit 2): usage errors -- two artifacts with the same name, a missing
  artifact file, an unknown update type, an impossible threshold, an ``--unpack`` path that is
  not an artifact or not a known archive type.
* :class:`ConfigurationError` (exit 1): the path is not a repository.

Root drafts (separate holders): ``init`` and ``rotate`` with ``draft=True`` -- or
``draft="auto"`` (the command line's choice) when given fewer root keys than the root
threshold (for a rotation: than the larger of the old and new root thresholds) -- write the
new root, signed by the keys given, as a draft that each holder signs with
:meth:`Repository.sign_root`; :meth:`Repository.publish_root` publishes it once the old and new
thresholds are met (:mod:`~blackhole_sync.release.rootdrafts`).

Index key rotation: after ``rotate(index_key=NEW)`` the served index is still signed by the
old key, so a node that walks to the new root refuses it until it is re-signed. Pass the new
index private key in ``sign_with`` (it is then re-signed at once) or run
``repo refresh --index-key NEW``; nodes drop their index floor on an index-key change
(fast-forward recovery).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import attrs

from .._fsutil import fsync_dir, replace, write_atomic
from ..documents import (
    Command,
    Compatibility,
    ConfigChange,
    Envelope,
    Index,
    IndexChannel,
    MetaFile,
    Migration,
    ProtocolInfo,
    PublicKey,
    ReleaseManifest,
    Role,
    Root,
    SchemaInfo,
    Signer,
    TrustedState,
    sort_versions,
)
from ..errors import (
    ConfigurationError,
    ConflictError,
    NoSuchVersionError,
    SecurityError,
    SignatureError,
)
from ..fetch import PluginHost
from .builder import (
    BuildOptions,
    DeltaFrom,
    ReleaseBuilder,
    SandboxRunner,
    SyncSandboxRunner,
    plugin_codecs,
    transport_companions,
    transport_locators,
)
from .bundles import Bundle, export_bundle, import_bundles
from .drafts import check_release_blobs, list_releases, release_blobs, show_release, sign_draft
from .layout import RepoConfig, RepoLayout, json_bytes, norm_time
from .rootdrafts import (
    RootDraftStatus,
    discard_root_draft,
    publish_root_draft,
    root_draft_status,
    sign_root_draft,
    write_root_draft,
)

__all__ = ["Repository"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _mutation(
    fn: Callable[Concatenate[Repository, _P], _R],
) -> Callable[Concatenate[Repository, _P], _R]:
    """Run a repository mutation under the repository's write lock."""

    @functools.wraps(fn)
    def wrapper(self: Repository, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.locked():
            return fn(self, *args, **kwargs)

    return wrapper


#: ``draft``: always, never, or when fewer root keys are given than the threshold(s).
DraftMode = bool | Literal["auto"]


def _publish_served(served: Path, root: Path) -> None:
    """Move a draft's companion files (``served/<dir>/<name>``: a ``.torrent`` next to its
    blob) into the repository; a file already there is kept (companions are derived from the
    blob, so the same blob gives the same file)."""
    if not served.is_dir():
        return
    for folder in sorted(p for p in served.iterdir() if p.is_dir() and not p.is_symlink()):
        target = root / folder.name
        target.mkdir(exist_ok=True)
        for src in sorted(folder.iterdir()):
            if src.is_file() and not src.is_symlink() and not (target / src.name).exists():
                replace(src, target / src.name, sync=False)
        fsync_dir(target)


def _wants_draft(draft: DraftMode, given: int, threshold: int) -> bool:
    return draft is True or (draft == "auto" and given < threshold)


def _role_spec(
    keys: Sequence[PublicKey], threshold: int | None, name: str
) -> tuple[list[str], int]:
    ids = list(dict.fromkeys(k.keyid for k in keys))
    if not ids:
        raise ValueError(f"the {name} role needs at least one key")
    if threshold is None:
        raise ValueError(f"the {name} role needs a threshold")
    if not 1 <= threshold <= len(ids):
        raise ValueError(f"{name} threshold {threshold} must be 1..{len(ids)} (its distinct keys)")
    return ids, threshold


class Repository(RepoLayout):
    """A publisher's repository directory. Create with :meth:`init`, open with :meth:`open`."""

    # -- create -------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        root_keys: Sequence[PublicKey],
        root_threshold: int,
        release_keys: Sequence[PublicKey],
        release_threshold: int,
        index_key: PublicKey | Signer,
        sign_with: Sequence[Signer],
        governance_keys: Sequence[PublicKey] = (),
        governance_threshold: int | None = None,
        root_expires_days: int = 365,
        index_expires_seconds: int = 86_400,
        network_id: str = "blackhole",
        now: _dt.datetime | None = None,
        draft: DraftMode = False,
    ) -> Repository:
        """Create a repository: ``1.root.json``, ``root.json``, config, and an empty index.

        The empty index (version 1, channel ``stable``) needs the index private key: it is
        written when ``index_key`` is a signer or that key is in ``sign_with``; otherwise the
        first publish or :meth:`refresh` writes index version 1.

        With ``draft`` (``True``, or ``"auto"`` and fewer root keys in ``sign_with`` than the
        root threshold) only the config and a root draft signed by ``sign_with`` are written
        (:meth:`root_draft`); the root holders sign it with :meth:`sign_root` and
        :meth:`publish_root` writes ``1.root.json`` and ``root.json``. An index key in
        ``sign_with`` is then not used: the first publish or :meth:`refresh` writes the index.
        """
        repo_path = Path(path)
        now = norm_time(now)
        config = RepoConfig(root_expires_days, index_expires_seconds, network_id)
        config.check()
        if cls.is_repository(repo_path):
            raise ConflictError(f"{repo_path} is already a repository")
        index_public = index_key if isinstance(index_key, PublicKey) else index_key.public_key
        specs = {
            "root": _role_spec(root_keys, root_threshold, "root"),
            "release": _role_spec(release_keys, release_threshold, "release"),
            "index": _role_spec([index_public], 1, "index"),
        }
        if governance_keys:
            specs["governance"] = _role_spec(governance_keys, governance_threshold, "governance")
        all_keys = {k.keyid: k for k in (*root_keys, *release_keys, index_public, *governance_keys)}
        root = Root(
            1,
            now + _dt.timedelta(days=root_expires_days),
            all_keys,
            {name: Role(tuple(ids), thr) for name, (ids, thr) in specs.items()},
            network_id,
        )
        root_ids = set(specs["root"][0])
        signers = list({k.keyid: k for k in sign_with if k.keyid in root_ids}.values())
        if _wants_draft(draft, len(signers), root_threshold):
            for k in sign_with:
                if k.keyid not in root_ids | {index_public.keyid}:
                    raise SignatureError(f"key {k.keyid[:16]}... is not a root key of root v1")
            repo_path.mkdir(parents=True, exist_ok=True)
            repo = cls(repo_path, config)
            repo.create_directories()
            write_atomic(repo.config_path, json_bytes(config.to_dict()), mode=0o600)
            write_root_draft(repo, root, signers)
            return repo
        root_env = Envelope.sign(root.to_dict(), signers)
        try:
            state = TrustedState(root_env.raw, reference_time=now)
        except SignatureError as exc:
            raise SignatureError(
                f"the new root is not signed by its root threshold: {exc}"
            ) from exc
        index_signer = None if isinstance(index_key, PublicKey) else index_key
        for k in sign_with:
            if k.keyid == index_public.keyid:
                index_signer = k
        index_env = None
        if index_signer is not None:
            index = Index(
                1, now + _dt.timedelta(seconds=index_expires_seconds), {"stable": IndexChannel({})}
            )
            index_env = Envelope.sign(index.to_dict(), [index_signer])
            state.update_index(index_env.raw)
        repo_path.mkdir(parents=True, exist_ok=True)
        repo = cls(repo_path, config)
        repo.create_directories()
        write_atomic(repo.config_path, json_bytes(config.to_dict()), mode=0o600)
        write_atomic(repo.root_path(1), root_env.raw)
        write_atomic(repo.root_path(), root_env.raw)
        if index_env is not None:
            write_atomic(repo.index_path, index_env.raw)
        return repo

    # -- verified views of our own files ---------------------------------------------------------

    def verifier(self, *, now: _dt.datetime | None = None) -> TrustedState:
        """A fresh node's view: root 1, then every ``N.root.json`` up to the newest."""
        state = TrustedState(self.root_bytes(1), reference_time=norm_time(now))
        version = 2
        while self.root_path(version).is_file():
            state.update_root(self.root_bytes(version))
            version += 1
        if state.root_bytes != self.root_bytes():
            raise ConfigurationError("root.json is not the newest N.root.json")
        return state

    def verify(self, *, now: _dt.datetime | None = None) -> TrustedState:
        """Check the whole served repository as a fresh node would; returns the state."""
        state = self.verifier(now=now)
        data = self.index_bytes()
        if data is None:
            return state
        index = state.update_index(data)
        for version in (*index.all_releases(), *index.all_withdrawn()):
            if self.manifest_path(version).is_file():
                state.update_manifest(version, self.manifest_bytes(version), allow_withdrawn=True)
        return state

    def unverifiable_releases(self, *, now: _dt.datetime | None = None) -> list[str]:
        """Published releases whose manifests no longer verify under the newest root.

        After a rotation or revocation of release keys, a release signed by too few of the
        remaining keys is refused by every node; re-publish it as a new version (or withdraw
        it). Withdrawn releases are not listed.
        """
        state = self.verifier(now=now)
        data = self.index_bytes()
        if data is None:
            return []
        index = state.update_index(data)
        bad = []
        for version in index.all_releases():
            try:
                state.update_manifest(version, self.manifest_bytes(version))
            except (SecurityError, OSError):
                bad.append(version)
        return sort_versions(bad)

    # -- root rotation ----------------------------------------------------------------------------

    @staticmethod
    def _resolve_keyid(root: Root, value: str) -> str:
        if value in root.keys:
            return value
        matches = [k for k in root.keys if len(value) >= 8 and k.startswith(value.lower())]
        if len(matches) != 1:
            raise ValueError(f"key id {value!r} is not (uniquely) a key of root v{root.version}")
        return matches[0]

    @_mutation
    def rotate(
        self,
        *,
        sign_with: Sequence[Signer],
        root_keys: Sequence[PublicKey] | None = None,
        root_threshold: int | None = None,
        release_keys: Sequence[PublicKey] | None = None,
        release_threshold: int | None = None,
        index_key: PublicKey | None = None,
        governance_keys: Sequence[PublicKey] | None = None,
        governance_threshold: int | None = None,
        revoke: Sequence[str] = (),
        root_expires_days: int | None = None,
        now: _dt.datetime | None = None,
        draft: DraftMode = False,
    ) -> Root:
        """Write root version N+1, signed by the old and the new root thresholds.

        Roles not mentioned keep their keys and thresholds; ``revoke`` (key ids, or unique
        prefixes of at least 8 hex digits) removes a key from every role. ``governance_keys=()``
        removes the governance role. A role left with fewer keys than its threshold by a
        revocation: :class:`SignatureError`; an impossible explicit threshold: ``ValueError``.

        With ``draft`` (``True``, or ``"auto"`` and fewer keys of the old or new root role in
        ``sign_with`` than the larger of the two root thresholds) root N+1 is written as a
        draft signed by ``sign_with`` (each must be a key of the old or the new root role, or
        an index key, which is not used) and returned; :meth:`sign_root` and
        :meth:`publish_root` finish it. A pending draft refuses another rotation
        (:class:`ConflictError`).
        """
        now = norm_time(now)
        if self.root_draft_path.is_file():
            raise ConflictError(
                "a root draft is pending: sign it (repo sign) and publish it (repo "
                "publish-root), or discard it (repo discard-root) before another rotation"
            )
        old = self.root()
        keys: dict[str, PublicKey] = dict(old.keys)
        roles: dict[str, tuple[list[str], int]] = {
            name: (list(role.keyids), role.threshold) for name, role in old.roles.items()
        }
        changes: list[tuple[str, Sequence[PublicKey] | None, int | None]] = [
            ("root", root_keys, root_threshold),
            ("release", release_keys, release_threshold),
            ("index", None if index_key is None else [index_key], None if index_key is None else 1),
            ("governance", governance_keys, governance_threshold),
        ]
        for name, new_keys, new_threshold in changes:
            if name == "governance" and new_keys is not None and not new_keys:
                roles.pop("governance", None)
                continue
            if new_keys is not None:
                thr = new_threshold if new_threshold is not None else roles.get(name, ([], None))[1]
                roles[name] = _role_spec(new_keys, thr, name)
                keys.update({k.keyid: k for k in new_keys})
            elif new_threshold is not None:
                if name not in roles:
                    raise ValueError(f"root v{old.version} has no {name} role to re-threshold")
                roles[name] = _role_spec([keys[k] for k in roles[name][0]], new_threshold, name)
        revoked = {self._resolve_keyid(old, r) for r in revoke}
        for name, (ids, thr) in list(roles.items()):
            kept = [k for k in ids if k not in revoked]
            if len(kept) < thr:
                raise SignatureError(
                    f"revoking leaves the {name} role {len(kept)} key(s) for threshold {thr}; "
                    "add keys or lower the threshold in the same rotation"
                )
            roles[name] = (kept, thr)
        used = {k for ids, _ in roles.values() for k in ids}
        days = root_expires_days if root_expires_days is not None else self.config.root_expires_days
        if not 1 <= days <= 36_500:
            raise ValueError("root expiry must be 1..36500 days")
        new = Root(
            old.version + 1,
            now + _dt.timedelta(days=days),
            {k: v for k, v in keys.items() if k in used},
            {name: Role(tuple(ids), thr) for name, (ids, thr) in roles.items()},
            old.network_id,
            old.extra,
        )
        root_ids = set(old.roles["root"].keyids) | set(roles["root"][0])
        signers = list({k.keyid: k for k in sign_with if k.keyid in root_ids}.values())
        if _wants_draft(draft, len(signers), max(old.roles["root"].threshold, roles["root"][1])):
            index_ids = set(old.roles["index"].keyids) | set(new.roles["index"].keyids)
            for k in sign_with:
                if k.keyid not in root_ids | index_ids:
                    raise SignatureError(
                        f"key {k.keyid[:16]}... is not a root key of root v{old.version} "
                        f"or v{new.version}"
                    )
            config = None
            if root_expires_days is not None and root_expires_days != self.config.root_expires_days:
                config = RepoConfig(
                    root_expires_days, self.config.index_expires_seconds, self.config.network_id
                )
            write_root_draft(self, new, signers, config=config)
            return new
        env = Envelope.sign(new.to_dict(), signers)
        state = self.verifier(now=now)
        try:
            state.update_root(env.raw)  # old AND new thresholds
        except SignatureError as exc:
            raise SignatureError(
                f"root v{new.version} needs the thresholds of root v{old.version} and of itself: "
                f"{exc} (for holders who sign separately: give fewer keys than the threshold, "
                "or --draft, to start a root draft)"
            ) from exc
        new_index = None
        if old.roles["index"] != new.roles["index"]:
            index_signer = next(
                (k for k in reversed(sign_with) if k.keyid in new.roles["index"].keyids), None
            )
            if index_signer is not None:
                new_index = self._next_index(index_signer, now, lambda chans: chans, state=state)
        write_atomic(self.root_path(new.version), env.raw)
        write_atomic(self.root_path(), env.raw)
        if root_expires_days is not None and root_expires_days != self.config.root_expires_days:
            self.config = RepoConfig(
                root_expires_days, self.config.index_expires_seconds, self.config.network_id
            )
            write_atomic(self.config_path, json_bytes(self.config.to_dict()), mode=0o600)
        if new_index is not None:
            write_atomic(self.index_path, new_index[1])
        return new

    # -- root drafts: separate holders ------------------------------------------------------------

    def root_draft(self) -> RootDraftStatus | None:
        """The pending root draft and its signatures so far; None without one."""
        return root_draft_status(self)

    def sign_root(self, key: Signer) -> bool:
        """Add one root holder's signature to the pending root draft; False if already there."""
        return sign_root_draft(self, key)

    @_mutation
    def publish_root(self, *, now: _dt.datetime | None = None) -> Root:
        """Publish the pending root draft (old and new thresholds), as :meth:`rotate` would.

        A rotation that changes the index key leaves the index signed by the old key: re-sign
        it with :meth:`refresh` and the new key.
        """
        now = norm_time(now)
        state = self.verifier(now=now) if self.root_path().is_file() else None
        root, _env = publish_root_draft(self, state, now)
        return root

    def discard_root(self) -> int:
        """Drop the pending root draft; returns its version."""
        return discard_root_draft(self)

    # -- the index ----------------------------------------------------------------------------------

    def _next_index(
        self,
        index_key: Signer,
        now: _dt.datetime,
        change: Callable[[dict[str, IndexChannel]], dict[str, IndexChannel]],
        *,
        state: TrustedState | None = None,
        coordination: Callable[[Index], Index] | None = None,
    ) -> tuple[Index, bytes, TrustedState]:
        """Build, sign and verify (not write) the next index version. Its coordination
        listings (rollouts, halts, validator set, proposals, deprecations, downgrades) are
        carried over, or changed by ``coordination`` (``release/governance.py``)."""
        state = state or self.verifier(now=now)
        root = state.root
        if index_key.keyid not in root.roles["index"].keyids:
            raise SignatureError(
                f"key {index_key.keyid[:16]}... is not the index key of root v{root.version}"
            )
        old_bytes = self.index_bytes()
        old = None
        if old_bytes is not None:
            old = Envelope.from_bytes(old_bytes, expected_type="index").parse(Index.from_dict)
            state.load_trusted_index(old_bytes)
        channels = dict(old.channels) if old is not None else {"stable": IndexChannel({})}
        new = attrs.evolve(
            old if old is not None else Index(1, now, {}),
            version=(old.version + 1) if old is not None else 1,
            expires=now + _dt.timedelta(seconds=self.config.index_expires_seconds),
            channels=change(channels),
        )
        if coordination is not None:
            new = coordination(new)
        env = Envelope.sign(new.to_dict(), [index_key])
        state.update_index(env.raw)
        return new, env.raw, state

    @_mutation
    def refresh(self, index_key: Signer, *, now: _dt.datetime | None = None) -> Index:
        """Re-sign the index with version+1 and a fresh expiry; no new release."""
        index, data, _ = self._next_index(index_key, norm_time(now), lambda chans: chans)
        write_atomic(self.index_path, data)
        return index

    # -- releases: build and sign (delegated) -------------------------------------------------------

    def build_release(
        self,
        version: str,
        artifacts: Sequence[str | os.PathLike[str]],
        *,
        update_type: str = "binary",
        channel: str = "stable",
        critical: bool = False,
        priority: int = 0,
        delta_from: DeltaFrom = None,
        encrypt_to: Sequence[PublicKey | str] = (),
        unpack: Sequence[str | os.PathLike[str]] = (),
        platform: str = "any",
        arch: str = "any",
        self_test: Command | None = None,
        health: Command | None = None,
        migrations: Sequence[Migration] = (),
        schema: SchemaInfo | None = None,
        config_changes: Sequence[ConfigChange] = (),
        protocol: ProtocolInfo | None = None,
        compatibility: Compatibility | None = None,
        notes: str = "",
        sandbox: SyncSandboxRunner | None = None,
        now: _dt.datetime | None = None,
        plugins: PluginHost | None = None,
    ) -> ReleaseManifest:
        """Build the draft of ``version`` (unsigned) in ``.bhsync/drafts/<version>/``.

        ``sandbox`` (synchronous here; see :meth:`abuild_release` for an async one) is run on a
        scratch tree with the self-test, then the health command, before the draft is kept.
        ``plugins``: their patch codecs are offered to the delta selection too.
        The options are :class:`~blackhole_sync.release.builder.BuildOptions`'.
        """
        options = BuildOptions(
            update_type=update_type,
            channel=channel,
            critical=critical,
            priority=priority,
            delta_from=delta_from,
            encrypt_to=encrypt_to,
            unpack=unpack,
            platform=platform,
            arch=arch,
            self_test=self_test,
            health=health,
            migrations=migrations,
            schema=schema,
            config_changes=config_changes,
            protocol=protocol,
            compatibility=compatibility,
            notes=notes,
            now=now,
        )
        codecs = None if plugins is None else plugin_codecs(plugins)
        locate = None if plugins is None else transport_locators(plugins)
        companions = None if plugins is None else transport_companions(plugins)
        return ReleaseBuilder(self, codecs=codecs, locate=locate, companions=companions).build(
            version, artifacts, options, sandbox=sandbox
        )

    async def abuild_release(
        self,
        version: str,
        artifacts: Sequence[str | os.PathLike[str]],
        *,
        sandbox: SandboxRunner | None = None,
        plugins: PluginHost | None = None,
        **options: Any,
    ) -> ReleaseManifest:
        """:meth:`build_release` with an async sandbox step; the file work runs in a thread.

        ``options`` are the keyword arguments of :meth:`build_release`.
        """
        codecs = None if plugins is None else plugin_codecs(plugins)
        locate = None if plugins is None else transport_locators(plugins)
        companions = None if plugins is None else transport_companions(plugins)
        return await ReleaseBuilder(
            self, codecs=codecs, locate=locate, companions=companions
        ).abuild(
            version, artifacts, BuildOptions(**options), sandbox=sandbox
        )

    def sign_release(self, version: str, key: Signer) -> bool:
        """Add one key holder's signature to the draft. False if that key had signed already."""
        return sign_draft(self, version, key)

    def export_release(self, version: str, out: str | os.PathLike[str]) -> Bundle:
        """Write the draft of ``version`` as a bundle a holder signs elsewhere
        (:func:`~blackhole_sync.release.bundles.sign_bundle`)."""
        return export_bundle(self, version, out)

    def import_signatures(self, bundles: Sequence[str | os.PathLike[str]]) -> dict[str, list[str]]:
        """Merge signed bundles into their drafts (distinct keys only, each verified);
        returns version -> key ids added."""
        return import_bundles(self, bundles)

    @staticmethod
    def release_blobs(manifest: ReleaseManifest) -> dict[str, MetaFile]:
        """sha256 -> MetaFile of every blob a release needs (artifacts/ciphertexts, patches)."""
        return release_blobs(manifest)

    def list_releases(self) -> list[dict[str, Any]]:
        """Every draft and published release, ascending by version."""
        return list_releases(self)

    def show_release(self, version: str) -> dict[str, Any]:
        """The manifest (as signed) with its state, signers and, once published, its hash."""
        return show_release(self, version)

    # -- releases: publish, withdraw -----------------------------------------------------------------

    @_mutation
    def publish_release(
        self, version: str, index_key: Signer, *, now: _dt.datetime | None = None
    ) -> Index:
        """Publish a draft signed by the release threshold; re-sign the index (version+1)."""
        now = norm_time(now)
        if version in self.published():
            raise ConflictError(f"release {version} is already published")
        env = self.draft_envelope(version)
        manifest = env.parse(ReleaseManifest.from_dict)
        state = self.verifier(now=now)
        state.root.verify_role(env, "release")
        check_release_blobs(self, version, manifest)
        data = env.raw
        entry = MetaFile.of(data)

        def add(chans: dict[str, IndexChannel]) -> dict[str, IndexChannel]:
            ch = chans.get(manifest.channel, IndexChannel({}))
            chans[manifest.channel] = IndexChannel(
                {**ch.releases, version: entry}, ch.withdrawn, ch.extra
            )
            return chans

        index, index_data, state = self._next_index(index_key, now, add, state=state)
        state.update_manifest(version, data)
        draft_blobs = self.draft_blobs_dir(version)
        for sha in release_blobs(manifest):
            src = draft_blobs / sha
            if not src.is_file():
                continue
            if self.blob_path(sha).is_file():
                src.unlink()
            else:
                replace(src, self.blob_path(sha), sync=False)
        fsync_dir(self.blobs_dir)
        _publish_served(self.draft_dir(version) / "served", self.path)
        write_atomic(self.manifest_path(version), data)
        write_atomic(self.index_path, index_data)
        shutil.rmtree(self.draft_dir(version), ignore_errors=True)
        return index

    @_mutation
    def yank(
        self,
        version: str,
        index_key: Signer,
        reason: str = "",
        *,
        now: _dt.datetime | None = None,
    ) -> Index:
        """Withdraw a published release in a new index version (its files stay)."""
        if len(reason) > 1024:
            raise ValueError("a withdrawal reason is at most 1024 characters")
        published = self.published()
        if version not in published:
            raise NoSuchVersionError(f"release {version} is not published")
        channel, state = published[version]
        if state == "withdrawn":
            raise ConflictError(f"release {version} is already withdrawn")

        def withdraw(chans: dict[str, IndexChannel]) -> dict[str, IndexChannel]:
            ch = chans[channel]
            releases = {v: m for v, m in ch.releases.items() if v != version}
            chans[channel] = IndexChannel(releases, {**ch.withdrawn, version: reason}, ch.extra)
            return chans

        index, data, _ = self._next_index(index_key, norm_time(now), withdraw)
        write_atomic(self.index_path, data)
        return index
