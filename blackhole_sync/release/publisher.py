"""The publishing side: repository, release builder, threshold signing, index, rotation.

A repository is a directory of static files (ARCHITECTURE.md section 5) plus a private part
that is never served::

    REPO/root.json                 the newest root
    REPO/<N>.root.json             every root version
    REPO/index.json                the index (signed by the online index key)
    REPO/manifests/<version>.json  published release manifests (canonical envelope bytes)
    REPO/blobs/<sha256>            artifacts, ciphertexts and patches of published releases
    REPO/.bhsync/config.json       expiry periods and network id (``repo init`` stores them)
    REPO/.bhsync/drafts/<version>/ manifest.json (the envelope collecting signatures), blobs/
    REPO/.bhsync/tmp/              scratch space; always emptied again

Every write is atomic (temporary file in the same directory, fsync, ``os.replace``, fsync of
the directory); blobs are content-addressed. Before anything signed is written, it is checked
by a fresh :class:`~blackhole_sync.documents.trust.TrustedState` walking ``1.root.json`` ..
``N.root.json``: the publisher never writes what a node would refuse.

A release is *published* when the index lists it (in ``releases`` or ``withdrawn``); the index
is written last, so a crash mid-publish leaves a draft that can be published again.

Refusals (what the command line maps them to):

* :class:`SignatureError` (exit 3): ``sign_with`` below the root threshold (init), below the old
  or the new root threshold (rotate), a revocation that leaves a role below its threshold, a
  key outside the release role (sign), publishing below the release threshold, an index key
  outside the index role. Nothing is written.
* :class:`ConflictError` (exit 1): an existing repository (init), a version that exists as a
  draft or published (build), signing or publishing a published release, yanking twice.
* :class:`NoSuchVersionError` (exit 1): no such draft / release, ``delta_from`` not published.
* :class:`FormatError` (exit 3): a version that is not canonical semver.
* :class:`UnsafePathError` (exit 3): setuid/setgid/sticky artifacts or archive members, links
  or special files in a directory or archive, unsafe member names.
* ``ValueError`` (exit 2): usage errors -- two artifacts with the same name, a missing
  artifact file, an unknown update type, an impossible threshold, an ``--unpack`` path that is
  not an artifact or not a known archive type.
* :class:`ConfigurationError` (exit 1): the path is not a repository.

Directories given as artifacts are packed into a deterministic, uncompressed tar named
``<dirname>.tar`` (sorted entries, mtime 0, owner 0) and marked to unpack; symbolic links
inside are refused.

Index key rotation: after ``rotate(index_key=NEW)`` the served index is still signed by the
old key, so a node that walks to the new root refuses it until it is re-signed. Pass the new
index private key in ``sign_with`` (it is then re-signed at once) or run
``repo refresh --index-key NEW``; nodes drop their index floor on an index-key change
(fast-forward recovery).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Concatenate, Literal, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import semver
from attrs import frozen

from .._fsutil import fsync_dir, fsync_file, write_atomic
from ..codecs import delta as _delta, encrypt_file
from ..documents import (
    UPDATE_TYPES,
    Artifact,
    Command,
    Compatibility,
    ConfigChange,
    DeltaRecord,
    Envelope,
    Index,
    IndexChannel,
    Member,
    MetaFile,
    Migration,
    PrivateKey,
    ProtocolInfo,
    PublicKey,
    ReleaseManifest,
    Role,
    Root,
    SchemaInfo,
    TrustedState,
    Unpack,
    check_safe_name,
    check_safe_path,
    format_time,
    parse_version,
)
from ..errors import (
    ConfigurationError,
    ConflictError,
    FormatError,
    LengthOrHashMismatchError,
    NoSuchVersionError,
    SecurityError,
    SignatureError,
    UnsafePathError,
)

__all__ = [
    "AUTO_DELTA_COUNT",
    "DELTA_MAX_RATIO_BP",
    "BlobStore",
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

#: ``delta_from="auto"``: how many recent published versions get a patch.
AUTO_DELTA_COUNT = 3
#: A patch is kept only when smaller than this fraction (basis points) of the full file.
DELTA_MAX_RATIO_BP = 8000
_CHUNK = 1024 * 1024
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_MAX_MEMBERS = 100_000
_ARCHIVE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".tar.xz", "tar.xz"),
    (".txz", "tar.xz"),
    (".tar.bz2", "tar.bz2"),
    (".tbz2", "tar.bz2"),
    (".tar", "tar"),
    (".zip", "zip"),
)

#: A sandbox step: given a scratch tree laid out as a node installs it and a command, run it;
#: raise (``SandboxError``) on failure. ``blackhole_sync.node.sandbox.run_sandbox_test`` fits once
#: its data directory is bound.
SandboxRunner = Callable[[Path, Command], Awaitable[None]]
SyncSandboxRunner = Callable[[Path, Command], None]


# -- small file helpers -----------------------------------------------------------------------


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def _norm_time(value: _dt.datetime | None) -> _dt.datetime:
    if value is None:
        return _now()
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return value.astimezone(_dt.UTC).replace(microsecond=0)


def _read_limited(path: Path, cap: int) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise FormatError(f"{path.name}: larger than {cap} bytes")
    return data


def _hash_file(path: Path) -> MetaFile:
    digest = hashlib.sha256()
    length = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            length += len(chunk)
    return MetaFile(length, {"sha256": digest.hexdigest()})


def _hash_stream(fh: IO[bytes], out: IO[bytes] | None = None) -> MetaFile:
    digest = hashlib.sha256()
    length = 0
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
        length += len(chunk)
        if out is not None:
            out.write(chunk)
    return MetaFile(length, {"sha256": digest.hexdigest()})


def _store_blob(src: Path, blobs: Path) -> MetaFile:
    """Copy ``src`` into ``blobs/<sha256>`` (hashing while copying)."""
    tmp = blobs / f".in-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fin:
            meta = _hash_stream(fin, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, blobs / meta.sha256)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return meta


def _version_key(version: str) -> semver.Version:
    return semver.Version.parse(version)


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(f"{what} {value!r}: use lowercase letters, digits, '.', '_' or '-'")
    return value


# -- archives (the publisher's own, trusted but still checked) -----------------------------------


def archive_format(name: str) -> str:
    """The unpack format of an archive file name (``ValueError`` if none fits)."""
    lower = name.lower()
    for suffix, fmt in _ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return fmt
    raise ValueError(f"{name!r} is not a tar or zip archive (cannot mark it to unpack)")


def _member_path(raw: str, is_dir: bool) -> str | None:
    name = raw.rstrip("/") if is_dir else raw
    while name.startswith("./"):
        name = name[2:]
    if is_dir and name in ("", "."):
        return None
    return check_safe_path(name, f"archive member {raw!r}")


def _check_member_mode(mode: int, what: str) -> int:
    if mode & 0o7000:
        raise UnsafePathError(f"{what}: setuid/setgid/sticky bits are not allowed")
    return mode & 0o777


def _iter_archive(
    path: Path, fmt: str
) -> Iterator[tuple[str, str, int, Callable[[], IO[bytes]] | None]]:
    """(member path, "file"|"dir", mode, opener) for each entry; links and specials refused."""
    if fmt == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                unix = info.external_attr >> 16 if info.create_system == 3 else 0
                ftype = stat.S_IFMT(unix)
                if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                    raise UnsafePathError(f"archive member {info.filename!r} is a link or special")
                is_dir = info.is_dir() or ftype == stat.S_IFDIR
                name = _member_path(info.filename, is_dir)
                if name is None:
                    continue
                mode = stat.S_IMODE(unix) if unix else (0o755 if is_dir else 0o644)
                mode = _check_member_mode(mode, f"archive member {name!r}")
                if is_dir:
                    yield name, "dir", mode, None
                else:

                    def zopen(i: zipfile.ZipInfo = info) -> IO[bytes]:
                        return zf.open(i)

                    yield name, "file", mode, zopen
        return
    modes: dict[str, Literal["r:", "r:gz", "r:xz", "r:bz2"]] = {
        "tar": "r:",
        "tar.gz": "r:gz",
        "tar.xz": "r:xz",
        "tar.bz2": "r:bz2",
    }
    with tarfile.open(path, modes[fmt]) as tf:
        for tinfo in tf:
            if not (tinfo.isreg() or tinfo.isdir()) or tinfo.issparse():
                raise UnsafePathError(f"archive member {tinfo.name!r} is a link or special file")
            is_dir = tinfo.isdir()
            name = _member_path(tinfo.name, is_dir)
            if name is None:
                continue
            mode = _check_member_mode(tinfo.mode, f"archive member {name!r}")
            if is_dir:
                yield name, "dir", mode, None
            else:

                def opener(i: tarfile.TarInfo = tinfo) -> IO[bytes]:
                    handle: IO[bytes] | None = tf.extractfile(i)
                    if handle is None:  # pragma: no cover - regular members have data
                        raise FormatError(f"archive member {i.name!r} has no data")
                    return handle

                yield name, "file", mode, opener


def list_members(path: Path, fmt: str) -> tuple[Member, ...]:
    """The manifest's member list of an archive: path, mode, type, length and sha256."""
    members: list[Member] = []
    seen: set[str] = set()
    for name, kind, mode, opener in _iter_archive(path, fmt):
        if name in seen:
            raise UnsafePathError(f"archive member {name!r} appears twice")
        seen.add(name)
        if len(members) >= _MAX_MEMBERS:
            raise ValueError(f"archive has more than {_MAX_MEMBERS} members")
        if kind == "dir" or opener is None:
            members.append(Member(name, mode, "dir"))
            continue
        with opener() as fh:
            meta = _hash_stream(fh)
        members.append(Member(name, mode, "file", meta.length, dict(meta.hashes)))
    return tuple(members)


