"""The release builder: artifact files in, an unsigned draft out.

A build (:meth:`ReleaseBuilder.build`, or :meth:`ReleaseBuilder.abuild` with an async sandbox)
runs in four steps, and nothing appears under ``drafts/`` unless all of them succeed:

1. Check the request: a canonical semver version that exists neither as a draft nor published,
   a known update type, plain channel/platform/arch names, artifacts that exist (a name is its
   file's basename; two the same is a ``ValueError``), ``unpack`` marks that are artifacts with
   an archive suffix, ``delta_from`` versions that are published and below the new one.
2. In a scratch directory under ``.bhsync/tmp/``: pack each directory artifact into
   ``<dirname>.tar`` (:func:`~blackhole_sync.codecs.pack_directory`: deterministic, marked to
   unpack, links refused), list the members of archives marked to unpack
   (:func:`~blackhole_sync.codecs.list_members`), store every artifact as a blob -- zstd
   compressed when that saves bytes (the manifest's ``transfer`` record,
   :func:`~blackhole_sync.codecs.compress_file`), or only its ciphertext when the release is
   encrypted to node keys -- make deltas from earlier published releases, and write the
   unsigned manifest envelope, round-tripped through the strict parser.
   Deltas are between installed bytes (an earlier compressed blob is decompressed first):
   whole-file patches, and per-member patches for unpacked archives (kept only when the set
   beats the whole archive). Each is chosen by
   :func:`~blackhole_sync.codecs.delta.select.select_patch` among the builder's codec table
   (the built-ins plus the plugin codecs it was given) within its
   :class:`~blackhole_sync.codecs.CreateBudget` (2 GiB, 2 x HDiffPatch's CPU); unrelated
   files are recognised by an early probe and get no delta.
3. With a sandbox runner: run the self-test, then the health command, each on a fresh scratch
   tree laid out as a node installs the release (archives extracted by
   :func:`~blackhole_sync.codecs.extract_archive`, the node's own extraction).
4. Under the repository lock, rename the scratch directory to ``drafts/<version>/``.

Setuid/setgid/sticky artifacts are an :class:`UnsafePathError`. Encrypted artifacts get no
deltas (a patch would reveal what changed). A configuration, schema or protocol release
without files keeps the files of the newest published release below it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import anyio
import anyio.to_thread
from attrs import evolve, frozen

from .._fsutil import fsync_dir, fsync_file, hash_file, remove_tree, replace
from ..codecs import (
    CreateBudget,
    DeltaPatch,
    PatchCodec,
    archive_format,
    codec_table,
    compress_file,
    decompress_file,
    encrypt_file,
    extract_archive,
    extract_files,
    list_members,
    make_delta,
    member_deltas,
    pack_directory,
)
from ..documents import (
    UPDATE_TYPES,
    Artifact,
    Command,
    Compatibility,
    ConfigChange,
    DeltaRecord,
    Envelope,
    MetaFile,
    Migration,
    ProtocolInfo,
    PublicKey,
    ReleaseManifest,
    SchemaInfo,
    Transfer,
    Unpack,
    check_safe_name,
    parse_version,
    sort_versions,
    version_key,
)
from ..errors import ConflictError, LengthOrHashMismatchError, NoSuchVersionError, UnsafePathError
from ..fetch import Locator, PluginHost
from .blobs import store_blob
from .layout import RepoLayout, check_name, norm_time
from .progress import NULL_PROGRESS, BuildProgress, report_step

__all__ = [
    "AUTO_DELTA_COUNT",
    "DELTA_MAX_RATIO_BP",
    "BuildOptions",
    "ReleaseBuilder",
    "SandboxRunner",
    "SyncSandboxRunner",
    "plugin_codecs",
    "transport_companions",
    "transport_locators",
]

#: ``delta_from="auto"``: how many recent published versions get a patch.
AUTO_DELTA_COUNT = 3
#: A patch is kept only when smaller than this fraction (basis points) of the full file.
DELTA_MAX_RATIO_BP = 8000

#: A sandbox step: given a scratch tree laid out as a node installs it and a command, run it;
#: raise (``SandboxError``) on failure. ``blackhole_sync.node.run_sandbox_test`` fits once its
#: data directory is bound.
SandboxRunner = Callable[[Path, Command], Awaitable[None]]
SyncSandboxRunner = Callable[[Path, Command], None]

DeltaFrom = Sequence[str] | Literal["auto"] | None

log = logging.getLogger(__name__)


@frozen(kw_only=True)
class BuildOptions:
    """Everything a release says besides its version and artifact files (all optional)."""

    update_type: str = "binary"
    channel: str = "stable"
    critical: bool = False
    priority: int = 0
    #: versions to make patches from; ``"auto"``: the :data:`AUTO_DELTA_COUNT` newest below
    delta_from: DeltaFrom = None
    #: node public keys (or their hex) to encrypt every artifact to
    encrypt_to: Sequence[PublicKey | str] = ()
    #: artifacts (as given) that are archives to unpack on install
    unpack: Sequence[str | os.PathLike[str]] = ()
    platform: str = "any"
    arch: str = "any"
    self_test: Command | None = None
    health: Command | None = None
    migrations: Sequence[Migration] = ()
    schema: SchemaInfo | None = None
    config_changes: Sequence[ConfigChange] = ()
    protocol: ProtocolInfo | None = None
    compatibility: Compatibility | None = None
    notes: str = ""
    #: the manifest's creation time (default: now)
    now: _dt.datetime | None = None
    #: ship artifacts zstd-compressed when that saves bytes (nodes older than the ``transfer``
    #: field cannot fetch such an artifact whole: turn this off while they remain)
    compress: bool = True


def plugin_codecs(plugins: PluginHost) -> dict[str, PatchCodec]:
    """The built-in patch codecs plus those ``plugins`` register (``blackhole_sync_patch_codecs``)."""
    return codec_table(c for result in plugins.hook.blackhole_sync_patch_codecs() for c in result)


def transport_locators(plugins: PluginHost) -> Callable[[Path], list[Locator]]:
    """``locate(path)`` of every installed transport that declares the ``locate`` capability
    (an IPFS CID, a BitTorrent info hash): the builder records them in the signed manifest.
    Offline: transports are built (guarded) but never started."""
    from ..fetch import CAP_LOCATE, TransportPool

    locating = [t for t in TransportPool.from_plugins(plugins).usable() if CAP_LOCATE in t.capabilities]

    def locate(path: Path) -> list[Locator]:
        return [locator for transport in locating for locator in transport.locate(path)]

    return locate


#: Where a companion file may go: one directory below the repository root, a plain name.
_COMPANION = re.compile(r"[a-z][a-z0-9_-]{0,31}/[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


def transport_companions(plugins: PluginHost) -> Callable[[Path], dict[str, bytes]]:
    """``companions(path)`` of every installed transport that registers some
    (:attr:`~blackhole_sync.fetch.TransportSpec.companions`: a BitTorrent ``.torrent``): files
    a repository serves next to a blob, by relative path. Offline."""
    makers = [spec.companions for spec in plugins.transport_specs() if spec.companions]

    def companions(path: Path) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for make in makers:
            for relpath, data in make(path).items():
                if not _COMPANION.fullmatch(relpath) or relpath.startswith("blobs/"):
                    raise ValueError(f"a transport named a companion file {relpath!r}")
                out[relpath] = bytes(data)
        return out

    return companions


@frozen
class _Prepared:
    """A built draft in a scratch directory, before it is moved into ``drafts/``."""

    version: str
    workdir: Path  # holds manifest.json and blobs/
    manifest: ReleaseManifest
    plaintexts: Mapping[str, Path]  # artifact name -> plaintext file (for the sandbox)


class ReleaseBuilder:
    """Builds unsigned drafts in one repository (see the module docstring for the steps).

    ``codecs``: the patch codecs deltas are chosen from (the built-ins when None; pass
    ``codec_table(plugin codecs)`` to offer plugin codecs too); ``budget``: the create-time
    CPU and memory budget of each delta; ``progress``: told each long step as it starts and
    ends (:mod:`~blackhole_sync.release.progress`); ``locate``: the locators of a stored blob
    (:func:`transport_locators`), recorded in each artifact's and each delta patch's
    ``locators`` before signing; ``companions``: files served next to a blob
    (:func:`transport_companions`), kept in the draft's ``served/`` and published with the
    blobs.

    Scratch files live under ``.bhsync/tmp/`` for the build's duration only: removed when it
    fails, and what a killed build left is removed by the next build
    (:meth:`~blackhole_sync.release.layout.RepoLayout.scratch_session`).
    """

    def __init__(
        self,
        layout: RepoLayout,
        *,
        codecs: Mapping[str, PatchCodec] | None = None,
        budget: CreateBudget | None = None,
        progress: BuildProgress | None = None,
        locate: Callable[[Path], Sequence[Locator]] | None = None,
        companions: Callable[[Path], Mapping[str, bytes]] | None = None,
    ) -> None:
        self.layout = layout
        self.locate = locate
        self.companions = companions
        self.progress = progress or NULL_PROGRESS
        self.codecs = codec_table() if codecs is None else dict(codecs)
        self.budget = budget or CreateBudget()

    def build(
        self,
        version: str,
        artifacts: Sequence[str | os.PathLike[str]],
        options: BuildOptions | None = None,
        *,
        sandbox: SyncSandboxRunner | None = None,
    ) -> ReleaseManifest:
        """Build the draft of ``version``; ``sandbox`` runs the self-test and health command."""
        with self.layout.scratch_session():
            prepared = self._prepare(version, artifacts, options or BuildOptions())
            try:
                if sandbox is not None:
                    for command in self._sandbox_commands(prepared):
                        with self._scratch_tree(prepared) as tree, self._sandbox_step(command):
                            sandbox(tree, command)
                self._finalize(prepared)
            finally:
                shutil.rmtree(prepared.workdir, ignore_errors=True)
        return prepared.manifest

    async def abuild(
        self,
        version: str,
        artifacts: Sequence[str | os.PathLike[str]],
        options: BuildOptions | None = None,
        *,
        sandbox: SandboxRunner | None = None,
    ) -> ReleaseManifest:
        """:meth:`build` with an async sandbox step; the file work runs in a worker thread."""
        opts = options or BuildOptions()
        with self.layout.scratch_session():
            prepared = await anyio.to_thread.run_sync(
                lambda: self._prepare(version, artifacts, opts)
            )
            try:
                if sandbox is not None:
                    for command in self._sandbox_commands(prepared):
                        with self._scratch_tree(prepared) as tree, self._sandbox_step(command):
                            await sandbox(tree, command)
                await anyio.to_thread.run_sync(self._finalize, prepared)
            finally:
                shutil.rmtree(prepared.workdir, ignore_errors=True)
        return prepared.manifest

    def _sandbox_step(self, command: Command) -> contextlib.AbstractContextManager[None]:
        return report_step(self.progress, "sandbox", " ".join(command.argv)[:80])

    # -- step 1: the request --------------------------------------------------------------------

    def _check_new_version(self, version: str) -> None:
        parse_version(version, "release version")
        if self.layout.draft_dir(version).exists():
            raise ConflictError(f"release {version} exists as a draft")
        if version in self.layout.published() or self.layout.manifest_path(version).exists():
            raise ConflictError(f"release {version} is already published")

    def _check_request(
        self, version: str, sources: Sequence[Path], opts: BuildOptions
    ) -> set[Path]:
        """Refuse a bad request before anything is written; the resolved unpack marks."""
        self._check_new_version(version)
        if opts.update_type not in UPDATE_TYPES:
            raise ValueError(
                f"update type {opts.update_type!r} is not one of {', '.join(UPDATE_TYPES)}"
            )
        check_name(opts.channel, "channel")
        check_name(opts.platform, "platform")
        check_name(opts.arch, "arch")
        if not 0 <= opts.priority <= 1000:
            raise ValueError("priority must be 0..1000")
        if not sources and (
            opts.update_type == "binary"
            or not (opts.migrations or opts.config_changes or opts.protocol)
        ):
            raise ValueError(
                "a release needs at least one artifact (configuration, schema and protocol "
                "releases may carry only their changes)"
            )
        for src in sources:
            if not src.exists():
                raise ValueError(f"artifact {src} does not exist")
            if not (src.is_file() or src.is_dir()):
                raise ValueError(f"artifact {src} is not a file or directory")
        unpack = {Path(u).resolve() for u in opts.unpack}
        known = {s.resolve() for s in sources}
        for u in unpack:
            if u not in known:
                raise ValueError(f"--unpack {u} is not one of the artifacts")
        return unpack

    # -- step 2: artifacts, blobs, deltas, manifest ---------------------------------------------

    def _prepare(
        self, version: str, artifacts: Sequence[str | os.PathLike[str]], opts: BuildOptions
    ) -> _Prepared:
        """Steps 1 and 2: the draft in a scratch directory (the caller removes it)."""
        now = norm_time(opts.now)
        sources = [Path(a) for a in artifacts]
        unpack = self._check_request(version, sources, opts)
        origins = self._delta_origins(version, opts.channel, opts.delta_from)
        workdir = Path(tempfile.mkdtemp(prefix=f"build-{version}-", dir=self.layout.tmp_dir))
        try:
            blobs = workdir / "blobs"
            blobs.mkdir()
            packed = workdir / "packed"
            packed.mkdir()
            built: list[Artifact] = []
            plaintexts: dict[str, Path] = {}
            for src in sources:
                name = check_safe_name(
                    f"{src.resolve().name}.tar" if src.is_dir() else src.name, f"artifact {src}"
                )
                if name in plaintexts:
                    raise ValueError(f"two artifacts are named {name!r}")
                artifact, plaintexts[name] = self._artifact(src, name, unpack, opts, packed, blobs)
                locators = self._locate_blob(blobs / artifact.blob.sha256, workdir)
                if locators is not None:
                    artifact = evolve(artifact, locators=locators)
                built.append(artifact)
            if not sources:
                # A configuration, schema or protocol release without files keeps the files
                # of the newest published release below it: nodes keep running the same
                # binaries (and fetch nothing: they already hold those bytes).
                previous = self._delta_origins(version, opts.channel, "auto")[:1]
                if previous:
                    built = list(previous[0][1].artifacts)
            deltas: list[DeltaRecord] = []
            if not opts.encrypt_to and sources:
                for origin_version, origin in origins:
                    deltas.extend(
                        self._make_deltas(origin_version, origin, built, plaintexts, blobs)
                    )
            for i, record in enumerate(deltas):  # patches travel like artifacts (a swarm)
                locators = self._locate_blob(blobs / record.patch.sha256, workdir)
                if locators is not None:
                    deltas[i] = evolve(record, locators=locators)
            manifest = ReleaseManifest(
                version,
                opts.update_type,
                opts.channel,
                tuple(built),
                now,
                opts.critical,
                opts.priority,
                tuple(deltas),
                tuple(opts.migrations),
                opts.schema,
                tuple(opts.config_changes),
                opts.protocol,
                opts.compatibility,
                opts.self_test,
                opts.health,
                opts.notes,
            )
            env = Envelope.of(manifest.to_dict(), ())
            # Round trip through the strict parser: what we write is what nodes will read.
            ReleaseManifest.from_dict(Envelope.from_bytes(env.raw, expected_type="release").signed)
            (workdir / "manifest.json").write_bytes(env.raw)
            return _Prepared(version, workdir, manifest, plaintexts)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _locate_blob(self, blob: Path, workdir: Path) -> tuple[dict[str, str], ...] | None:
        """Where the stored ``blob`` (an artifact's or a patch's) will be found, signed with
        the manifest (None without ``locate``); its companion files (a ``.torrent``) go to the
        draft's ``served/``, published next to the blobs."""
        locators = None
        if self.locate is not None:
            locators = tuple({"kind": x.kind, "value": x.value} for x in self.locate(blob))
        if self.companions is not None:
            for relpath, data in self.companions(blob).items():
                served = workdir / "served" / relpath
                served.parent.mkdir(parents=True, exist_ok=True)
                served.write_bytes(data)
        return locators

    def _artifact(
        self,
        src: Path,
        name: str,
        unpack: set[Path],
        opts: BuildOptions,
        packed: Path,
        blobs: Path,
    ) -> tuple[Artifact, Path]:
        """One artifact record, its blob stored in ``blobs``; and its plaintext file."""
        progress = self.progress
        if src.is_dir():
            plain = packed / name
            with report_step(progress, "packing", name):
                pack_directory(src, plain)
            mode, fmt = 0o644, "tar"
        else:
            plain = src.resolve()
            st_mode = os.stat(plain).st_mode
            if st_mode & 0o7000:
                raise UnsafePathError(f"artifact {src} is setuid/setgid/sticky")
            mode = stat.S_IMODE(st_mode)
            fmt = archive_format(name) if plain in unpack else ""
        size = os.path.getsize(plain)
        unpack_record = None
        if fmt:
            with report_step(progress, "listing", name, size):
                unpack_record = Unpack(fmt, list_members(plain, fmt))
        encryption = transfer = None
        if opts.encrypt_to:
            tmp_ct = blobs / f".ct-{secrets.token_hex(6)}"
            with report_step(progress, "encrypting", name, size):
                encryption = encrypt_file(plain, tmp_ct, opts.encrypt_to)
            replace(tmp_ct, blobs / encryption.ciphertext.sha256, sync=False)
            with report_step(progress, "hashing", name, size):
                digest, length = hash_file(plain)
            meta = MetaFile(length, {"sha256": digest})
        else:
            tmp_z = blobs / f".z-{secrets.token_hex(6)}"
            packed_blob = None
            if opts.compress:
                with report_step(progress, "compressing", name, size):
                    packed_blob = compress_file(plain, tmp_z)
            if packed_blob is None:
                with report_step(progress, "hashing", name, size):
                    meta = store_blob(plain, blobs)
            else:
                fsync_file(tmp_z)
                replace(tmp_z, blobs / packed_blob.sha256, sync=False)
                with report_step(progress, "hashing", name, size):
                    digest, length = hash_file(plain)
                meta = MetaFile(length, {"sha256": digest})
                transfer = Transfer(packed_blob.codec, packed_blob.length, packed_blob.sha256)
        artifact = Artifact(
            name,
            meta.length,
            dict(meta.hashes),
            mode,
            opts.platform,
            opts.arch,
            unpack_record,
            (),
            encryption,
            transfer=transfer,
        )
        return artifact, plain

    def _delta_origins(
        self, version: str, channel: str, delta_from: DeltaFrom
    ) -> list[tuple[str, ReleaseManifest]]:
        """The published releases to make patches from, newest first, with their manifests."""
        if delta_from is None:
            return []
        published = self.layout.published()
        if delta_from == "auto":
            below = [
                v
                for v, (ch, state) in published.items()
                if ch == channel and state == "published" and version_key(v) < version_key(version)
            ]
            chosen = sort_versions(below, reverse=True)[:AUTO_DELTA_COUNT]
        else:
            chosen = []
            for v in dict.fromkeys(delta_from):
                parse_version(v, "delta_from")
                if v not in published or published[v][1] != "published":
                    raise NoSuchVersionError(f"--delta-from {v}: no such published release")
                if version_key(v) >= version_key(version):
                    raise ValueError(f"--delta-from {v} is not below {version}")
                chosen.append(v)
        return [
            (
                v,
                Envelope.from_bytes(self.layout.manifest_bytes(v), expected_type="release").parse(
                    ReleaseManifest.from_dict
                ),
            )
            for v in chosen
        ]

    @staticmethod
    def _pays_off(patch_length: int, full_length: int) -> bool:
        return patch_length * 10_000 < full_length * DELTA_MAX_RATIO_BP

    @contextlib.contextmanager
    def _installed_bytes(self, art: Artifact) -> Iterator[Path | None]:
        """A published artifact's installed bytes: its blob, or its transfer blob decoded into
        scratch space and checked against the manifest. None when the repository lacks it."""
        if art.transfer is None:
            path = self.layout.blob_path(art.sha256)
            yield path if path.is_file() else None
            return
        blob = self.layout.blob_path(art.transfer.sha256)
        if not blob.is_file():
            yield None
            return
        scratch = Path(tempfile.mkdtemp(prefix="installed-", dir=self.layout.tmp_dir))
        try:
            out = scratch / "installed"
            got = decompress_file(blob, out, codec=art.transfer.codec, output_length=art.length)
            if got != (art.sha256, art.length):
                raise LengthOrHashMismatchError(f"{art.name}: blob does not decode to its bytes")
            yield out
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _make_deltas(
        self,
        origin_version: str,
        origin: ReleaseManifest,
        built: Sequence[Artifact],
        plaintexts: Mapping[str, Path],
        blobs: Path,
    ) -> list[DeltaRecord]:
        out: list[DeltaRecord] = []
        for art in built:
            old = next(
                (
                    a
                    for a in origin.artifacts
                    if a.name == art.name and a.platform == art.platform and a.arch == art.arch
                ),
                None,
            )
            if old is None or old.encryption is not None or old.sha256 == art.sha256:
                continue
            with (
                report_step(self.progress, "diffing", f"{art.name} against {origin_version}",
                            art.length),
                self._installed_bytes(old) as old_blob,
            ):  # fmt: skip
                if old_blob is None:
                    continue
                if art.unpack is None and old.unpack is None:
                    result = make_delta(
                        old_blob, plaintexts[art.name], table=self.codecs, budget=self.budget
                    )
                    sel = result.selection
                    patch = result.delta
                    log.info(
                        "delta %s %s -> new: %s (%s; sizes %s, CPU %.2f s)",
                        art.name, origin_version, sel.codec or "none", sel.reason,
                        dict(sel.sizes), sel.total_cpu_s,
                    )  # fmt: skip
                    if patch is None or not self._pays_off(patch.patch_length, art.blob.length):
                        continue
                    out.append(_record(art.name, origin_version, patch, blobs, None))
                elif art.unpack is not None and old.unpack is not None:
                    patches = self._member_patches(old_blob, old.unpack, plaintexts[art.name], art)
                    if patches is not None:
                        out += [_record(art.name, origin_version, p, blobs, m) for m, p in patches]
        return out

    def _member_patches(
        self, old_blob: Path, old_unpack: Unpack, new_plain: Path, art: Artifact
    ) -> list[tuple[str, DeltaPatch]] | None:
        """Per-member patches from an old unpacked archive; None when they do not pay off.

        A node rebuilds the tree from its installed members: every changed member needs a
        patch, and a member with none (new, or unpatchable) ships whole as an "identity"
        patch. The set is kept when its total beats the whole archive.
        """
        assert art.unpack is not None
        with tempfile.TemporaryDirectory(dir=self.layout.tmp_dir) as scratch:
            old_dir, new_dir = Path(scratch, "old"), Path(scratch, "new")
            old_dir.mkdir()
            new_dir.mkdir()
            old_files = extract_files(old_blob, old_unpack.format, old_dir)
            new_files = extract_files(new_plain, art.unpack.format, new_dir)
            results = member_deltas(
                {k: str(v) for k, v in old_files.items()},
                {k: str(v) for k, v in new_files.items()},
                table=self.codecs,
                memory_budget=self.budget.memory,
                keep_larger=True,
            )
            patches: list[tuple[str, DeltaPatch]] = []
            for path, r in sorted(results.items()):
                if r.patch is not None:
                    patches.append((path, r.patch))
                elif r.status == "full":
                    data = new_files[path].read_bytes()
                    patches.append((path, DeltaPatch.from_bytes(b"", data, data, "identity")))
        if not self._pays_off(sum(p.patch_length for _, p in patches), art.blob.length):
            return None
        return patches

    # -- step 3: the sandbox --------------------------------------------------------------------

    @staticmethod
    def _sandbox_commands(prepared: _Prepared) -> list[Command]:
        return [c for c in (prepared.manifest.self_test, prepared.manifest.health) if c]

    @contextlib.contextmanager
    def _scratch_tree(self, prepared: _Prepared) -> Iterator[Path]:
        """A fresh tree laid out as a node installs the release; removed afterwards."""
        scratch = Path(tempfile.mkdtemp(prefix="sandbox-", dir=self.layout.tmp_dir))
        try:
            tree = scratch / "tree"
            tree.mkdir()
            for n, art in enumerate(prepared.manifest.artifacts):
                plain = prepared.plaintexts.get(art.name)
                if plain is None:  # kept from the previous release: its blob, when readable
                    if art.encryption is not None:
                        continue
                    plain = self.layout.blob_path(art.sha256)
                    if art.transfer is not None:
                        plain = scratch / f"installed-{n}"
                        blob = self.layout.blob_path(art.transfer.sha256)
                        decompress_file(
                            blob, plain, codec=art.transfer.codec, output_length=art.length
                        )
                if art.unpack is not None:
                    members = scratch / f"unpacked-{n}"
                    extract_archive(plain, art.unpack, members)
                    for top in sorted(os.listdir(members)):
                        if os.path.lexists(tree / top):
                            raise UnsafePathError(f"{art.name}: {top!r} collides with another")
                        os.rename(members / top, tree / top)
                else:
                    shutil.copyfile(plain, tree / art.name)
                    os.chmod(tree / art.name, art.mode)
            yield tree
        finally:
            remove_tree(scratch)

    # -- step 4: the draft ------------------------------------------------------------------------

    def _finalize(self, prepared: _Prepared) -> None:
        with self.layout.locked():
            target = self.layout.draft_dir(prepared.version)
            shutil.rmtree(prepared.workdir / "packed", ignore_errors=True)
            fsync_file(prepared.workdir / "manifest.json")
            fsync_dir(prepared.workdir / "blobs")
            if target.exists() or prepared.version in self.layout.published():
                raise ConflictError(f"release {prepared.version} exists")
            try:
                os.rename(prepared.workdir, target)
            except OSError as exc:
                raise ConflictError(f"release {prepared.version} exists") from exc
            fsync_dir(self.layout.drafts_dir)


def _record(
    name: str, origin: str, patch: DeltaPatch, blobs: Path, member: str | None
) -> DeltaRecord:
    """The manifest's record of a patch, its bytes stored in ``blobs`` under their sha256."""
    target = blobs / patch.patch_sha256
    if not target.exists():
        patch.write(target)
    return DeltaRecord(
        name,
        origin,
        MetaFile(patch.from_length, {"sha256": patch.from_sha256}),
        MetaFile(patch.patch_length, {"sha256": patch.patch_sha256}),
        patch.to_length,
        patch.codec,
        member,
    )
