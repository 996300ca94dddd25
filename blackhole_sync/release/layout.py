"""The repository directory: where every file lives, and reading the repository's own files.

A repository is a directory of static files (ARCHITECTURE.md section 5) plus a private part
that is never served::

    REPO/root.json                 the newest root
    REPO/<N>.root.json             every root version
    REPO/index.json                the index (signed by the online index key)
    REPO/manifests/<version>.json  published release manifests (canonical envelope bytes)
    REPO/blobs/<sha256>            artifacts, ciphertexts and patches of published releases
    REPO/.bhsync/config.json       expiry periods and network id (``repo init`` stores them)
    REPO/.bhsync/lock              the write lock every mutation holds (flock)
    REPO/governance/...            published coordination documents the index lists:
                                   validators.json, proposals/<id>.json, rollouts/<v>.json,
                                   halts/<v>.json, deprecations/<feature>.json
    REPO/downgrades/<version>.json published downgrade documents (release-signed)
    REPO/.bhsync/drafts/<version>/ manifest.json (the envelope collecting signatures), blobs/
    REPO/.bhsync/drafts/coordination/<name>.json  governance and downgrade drafts
    REPO/.bhsync/drafts/root/      a root draft: root.json (the envelope collecting the root
                                   holders' signatures), config.json (settings it changes)
    REPO/.bhsync/tmp/              scratch space of builds; emptied on failure, and of what a
                                   killed build left by the next one (:meth:`scratch_session`)
    REPO/.bhsync/tmp.lock          held shared by every build while it uses tmp/

:class:`RepoLayout` is the one owner of these paths: nothing else in the release package joins
a path under REPO. It also reads the repository's own files back (capped, parsed strictly, not
verified: :class:`~blackhole_sync.release.Repository` verifies them as a node would before
anything signed is written) and answers which releases the index lists.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Self

from attrs import frozen

from .._fsutil import remove_tree
from ..clock import utcnow
from ..documents import MAX_SIZES, Envelope, Index, Root
from ..errors import ConfigurationError, FormatError, NoSuchVersionError
from .blobs import BlobStore

__all__ = ["ReleaseState", "RepoConfig", "RepoLayout"]

#: A release's state: a draft collecting signatures, listed in the index, or withdrawn there.
ReleaseState = Literal["draft", "published", "withdrawn"]

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
_DRAFT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}\Z")
_CONFIG_CAP = 64 * 1024


def norm_time(value: _dt.datetime | None) -> _dt.datetime:
    """``value`` in UTC whole seconds (the clock's now when None); naive times are refused."""
    if value is None:
        return utcnow()
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return value.astimezone(_dt.UTC).replace(microsecond=0)


def check_name(value: str, what: str) -> str:
    """A channel, platform, arch or network id: lowercase letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(f"{what} {value!r}: use lowercase letters, digits, '.', '_' or '-'")
    return value


def read_limited(path: Path, cap: int) -> bytes:
    """A file's bytes; :class:`FormatError` when it is larger than ``cap``."""
    with open(path, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise FormatError(f"{path.name}: larger than {cap} bytes")
    return data


def json_bytes(obj: Any) -> bytes:
    """Human-readable JSON for the private files (config, revocation log)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


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
        check_name(self.network_id, "network id")


class RepoLayout:
    """A repository directory: its paths, its lock, and its own files read back."""

    def __init__(self, path: Path, config: RepoConfig) -> None:
        self.path = path
        self.config = config

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, pending_root: bool = False) -> Self:
        """Open an existing repository (:class:`ConfigurationError` when it is none).

        A repository whose first root is still a draft (``repo init`` with fewer keys than
        the root threshold) has no ``root.json`` yet: it opens only with ``pending_root``
        (to sign, publish or show the draft); otherwise the error says what to do.
        """
        repo_path = Path(path)
        cfg_path = repo_path / ".bhsync" / "config.json"
        pending = (repo_path / ".bhsync" / "drafts" / "root" / "root.json").is_file()
        if cfg_path.is_file() and not (repo_path / "root.json").exists() and pending:
            if not pending_root:
                raise ConfigurationError(
                    f"{repo_path} has no root yet, only a root draft awaiting signatures: "
                    f"each root key holder runs `blackhole-sync repo sign {repo_path} --key KEY`, "
                    f"then `blackhole-sync repo publish-root {repo_path}`"
                )
        elif not (repo_path / "root.json").is_file() or not cfg_path.is_file():
            raise ConfigurationError(f"{repo_path} is not a blackhole-sync repository")
        try:
            obj = json.loads(read_limited(cfg_path, _CONFIG_CAP))
        except ValueError as exc:
            raise ConfigurationError(f"{cfg_path}: not JSON") from exc
        layout = cls(repo_path, RepoConfig.from_dict(obj))
        for d in (layout.drafts_dir, layout.tmp_dir, layout.blobs_dir, layout.manifests_dir):
            d.mkdir(parents=True, exist_ok=True)
        return layout

    @staticmethod
    def is_repository(path: Path) -> bool:
        """Whether ``path`` already holds (part of) a repository."""
        return any((path / name).exists() for name in ("root.json", ".bhsync", "index.json"))

    def create_directories(self) -> None:
        """The directories of a new repository; the private one 0700."""
        for d in (self.private_dir, self.drafts_dir, self.tmp_dir, self.blobs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.manifests_dir.mkdir(exist_ok=True)
        os.chmod(self.private_dir, 0o700)
        self.lock_path.touch(0o600)
        self.tmp_lock_path.touch(0o600)

    # -- paths -------------------------------------------------------------------------------

    @property
    def private_dir(self) -> Path:
        return self.path / ".bhsync"

    @property
    def config_path(self) -> Path:
        return self.private_dir / "config.json"

    @property
    def lock_path(self) -> Path:
        return self.private_dir / "lock"

    @property
    def revocations_path(self) -> Path:
        return self.private_dir / "revocations.json"

    @property
    def drafts_dir(self) -> Path:
        return self.private_dir / "drafts"

    @property
    def tmp_dir(self) -> Path:
        return self.private_dir / "tmp"

    @property
    def tmp_lock_path(self) -> Path:
        return self.private_dir / "tmp.lock"

    @property
    def root_draft_dir(self) -> Path:
        return self.drafts_dir / "root"

    @property
    def root_draft_path(self) -> Path:
        """The pending root draft's envelope (``drafts/root/root.json``)."""
        return self.root_draft_dir / "root.json"

    @property
    def root_draft_config_path(self) -> Path:
        """The repository settings the pending root draft changes when published."""
        return self.root_draft_dir / "config.json"

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
        """``root.json`` (the newest), or ``<version>.root.json``."""
        return self.path / ("root.json" if version is None else f"{version}.root.json")

    def manifest_path(self, version: str) -> Path:
        return self.manifests_dir / f"{version}.json"

    @property
    def coordination_drafts_dir(self) -> Path:
        """Governance and downgrade drafts (``release/governance.py``)."""
        return self.drafts_dir / "coordination"

    def coordination_draft_path(self, name: str) -> Path:
        if not _DRAFT_NAME_RE.match(name):
            raise ValueError(f"draft name {name!r}: lowercase letters, digits, '.', '_', '-'")
        return self.coordination_drafts_dir / f"{name}.json"

    def coordination_path(self, relpath: str) -> Path:
        """A published coordination document (``governance/...`` or ``downgrades/...``)."""
        from ..documents import check_safe_path

        parts = check_safe_path(relpath).split("/")
        if parts[0] not in ("governance", "downgrades"):
            raise ValueError(f"{relpath!r} is not a coordination document path")
        return self.path.joinpath(*parts)

    def draft_dir(self, version: str) -> Path:
        return self.drafts_dir / version

    def draft_manifest_path(self, version: str) -> Path:
        return self.draft_dir(version) / "manifest.json"

    def draft_blobs_dir(self, version: str) -> Path:
        return self.draft_dir(version) / "blobs"

    @property
    def blob_store(self) -> BlobStore:
        return BlobStore(self.blobs_dir)

    def blob_path(self, sha256: str) -> Path:
        return self.blob_store.path(sha256)

    def release_blob_path(self, version: str, sha256: str) -> Path:
        """Where a release's blob is: in its draft until published, then in ``blobs/``."""
        in_draft = self.draft_blobs_dir(version) / sha256
        return in_draft if in_draft.is_file() else self.blob_path(sha256)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository's write lock (``.bhsync/lock``, flock) for a mutation."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def scratch_session(self) -> Iterator[Path]:
        """Use ``tmp/`` (yields it); the first user after a crash empties it of leftovers.

        Every build holds ``tmp.lock`` shared while it has files in ``tmp/``. A build that can
        take it exclusively is alone: whatever ``tmp/`` holds was left by a build that was
        killed (a failing build removes its own files), and it is removed before this one
        starts. Concurrent builds never remove each other's files.
        """
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.tmp_lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another build is running: its files are not leftovers
            else:
                for entry in list(self.tmp_dir.iterdir()):
                    remove_tree(entry)
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield self.tmp_dir
        finally:
            os.close(fd)

    # -- our own files, read back --------------------------------------------------------------

    def root_bytes(self, version: int | None = None) -> bytes:
        return read_limited(self.root_path(version), MAX_SIZES["root"])

    def root(self) -> Root:
        """The newest root as written (parsed, not verified)."""
        return Envelope.from_bytes(self.root_bytes(), expected_type="root").parse(Root.from_dict)

    def index_bytes(self) -> bytes | None:
        if not self.index_path.is_file():
            return None
        return read_limited(self.index_path, MAX_SIZES["index"])

    def index(self) -> Index | None:
        """The index as written (parsed, not verified); None before the first one."""
        data = self.index_bytes()
        if data is None:
            return None
        return Envelope.from_bytes(data, expected_type="index").parse(Index.from_dict)

    def manifest_bytes(self, version: str) -> bytes:
        """A published manifest's bytes."""
        return read_limited(self.manifest_path(version), MAX_SIZES["release"])

    def published(self) -> dict[str, tuple[str, ReleaseState]]:
        """version -> (channel, "published" | "withdrawn") from the index."""
        index = self.index()
        out: dict[str, tuple[str, ReleaseState]] = {}
        if index is None:
            return out
        for name, channel in index.channels.items():
            for v in channel.releases:
                out[v] = (name, "published")
            for v in channel.withdrawn:
                out[v] = (name, "withdrawn")
        return out

    def draft_versions(self) -> set[str]:
        """Versions with a draft (built, not yet published); the root draft is not one."""
        if not self.drafts_dir.is_dir():
            return set()
        return {
            p.name
            for p in self.drafts_dir.iterdir()
            if p.name != "root" and (p / "manifest.json").is_file()
        }

    def root_draft_envelope(self) -> Envelope | None:
        """The pending root draft (parsed, not verified), or None."""
        path = self.root_draft_path
        if not path.is_file():
            return None
        return Envelope.from_bytes(read_limited(path, MAX_SIZES["root"]), expected_type="root")

    def draft_envelope(self, version: str) -> Envelope:
        """The draft's envelope (:class:`NoSuchVersionError` when there is no draft)."""
        path = self.draft_manifest_path(version)
        if not path.is_file():
            raise NoSuchVersionError(f"no draft of release {version}")
        return Envelope.from_bytes(
            read_limited(path, MAX_SIZES["release"]), expected_type="release"
        )

    def release_envelope(self, version: str) -> tuple[Envelope, ReleaseState]:
        """A release's envelope and state: the published manifest, else the draft."""
        published = self.published()
        if version in published:
            data = self.manifest_bytes(version)
            return Envelope.from_bytes(data, expected_type="release"), published[version][1]
        return self.draft_envelope(version), "draft"

    #: The former private name, still used by ``distribution.P2PUpdateDistribution``.
    _envelope_of = release_envelope