def _extract_files(path: Path, fmt: str, dest: Path) -> dict[str, Path]:
    """Write each file member to ``dest/<n>`` (numbered, never by name); map path -> file."""
    out: dict[str, Path] = {}
    for n, (name, kind, _mode, opener) in enumerate(_iter_archive(path, fmt)):
        if kind != "file" or opener is None:
            continue
        target = dest / str(n)
        with opener() as fh, open(target, "wb") as fo:
            shutil.copyfileobj(fh, fo, _CHUNK)
        out[name] = target
    return out


def _extract_tree(path: Path, fmt: str, dest: Path) -> None:
    """Lay an archive's members out under ``dest`` (paths were checked by list_members)."""
    for name, kind, mode, opener in _iter_archive(path, fmt):
        target = dest / name
        if kind == "dir" or opener is None:
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, mode | 0o700)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as fh, open(target, "xb") as fo:
            shutil.copyfileobj(fh, fo, _CHUNK)
        os.chmod(target, mode)


def pack_directory(src: Path, dst: Path) -> None:
    """A deterministic uncompressed tar of ``src``'s contents (no links, no special bits)."""

    def entries(base: Path, rel: str) -> Iterator[tuple[Path, str]]:
        for child in sorted(base.iterdir(), key=lambda p: p.name):
            name = f"{rel}{child.name}"
            yield child, name
            if child.is_dir() and not child.is_symlink():
                yield from entries(child, name + "/")

    with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tf:
        for child, name in entries(src, ""):
            check_safe_path(name, f"{src.name}/{name}")
            st = child.lstat()
            if stat.S_ISLNK(st.st_mode) or not (
                stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
            ):
                raise UnsafePathError(f"{child}: links and special files cannot be released")
            mode = _check_member_mode(stat.S_IMODE(st.st_mode), str(child))
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = (
                mode,
                0,
                0,
                0,
                "",
                "",
            )
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = st.st_size
                with open(child, "rb") as fh:
                    tf.addfile(info, fh)


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


