"""NodeLayout: the one owner of every path under a node directory (ARCHITECTURE.md section 4).

Like OSTree's sysroot, one object knows where things live under ``NODE/``; nobody else joins a
name onto a node directory. Everything here is a pure path computation (no I/O), except
:meth:`NodeLayout.current_version`, which reads the ``current`` symlink, :meth:`is_node` and
:meth:`make_directories`::

    NODE/current            symlink to versions/<version>; switched by renaming a temporary symlink
    NODE/versions/<v>/      installed trees, immutable; artifacts appear by name inside
    NODE/trust/             last verified root (root.json, <N>.root.json), index.json,
                            coordination/ (governance and downgrade documents the index lists) and
                            manifests/<v>.json, as received bytes (see truststore.py)
    NODE/staging/           private (0700) downloads and patch outputs; emptied on recovery
    NODE/partial/<sha256>   private (0700) resumable partial downloads, one file per blob
    NODE/blobs/<sha256>     transfer blobs of the current and previous version, served to peers
    NODE/bittorrent/ NODE/ipfs/ NODE/gossip/   each plugin's own state
    NODE/state.db           SQLite: install journal, history, rollback points, seq floors, votes
    NODE/rollback/<id>/     rollback points: state backups (see rollback.py)
    NODE/data/              the node's application data: its SQLite database and configuration
    NODE/config.toml        the operator's settings (see config.py)
    NODE/identity.key       the node's own ed25519 key (0600), and identity.key.pub
    NODE/mirror/            the edge cache a node serves to its neighbours (``node serve``)
    NODE/.lock              flock(2) held by the one process that has the store open

Names that must be one path component (versions, blob digests, point names) are checked, so
no caller can make a layout path escape the node directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from attrs import field, frozen

from ..documents import check_safe_name, check_safe_path, parse_version
from ..errors import FormatError

__all__ = ["NodeLayout"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")

#: Directories a new node gets, with their modes (private ones are 0700).
_SKELETON: Final = (
    ("versions", 0o755),
    ("trust", 0o755),
    ("trust/manifests", 0o755),
    ("staging", 0o700),
    ("rollback", 0o700),
    ("data", 0o755),
)
#: Prefixes of temporary entries at the top of the node directory and of ``data/``.
CURRENT_TMP_PREFIX: Final = ".current.tmp-"
#: The operator's settings file inside a node directory.
CONFIG_FILE: Final = "config.toml"
_ROOT_SUFFIX: Final = ".root.json"
MIGRATE_PREFIX: Final = ".migrate-"


def _digest(value: str) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.match(value):
        raise FormatError(f"{value!r} is not a lowercase hex sha256")
    return value


@frozen
class NodeLayout:
    """Where everything lives under one node directory ``root``."""

    root: Path = field(converter=Path)

    # -- the installed software ---------------------------------------------------------------

    @property
    def current(self) -> Path:
        """The ``current`` symlink (``versions/<v>``)."""
        return self.root / "current"

    def current_tmp(self, token: str) -> Path:
        """The temporary symlink renamed over ``current`` by a switch."""
        return self.root / f"{CURRENT_TMP_PREFIX}{check_safe_name(token, 'token')}"

    @staticmethod
    def current_target(version: str) -> str:
        """What ``current`` points at for ``version`` (relative, so the node can move)."""
        return f"versions/{parse_version(version)}"

    def current_version(self) -> str | None:
        """The version ``current`` points at, None when there is no ``current``."""
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return None
        return os.path.basename(target.rstrip("/")) or None

    def current_link_problems(self) -> list[str]:
        """Why ``current`` is not the link a switch writes, or ``[]``.

        A switch writes exactly ``versions/<version>`` (relative) onto a real directory; any
        other target (absolute, with ``..``, through a symlinked ``versions/<v>``) names a
        version it does not show. :func:`os.path.realpath` gives what it really reaches.
        """
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return []
        except OSError as exc:
            return [f"current: not a symbolic link ({exc.strerror})"]
        version = os.path.basename(target.rstrip("/"))
        try:
            expected = self.current_target(version)
        except FormatError:
            return [f"current points at {target!r}, which names no version"]
        if target != expected:
            return [f"current points at {target!r}, not {expected!r}"]
        tree = self.versions_dir / version
        if tree.is_symlink():
            return [f"current: versions/{version} is a symbolic link to {os.readlink(tree)!r}"]
        return []

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def version_dir(self, version: str) -> Path:
        """The installed tree of ``version`` (``version`` must be a canonical semver)."""
        return self.versions_dir / parse_version(version)

    # -- trusted metadata ---------------------------------------------------------------------

    @property
    def trust_dir(self) -> Path:
        return self.root / "trust"

    @property
    def trust_root(self) -> Path:
        """The newest trusted root (``trust/root.json``)."""
        return self.trust_dir / "root.json"

    def trust_root_version(self, version: int) -> Path:
        """Root version ``version`` as received (``trust/<N>.root.json``)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise FormatError(f"root version {version!r} is not a positive integer")
        return self.trust_dir / f"{version}{_ROOT_SUFFIX}"

    @staticmethod
    def root_version_of(name: str) -> int | None:
        """N for a ``<N>.root.json`` file name, else None."""
        number = name.removesuffix(_ROOT_SUFFIX)
        if number != name and number.isdigit() and not number.startswith("0"):
            return int(number)
        return None

    @property
    def trust_index(self) -> Path:
        return self.trust_dir / "index.json"

    @property
    def trust_manifests_dir(self) -> Path:
        return self.trust_dir / "manifests"

    @property
    def trust_coordination_dir(self) -> Path:
        """Verified coordination documents the index lists (``trust/coordination/``)."""
        return self.trust_dir / "coordination"

    def trust_coordination(self, relpath: str) -> Path:
        """A coordination document as received (``governance/...``, ``downgrades/...``)."""
        parts = check_safe_path(relpath).split("/")
        if parts[0] not in ("governance", "downgrades"):
            raise ValueError(f"{relpath!r} is not a coordination document path")
        return self.trust_coordination_dir.joinpath(*parts)

    def trust_manifest(self, version: str) -> Path:
        return self.trust_manifests_dir / f"{parse_version(version)}.json"

    # -- transfers ------------------------------------------------------------------------------

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    def staging_entry(self, name: str) -> Path:
        """A private entry directly under ``staging/`` (one path component)."""
        return self.staging_dir / check_safe_name(name, "staging entry")

    @property
    def partial_dir(self) -> Path:
        return self.root / "partial"

    def partial(self, sha256: str) -> Path:
        """The resumable partial download of the blob ``sha256``."""
        return self.partial_dir / _digest(sha256)

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    def blob(self, sha256: str) -> Path:
        """A transfer blob kept to serve peers."""
        return self.blobs_dir / _digest(sha256)

    @property
    def bittorrent_dir(self) -> Path:
        return self.root / "bittorrent"

    @property
    def ipfs_dir(self) -> Path:
        return self.root / "ipfs"

    @property
    def gossip_dir(self) -> Path:
        return self.root / "gossip"

    def transport_status(self, name: str) -> Path:
        """The status a peer transport leaves for ``node status`` (``NODE/<name>/status.json``,
        in the directory the transport pool gives it as ``state_dir``)."""
        if not name.isidentifier():
            raise ValueError(f"not a transport name: {name!r}")
        return self.root / name / "status.json"

    @property
    def mirror_dir(self) -> Path:
        """The edge cache ``node serve`` exports (a repository layout)."""
        return self.root / "mirror"

    # -- state --------------------------------------------------------------------------------

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def rollback_dir(self) -> Path:
        return self.root / "rollback"

    def rollback_point(self, name: str | int) -> Path:
        """A rollback point's directory (its id, or a temporary or manual name)."""
        return self.rollback_dir / check_safe_name(str(name), "rollback point")

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def migrate_dir(self, operation: int) -> Path:
        """Scratch space inside ``data/`` where one install migrates copies."""
        return self.data_dir / f"{MIGRATE_PREFIX}{int(operation)}"

    @staticmethod
    def data_swap_dirs(data_dir: Path) -> tuple[Path, Path]:
        """``(.data-restore, .data-old)`` beside ``data_dir``: where a restore rebuilds the
        data directory, and where it parks the replaced one until the swap is durable."""
        return data_dir.parent / ".data-restore", data_dir.parent / ".data-old"

    @property
    def config(self) -> Path:
        """The operator's settings (``config.toml``)."""
        return self.root / CONFIG_FILE

    @property
    def identity_key(self) -> Path:
        return self.root / "identity.key"

    @property
    def identity_public_key(self) -> Path:
        """The public half of the identity key (``identity.key.pub``, world-readable)."""
        return self.root / "identity.key.pub"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    # -- the directory itself -----------------------------------------------------------------

    def is_node(self) -> bool:
        """True when ``root`` holds a node (its state database and versions directory)."""
        return self.state_db.is_file() and self.versions_dir.is_dir()

    def make_directories(self) -> None:
        """Create the skeleton of a new node inside the existing, empty ``root``."""
        for name, mode in _SKELETON:
            path = self.root / name
            path.mkdir(mode=mode)
            os.chmod(path, mode)  # mkdir's mode is filtered by the umask