# -- configuration ----------------------------------------------------------------------------


@frozen
class RepoConfig:
    """``REPO/.bhsync/config.json``: expiry periods every publish reuses, and the network id."""

    root_expires_days: int = 365
    index_expires_seconds: int = 86_400
    network_id: str = "blackhole"

    def to_dict(self) -> dict[str, Any]:
        return {
            "root_expires_days": self.root_expires_days,
            "index_expires_seconds": self.index_expires_seconds,
            "network_id": self.network_id,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> RepoConfig:
        if not isinstance(obj, dict):
            raise ConfigurationError("repository config.json is not an object")
        try:
            cfg = cls(
                int(obj.get("root_expires_days", 365)),
                int(obj.get("index_expires_seconds", 86_400)),
                str(obj.get("network_id", "blackhole")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"repository config.json: {exc}") from exc
        cfg.check()
        return cfg

    def check(self) -> None:
        if not 1 <= self.root_expires_days <= 36_500:
            raise ValueError("root expiry must be 1..36500 days")
        if not 1 <= self.index_expires_seconds <= 366 * 86_400:
            raise ValueError("index expiry must be 1 second .. 366 days")
        _check_name(self.network_id, "network id")


# -- the repository ------------------------------------------------------------------------------


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


@frozen
class _Prepared:
    """A built draft in a scratch directory, before it is moved into ``drafts/``."""

    version: str
    workdir: Path  # holds manifest.json and blobs/
    manifest: ReleaseManifest
    plaintexts: Mapping[str, Path]  # artifact name -> plaintext file (for the sandbox)


class Repository:
    """A publisher's repository directory. Create with :meth:`init`, open with :meth:`open`."""

    def __init__(self, path: Path, config: RepoConfig) -> None:
        self.path = path
        self.config = config

    # -- paths -----------------------------------------------------------------------------

    @property
    def private_dir(self) -> Path:
        return self.path / ".bhsync"

    @property
    def drafts_dir(self) -> Path:
        return self.private_dir / "drafts"

    @property
    def tmp_dir(self) -> Path:
        return self.private_dir / "tmp"

    @property
    def blobs_dir(self) -> Path:
        return self.path / "blobs"

    @property
    def manifests_dir(self) -> Path:
        return self.path / "manifests"

    @property
    def index_path(self) -> Path:
        return self.path / "index.json"

    def root_path(self, version: int | None = None) -> Path:
        return self.path / ("root.json" if version is None else f"{version}.root.json")

    def manifest_path(self, version: str) -> Path:
        return self.manifests_dir / f"{version}.json"

    def draft_dir(self, version: str) -> Path:
        return self.drafts_dir / version

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository's write lock (``.bhsync/lock``, flock) for a mutation."""
        fd = os.open(self.private_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def blob_path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.blobs_dir / sha256

    # -- create / open -----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        root_keys: Sequence[PublicKey],
        root_threshold: int,
        release_keys: Sequence[PublicKey],
        release_threshold: int,
        index_key: PublicKey | PrivateKey,
        sign_with: Sequence[PrivateKey],
        governance_keys: Sequence[PublicKey] = (),
        governance_threshold: int | None = None,
        root_expires_days: int = 365,
        index_expires_seconds: int = 86_400,
        network_id: str = "blackhole",
        now: _dt.datetime | None = None,
    ) -> Repository:
        """Create a repository: ``1.root.json``, ``root.json``, config, and an empty index.

        The empty index (version 1, channel ``stable``) needs the index private key: it is
        written when ``index_key`` is a :class:`PrivateKey` or that key is in ``sign_with``;
        otherwise the first publish or :meth:`refresh` writes index version 1.
        """
        repo_path = Path(path)
        now = _norm_time(now)
        config = RepoConfig(root_expires_days, index_expires_seconds, network_id)
        config.check()
        if (
            (repo_path / "root.json").exists()
            or (repo_path / ".bhsync").exists()
            or (repo_path / "index.json").exists()
        ):
            raise ConflictError(f"{repo_path} is already a repository")
        index_public = index_key.public_key if isinstance(index_key, PrivateKey) else index_key
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
        root_env = Envelope.sign(root.to_dict(), signers)
        try:
            state = TrustedState(root_env.raw, reference_time=now)
        except SignatureError as exc:
            raise SignatureError(
                f"the new root is not signed by its root threshold: {exc}"
            ) from exc
        index_signer = index_key if isinstance(index_key, PrivateKey) else None
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
        for d in (
            repo.private_dir,
            repo.drafts_dir,
            repo.tmp_dir,
            repo.blobs_dir,
            repo.manifests_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(repo.private_dir, 0o700)
        (repo.private_dir / "lock").touch(0o600)
        write_atomic(repo.private_dir / "config.json", _json(config.to_dict()), mode=0o600)
        write_atomic(repo.root_path(1), root_env.raw)
        write_atomic(repo.root_path(), root_env.raw)
        if index_env is not None:
            write_atomic(repo.index_path, index_env.raw)
        return repo

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Repository:
        repo_path = Path(path)
        cfg_path = repo_path / ".bhsync" / "config.json"
        if not (repo_path / "root.json").is_file() or not cfg_path.is_file():
            raise ConfigurationError(f"{repo_path} is not a blackhole-sync repository")
        try:
            obj = json.loads(_read_limited(cfg_path, 64 * 1024))
        except ValueError as exc:
            raise ConfigurationError(f"{cfg_path}: not JSON") from exc
        repo = cls(repo_path, RepoConfig.from_dict(obj))
        for d in (repo.drafts_dir, repo.tmp_dir, repo.blobs_dir, repo.manifests_dir):
            d.mkdir(parents=True, exist_ok=True)
        return repo

    # -- trusted views of our own files --------------------------------------------------------

    def root_bytes(self) -> bytes:
        return _read_limited(self.root_path(), 512 * 1024)

    def root(self) -> Root:
        return Envelope.from_bytes(self.root_bytes(), expected_type="root").parse(Root.from_dict)

    def index_bytes(self) -> bytes | None:
        if not self.index_path.is_file():
            return None
        return _read_limited(self.index_path, 16 * 1024 * 1024)

    def index(self) -> Index | None:
        data = self.index_bytes()
        if data is None:
            return None
        return Envelope.from_bytes(data, expected_type="index").parse(Index.from_dict)

    def verifier(self, *, now: _dt.datetime | None = None) -> TrustedState:
        """A fresh node's view: root 1, then every ``N.root.json`` up to the newest."""
        state = TrustedState(
            _read_limited(self.root_path(1), 512 * 1024), reference_time=_norm_time(now)
        )
        version = 2
        while self.root_path(version).is_file():
            state.update_root(_read_limited(self.root_path(version), 512 * 1024))
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
            path = self.manifest_path(version)
            if path.is_file():
                state.update_manifest(
                    version, _read_limited(path, 4 * 1024 * 1024), allow_withdrawn=True
                )
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
            path = self.manifest_path(version)
            try:
                state.update_manifest(version, _read_limited(path, 4 * 1024 * 1024))
            except (SecurityError, OSError):
                bad.append(version)
        return sorted(bad, key=semver.Version.parse)

    # -- root rotation -----------------------------------------------------------------------

    def _resolve_keyid(self, root: Root, value: str) -> str:
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
        sign_with: Sequence[PrivateKey],
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
    ) -> Root:
        """Write root version N+1, signed by the old and the new root thresholds.

        Roles not mentioned keep their keys and thresholds; ``revoke`` (key ids, or unique
        prefixes of at least 8 hex digits) removes a key from every role. ``governance_keys=()``
        removes the governance role. A role left with fewer keys than its threshold by a
        revocation: :class:`SignatureError`; an impossible explicit threshold: ``ValueError``.
        """
        now = _norm_time(now)
        old_bytes = self.root_bytes()
        old = Envelope.from_bytes(old_bytes, expected_type="root").parse(Root.from_dict)
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
        env = Envelope.sign(new.to_dict(), signers)
        state = self.verifier(now=now)
        try:
            state.update_root(env.raw)  # old AND new thresholds
        except SignatureError as exc:
            raise SignatureError(
                f"root v{new.version} needs the thresholds of root v{old.version} and of itself: {exc}"
            ) from exc
        index_signer = None
        index_changed = old.roles["index"] != new.roles["index"]
        if index_changed:
            for k in sign_with:
                if k.keyid in new.roles["index"].keyids:
                    index_signer = k
        new_index = None
        if index_signer is not None:
            new_index = self._next_index(index_signer, now, lambda chans: chans, state=state)
        write_atomic(self.root_path(new.version), env.raw)
        write_atomic(self.root_path(), env.raw)
        if root_expires_days is not None and root_expires_days != self.config.root_expires_days:
            self.config = RepoConfig(
                root_expires_days, self.config.index_expires_seconds, self.config.network_id
            )
            write_atomic(self.private_dir / "config.json", _json(self.config.to_dict()), mode=0o600)
        if new_index is not None:
            write_atomic(self.index_path, new_index[1])
        return new

    # -- the index -------------------------------------------------------------------------------

    def _next_index(
        self,
        index_key: PrivateKey,
        now: _dt.datetime,
        change: Callable[[dict[str, IndexChannel]], dict[str, IndexChannel]],
        *,
        state: TrustedState | None = None,
    ) -> tuple[Index, bytes, TrustedState]:
        """Build, sign and verify (not write) the next index version."""
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
        new = Index(
            (old.version + 1) if old is not None else 1,
            now + _dt.timedelta(seconds=self.config.index_expires_seconds),
            change(channels),
            old.rollouts if old is not None else {},
            old.halts if old is not None else {},
            old.extra if old is not None else {},
        )
        env = Envelope.sign(new.to_dict(), [index_key])
        state.update_index(env.raw)
        return new, env.raw, state

    @_mutation
    def refresh(self, index_key: PrivateKey, *, now: _dt.datetime | None = None) -> Index:
        """Re-sign the index with version+1 and a fresh expiry; no new release."""
        index, data, _ = self._next_index(index_key, _norm_time(now), lambda chans: chans)
        write_atomic(self.index_path, data)
        return index

    # -- releases: state -------------------------------------------------------------------------

    def _published(self) -> dict[str, tuple[str, str]]:
        """version -> (channel, "published" | "withdrawn") from the index."""
        index = self.index()
        out: dict[str, tuple[str, str]] = {}
        if index is None:
            return out
        for name, channel in index.channels.items():
            for v in channel.releases:
                out[v] = (name, "published")
            for v in channel.withdrawn:
                out[v] = (name, "withdrawn")
        return out

    def _draft_envelope(self, version: str) -> Envelope:
        path = self.draft_dir(version) / "manifest.json"
        if not path.is_file():
            raise NoSuchVersionError(f"no draft of release {version}")
        return Envelope.from_bytes(_read_limited(path, 4 * 1024 * 1024), expected_type="release")

    @staticmethod
    def _release_signers(root: Root, env: Envelope) -> list[str]:
        _spec, keys = root.role_keys("release")
        good: list[str] = []
        for sig in env.signatures:
            key = keys.get(sig.keyid)
            if key is None or sig.keyid in good:
                continue
            if key.verify(env.signed_bytes, bytes.fromhex(sig.sig)):
                good.append(sig.keyid)
        return good

    def _envelope_of(self, version: str) -> tuple[Envelope, str]:
        published = self._published()
        if version in published:
            data = _read_limited(self.manifest_path(version), 4 * 1024 * 1024)
            return Envelope.from_bytes(data, expected_type="release"), published[version][1]
        return self._draft_envelope(version), "draft"

    def list_releases(self) -> list[dict[str, Any]]:
        """Every draft and published release, ascending by version."""
        root = self.root()
        versions = set(self._published())
        if self.drafts_dir.is_dir():
            versions |= {
                p.name for p in self.drafts_dir.iterdir() if (p / "manifest.json").is_file()
            }
        out = []
        for version in sorted(versions, key=_version_key):
            env, state = self._envelope_of(version)
            manifest = env.parse(ReleaseManifest.from_dict)
            out.append(
                {
                    "version": version,
                    "channel": manifest.channel,
                    "type": manifest.type,
                    "critical": manifest.critical,
                    "state": state,
                    "signatures": len(self._release_signers(root, env)),
                    "threshold": root.roles["release"].threshold,
                }
            )
        return out

    def show_release(self, version: str) -> dict[str, Any]:
        """The manifest (as signed) with its state, signers and, once published, its hash."""
        root = self.root()
        env, state = self._envelope_of(version)
        signers = self._release_signers(root, env)
        info: dict[str, Any] = {
            "version": version,
            "state": state,
            "signatures": len(signers),
            "threshold": root.roles["release"].threshold,
            "signed_by": signers,
            "manifest": dict(env.signed),
        }
        if state != "draft":
            meta = MetaFile.of(env.raw)
            info["manifest_length"] = meta.length
            info["manifest_sha256"] = meta.sha256
        return info

    # -- releases: build ---------------------------------------------------------------------------

    def build_release(
        self,
        version: str,
        artifacts: Sequence[str | os.PathLike[str]],
        *,
        update_type: str = "binary",
        channel: str = "stable",
        critical: bool = False,
        priority: int = 0,
        delta_from: Sequence[str] | Literal["auto"] | None = None,
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
    ) -> ReleaseManifest:
        """Build the draft of ``version`` (unsigned) in ``.bhsync/drafts/<version>/``.

        ``sandbox`` (synchronous here; see :meth:`abuild_release` for an async one) is run on a
        scratch tree with the self-test, then the health command, before the draft is kept.
        """
        prepared = self._prepare(
            version,
            artifacts,
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
        try:
            if sandbox is not None:
                for command in (prepared.manifest.self_test, prepared.manifest.health):
                    if command is not None:
                        with self._scratch_tree(prepared) as tree:
                            sandbox(tree, command)
            self._finalize(prepared)
        finally:
            shutil.rmtree(prepared.workdir, ignore_errors=True)
        return prepared.manifest

    async def abuild_release(
        self,
        version: str,
        artifacts: Sequence[str | os.PathLike[str]],
        *,
        sandbox: SandboxRunner | None = None,
        **options: Any,
    ) -> ReleaseManifest:
        """:meth:`build_release` with an async sandbox step; the file work runs in a thread."""
        prepared = await anyio.to_thread.run_sync(
            lambda: self._prepare(version, artifacts, **options)
        )
        try:
            if sandbox is not None:
                for command in (prepared.manifest.self_test, prepared.manifest.health):
                    if command is not None:
                        with self._scratch_tree(prepared) as tree:
                            await sandbox(tree, command)
            await anyio.to_thread.run_sync(self._finalize, prepared)
        finally:
            shutil.rmtree(prepared.workdir, ignore_errors=True)
        return prepared.manifest

    def _scratch_tree(self, prepared: _Prepared) -> _ScratchTree:
        return _ScratchTree(self, prepared)

    @_mutation
    def _finalize(self, prepared: _Prepared) -> None:
        target = self.draft_dir(prepared.version)
        shutil.rmtree(prepared.workdir / "packed", ignore_errors=True)
        fsync_file(prepared.workdir / "manifest.json")
        fsync_dir(prepared.workdir / "blobs")
        if target.exists() or self._published().get(prepared.version):
            raise ConflictError(f"release {prepared.version} exists")
        try:
            os.rename(prepared.workdir, target)
        except OSError as exc:
            raise ConflictError(f"release {prepared.version} exists") from exc
        fsync_dir(self.drafts_dir)

    def _check_new_version(self, version: str) -> None:
        parse_version(version, "release version")
        if self.draft_dir(version).exists():
            raise ConflictError(f"release {version} exists as a draft")
        if version in self._published() or self.manifest_path(version).exists():
            raise ConflictError(f"release {version} is already published")

    def _prepare(
        self,
        version: str,
        artifacts: Sequence[str | os.PathLike[str]],
        *,
        update_type: str = "binary",
        channel: str = "stable",
        critical: bool = False,
        priority: int = 0,
        delta_from: Sequence[str] | Literal["auto"] | None = None,
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
        now: _dt.datetime | None = None,
    ) -> _Prepared:
        now = _norm_time(now)
        self._check_new_version(version)
        if update_type not in UPDATE_TYPES:
            raise ValueError(f"update type {update_type!r} is not one of {', '.join(UPDATE_TYPES)}")
        _check_name(channel, "channel")
        _check_name(platform, "platform")
        _check_name(arch, "arch")
        if not 0 <= priority <= 1000:
            raise ValueError("priority must be 0..1000")
        if not artifacts and (
            update_type == "binary" or not (migrations or config_changes or protocol)
        ):
            raise ValueError(
                "a release needs at least one artifact (configuration, schema and protocol "
                "releases may carry only their changes)"
            )
        sources = [Path(a) for a in artifacts]
        for src in sources:
            if not src.exists():
                raise ValueError(f"artifact {src} does not exist")
            if not (src.is_file() or src.is_dir()):
                raise ValueError(f"artifact {src} is not a file or directory")
        unpack_set = {Path(u).resolve() for u in unpack}
        known = {s.resolve() for s in sources}
        for u in unpack_set:
            if u not in known:
                raise ValueError(f"--unpack {u} is not one of the artifacts")
        recipients = list(encrypt_to)
        origins = self._delta_origins(version, channel, delta_from)

        workdir = Path(tempfile.mkdtemp(prefix=f"build-{version}-", dir=self.tmp_dir))
        try:
            blobs = workdir / "blobs"
            blobs.mkdir()
            packed = workdir / "packed"
            packed.mkdir()
            built: list[Artifact] = []
            plaintexts: dict[str, Path] = {}
            names: set[str] = set()
            for src in sources:
                if src.is_dir():
                    name = check_safe_name(f"{src.resolve().name}.tar", f"artifact {src}")
                    plain = packed / name
                    pack_directory(src, plain)
                    mode, fmt = 0o644, "tar"
                else:
                    name = check_safe_name(src.name, f"artifact {src}")
                    plain = src
                    st_mode = os.stat(src).st_mode
                    if st_mode & 0o7000:
                        raise UnsafePathError(f"artifact {src} is setuid/setgid/sticky")
                    mode = stat.S_IMODE(st_mode)
                    fmt = archive_format(name) if src.resolve() in unpack_set else ""
                if name in names:
                    raise ValueError(f"two artifacts are named {name!r}")
                names.add(name)
                unpack_rec = Unpack(fmt, list_members(plain, fmt)) if fmt else None
                if recipients:
                    tmp_ct = blobs / f".ct-{secrets.token_hex(6)}"
                    encryption = encrypt_file(plain, tmp_ct, recipients)
                    os.replace(tmp_ct, blobs / encryption.ciphertext.sha256)
                    meta = _hash_file(plain)
                else:
                    encryption = None
                    meta = _store_blob(plain, blobs)
                plaintexts[name] = plain
                built.append(
                    Artifact(
                        name,
                        meta.length,
                        dict(meta.hashes),
                        mode,
                        platform,
                        arch,
                        unpack_rec,
                        (),
                        encryption,
                    )
                )
            if not sources:
                # A configuration, schema or protocol release without files keeps the files
                # of the newest published release below it: nodes keep running the same
                # binaries (and fetch nothing: they already hold those bytes).
                previous = self._delta_origins(version, channel, "auto")[:1]
                if previous:
                    built = list(previous[0][1].artifacts)
            deltas: list[DeltaRecord] = []
            if not recipients and sources:
                for origin_version, origin in origins:
                    deltas.extend(
                        self._make_deltas(origin_version, origin, built, plaintexts, blobs)
                    )
            manifest = ReleaseManifest(
                version,
                update_type,
                channel,
                tuple(built),
                now,
                critical,
                priority,
                tuple(deltas),
                tuple(migrations),
                schema,
                tuple(config_changes),
                protocol,
                compatibility,
                self_test,
                health,
                notes,
            )
            env = Envelope.of(manifest.to_dict(), ())
            # Round trip through the strict parser: what we write is what nodes will read.
            ReleaseManifest.from_dict(Envelope.from_bytes(env.raw, expected_type="release").signed)
            (workdir / "manifest.json").write_bytes(env.raw)
            return _Prepared(version, workdir, manifest, plaintexts)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _delta_origins(
        self, version: str, channel: str, delta_from: Sequence[str] | Literal["auto"] | None
    ) -> list[tuple[str, ReleaseManifest]]:
        if delta_from is None:
            return []
        published = self._published()
        if delta_from == "auto":
            below = [
                v
                for v, (ch, state) in published.items()
                if ch == channel
                and state == "published"
                and _version_key(v) < _version_key(version)
            ]
            chosen = sorted(below, key=_version_key, reverse=True)[:AUTO_DELTA_COUNT]
        else:
            chosen = []
            for v in dict.fromkeys(delta_from):
                parse_version(v, "delta_from")
                if v not in published or published[v][1] != "published":
                    raise NoSuchVersionError(f"--delta-from {v}: no such published release")
                if _version_key(v) >= _version_key(version):
                    raise ValueError(f"--delta-from {v} is not below {version}")
                chosen.append(v)
        out = []
        for v in chosen:
            data = _read_limited(self.manifest_path(v), 4 * 1024 * 1024)
            out.append(
                (
                    v,
                    Envelope.from_bytes(data, expected_type="release").parse(
                        ReleaseManifest.from_dict
                    ),
                )
            )
        return out

    @staticmethod
    def _pays_off(patch_length: int, full_length: int) -> bool:
        return patch_length * 10_000 < full_length * DELTA_MAX_RATIO_BP

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
            old_blob = self.blob_path(old.sha256)
            if not old_blob.is_file():
                continue
            if art.unpack is None and old.unpack is None:
                patch = _delta.generate_delta(old_blob, plaintexts[art.name])
                if patch is None or not self._pays_off(patch.patch_length, art.length):
                    continue
                out.append(self._record(art.name, origin_version, patch, blobs, None))
            elif art.unpack is not None and old.unpack is not None:
                with tempfile.TemporaryDirectory(dir=self.tmp_dir) as scratch:
                    old_dir, new_dir = Path(scratch, "old"), Path(scratch, "new")
                    old_dir.mkdir()
                    new_dir.mkdir()
                    old_files = _extract_files(old_blob, old.unpack.format, old_dir)
                    new_files = _extract_files(plaintexts[art.name], art.unpack.format, new_dir)
                    results = _delta.member_deltas(
                        {k: str(v) for k, v in old_files.items()},
                        {k: str(v) for k, v in new_files.items()},
                        keep_larger=True,
                    )
                    # A node rebuilds the tree from its installed members: every changed
                    # member needs a patch, and a member with none (new, or unpatchable)
                    # ships whole as an "identity" patch. The set is kept when its total
                    # beats the whole archive.
                    patches: list[tuple[str, _delta.DeltaPatch]] = []
                    for path, r in sorted(results.items()):
                        if r.patch is not None:
                            patches.append((path, r.patch))
                        elif r.status == "full":
                            data = Path(new_files[path]).read_bytes()
                            whole = _delta.DeltaPatch.from_bytes(b"", data, data, "identity")
                            patches.append((path, whole))
                    if not self._pays_off(sum(p.patch_length for _, p in patches), art.length):
                        continue
                    for path, p in patches:
                        out.append(self._record(art.name, origin_version, p, blobs, path))
        return out

    @staticmethod
    def _record(
        name: str, origin: str, patch: _delta.DeltaPatch, blobs: Path, member: str | None
    ) -> DeltaRecord:
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

    # -- releases: sign, publish, yank ---------------------------------------------------------

    @_mutation
    def sign_release(self, version: str, key: PrivateKey) -> bool:
        """Add one key holder's signature to the draft. False if that key had signed already."""
        if version in self._published():
            raise ConflictError(f"release {version} is published; its manifest cannot change")
        env = self._draft_envelope(version)
        root = self.root()
        if key.keyid not in root.roles["release"].keyids:
            raise SignatureError(
                f"key {key.keyid[:16]}... is not a release key of root v{root.version}"
            )
        if key.keyid in self._release_signers(root, env):
            return False
        kept = tuple(s for s in env.signatures if s.keyid != key.keyid)
        new = Envelope.of(env.signed, (*kept, key.sign(env.signed_bytes)))
        write_atomic(self.draft_dir(version) / "manifest.json", new.raw)
        return True

    def release_blobs(self, manifest: ReleaseManifest) -> dict[str, MetaFile]:
        """sha256 -> MetaFile of every blob a release needs (artifacts/ciphertexts, patches)."""
        out: dict[str, MetaFile] = {}
        for a in manifest.artifacts:
            out[a.blob.sha256] = a.blob
        for d in manifest.deltas:
            out[d.patch.sha256] = d.patch
        return out

    @_mutation
    def publish_release(
        self, version: str, index_key: PrivateKey, *, now: _dt.datetime | None = None
    ) -> Index:
        """Publish a draft signed by the release threshold; re-sign the index (version+1)."""
        now = _norm_time(now)
        if version in self._published():
            raise ConflictError(f"release {version} is already published")
        env = self._draft_envelope(version)
        manifest = env.parse(ReleaseManifest.from_dict)
        state = self.verifier(now=now)
        state.root.verify_role(env, "release")
        draft_blobs = self.draft_dir(version) / "blobs"
        needed = self.release_blobs(manifest)
        for sha, meta in needed.items():
            have = draft_blobs / sha if (draft_blobs / sha).is_file() else self.blob_path(sha)
            if not have.is_file():
                raise LengthOrHashMismatchError(f"release {version}: blob {sha[:16]}... is missing")
            if _hash_file(have) != MetaFile(meta.length, {"sha256": meta.sha256}):
                raise LengthOrHashMismatchError(f"release {version}: blob {sha[:16]}... differs")
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
        for sha in needed:
            src = draft_blobs / sha
            if not src.is_file():
                continue
            if self.blob_path(sha).is_file():
                src.unlink()
            else:
                os.replace(src, self.blob_path(sha))
        fsync_dir(self.blobs_dir)
        write_atomic(self.manifest_path(version), data)
        write_atomic(self.index_path, index_data)
        shutil.rmtree(self.draft_dir(version), ignore_errors=True)
        return index

    @_mutation
    def yank(
        self,
        version: str,
        index_key: PrivateKey,
        reason: str = "",
        *,
        now: _dt.datetime | None = None,
    ) -> Index:
        """Withdraw a published release in a new index version (its files stay)."""
        if len(reason) > 1024:
            raise ValueError("a withdrawal reason is at most 1024 characters")
        published = self._published()
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

        index, data, _ = self._next_index(index_key, _norm_time(now), withdraw)
        write_atomic(self.index_path, data)
        return index


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


class _ScratchTree:
    """A context manager: a fresh tree laid out as a node installs the release."""

    def __init__(self, repo: Repository, prepared: _Prepared) -> None:
        self._repo = repo
        self._prepared = prepared
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        self._dir = tempfile.TemporaryDirectory(prefix="sandbox-", dir=self._repo.tmp_dir)
        tree = Path(self._dir.name) / "tree"
        tree.mkdir()
        for art in self._prepared.manifest.artifacts:
            plain = self._prepared.plaintexts[art.name]
            if art.unpack is not None:
                _extract_tree(plain, art.unpack.format, tree)
            else:
                shutil.copyfile(plain, tree / art.name)
                os.chmod(tree / art.name, art.mode)
        return tree

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            self._dir.cleanup()


# -- the design's UpdateServer ----------------------------------------------------------------


class BlobStore:
    """The content-addressed blob directory of a repository (``blobs/<sha256>``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, src: str | os.PathLike[str]) -> MetaFile:
        """Add a file; returns its length and sha256 (the blob's name)."""
        return _store_blob(Path(src), self.root)

    def verify(self, meta: MetaFile) -> bool:
        """True when the stored blob has ``meta``'s length and sha256; raises otherwise."""
        path = self.path(meta.sha256)
        if not path.is_file():
            raise LengthOrHashMismatchError(f"blob {meta.sha256[:16]}... is missing")
        if _hash_file(path) != MetaFile(meta.length, {"sha256": meta.sha256}):
            raise LengthOrHashMismatchError(f"blob {meta.sha256[:16]}... differs from its name")
        return True


class UpdateServer:
    """The design's ``UpdateServer``: release builder, manifest generator, signing service,
    blob store and distribution, over one :class:`Repository`.

    ``transports`` (opened by the caller) receive every published blob (``publish``) and the
    new index (``announce``) when they declare those capabilities.
    """

    def __init__(
        self,
        repository: Repository,
        *,
        transports: Sequence[Any] = (),
        sandbox: SandboxRunner | None = None,
    ) -> None:
        self.repository = repository
        self.transports = tuple(transports)
        self.sandbox = sandbox
        self.blob_store = BlobStore(repository.blobs_dir)

    # release builder / manifest generator
    async def build_release(
        self, version: str, artifacts: Sequence[str | os.PathLike[str]], **options: Any
    ) -> ReleaseManifest:
        return await self.repository.abuild_release(
            version, artifacts, sandbox=self.sandbox, **options
        )

    def generate_manifest(self, version: str) -> dict[str, Any]:
        """The manifest of ``version`` as signed, with its state and signers."""
        return self.repository.show_release(version)

    # signing service
    def sign_update(self, version: str, key: PrivateKey) -> bool:
        return self.repository.sign_release(version, key)

    def verify_signatures(self, version: str) -> dict[str, Any]:
        info = self.repository.show_release(version)
        return {k: info[k] for k in ("signatures", "threshold", "signed_by")}

    def rotate_signing_keys(self, **changes: Any) -> Root:
        return self.repository.rotate(**changes)

    @staticmethod
    def calculate_checksum(path: str | os.PathLike[str]) -> str:
        return _hash_file(Path(path)).sha256

    async def validate_update(self, version: str) -> bool:
        """Version, threshold and blob checks of a draft (and its sandbox run, if set)."""
        repo = self.repository
        parse_version(version, "release version")
        env = repo._draft_envelope(version)
        repo.root().verify_role(env, "release")
        manifest = env.parse(ReleaseManifest.from_dict)
        draft_blobs = repo.draft_dir(version) / "blobs"
        for meta in repo.release_blobs(manifest).values():
            path = draft_blobs / meta.sha256
            if not path.is_file():
                path = repo.blob_path(meta.sha256)
            if not path.is_file() or await anyio.to_thread.run_sync(_hash_file, path) != MetaFile(
                meta.length, {"sha256": meta.sha256}
            ):
                raise LengthOrHashMismatchError(f"release {version}: blob {meta.sha256[:16]}...")
        return True

    async def publish_update(
        self, version: str, index_key: PrivateKey, *, now: _dt.datetime | None = None
    ) -> Index:
        """Validate, publish, distribute the blobs and announce the new index."""
        await self.validate_update(version)
        index = await anyio.to_thread.run_sync(
            lambda: self.repository.publish_release(version, index_key, now=now)
        )
        await self.distribute_update(version)
        await self.announce_update()
        return index

    async def distribute_update(self, version: str) -> None:
        env, _ = self.repository._envelope_of(version)
        manifest = env.parse(ReleaseManifest.from_dict)
        for transport in self.transports:
            if "publish" not in getattr(transport, "capabilities", ()):
                continue
            for sha in self.repository.release_blobs(manifest):
                await transport.publish(self.blob_store.path(sha), sha256=sha)

    async def announce_update(self) -> None:
        data = self.repository.index_bytes()
        if data is None:
            return
        for transport in self.transports:
            if "announce" in getattr(transport, "capabilities", ()):
                await transport.announce(data)


@frozen
class SignatureVerification:
    """Who validly signed a release, against the release role of the newest root."""

    version: str
    signed_by: tuple[str, ...]  # key ids of the release role whose signatures verify
    required: int

    @property
    def valid(self) -> bool:
        return len(self.signed_by) >= self.required


class UpdateSigning:
    """The design's UpdateSigning: the release role's keys, threshold and key management.

    Signing adds one key holder's signature to a draft (each holder signs separately, with
    their own key); key rotation and revocation are root changes, so they need the root
    keys' signatures (``sign_with``) under both the old and the new root thresholds.
    """

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    @property
    def required_signatures(self) -> int:
        return self.repository.root().roles["release"].threshold

    @property
    def trusted_keys(self) -> list[PublicKey]:
        _role, keys = self.repository.root().role_keys("release")
        return list(keys.values())

    def sign_update(self, version: str, key: PrivateKey) -> bool:
        """Add ``key``'s signature to draft ``version``; False when it had signed already."""
        return self.repository.sign_release(version, key)

    def verify_signatures(self, version: str) -> SignatureVerification:
        env, _state = self.repository._envelope_of(version)
        signers = self.repository._release_signers(self.repository.root(), env)
        return SignatureVerification(version, tuple(signers), self.required_signatures)

    def rotate_signing_keys(
        self,
        new_keys: Sequence[PublicKey],
        *,
        sign_with: Sequence[PrivateKey],
        threshold: int | None = None,
    ) -> Root:
        """Replace the release keys (and optionally the threshold) in a new root version."""
        return self.repository.rotate(
            sign_with=sign_with, release_keys=new_keys, release_threshold=threshold
        )

    def revoke_key(
        self, key: PublicKey | str, reason: str, *, sign_with: Sequence[PrivateKey]
    ) -> Root:
        """Remove a key (object or key id) from every role in a new root; record why."""
        keyid = key.keyid if isinstance(key, PublicKey) else key
        root = self.repository.rotate(sign_with=sign_with, revoke=[keyid])
        log_path = self.repository.path / ".bhsync" / "revocations.json"
        entries = json.loads(log_path.read_text()) if log_path.is_file() else []
        entries.append(
            {"keyid": keyid, "reason": reason, "root_version": root.version,
             "time": format_time(_dt.datetime.now(_dt.UTC))}
        )  # fmt: skip
        write_atomic(log_path, (json.dumps(entries, indent=2) + "\n").encode())
        return root
