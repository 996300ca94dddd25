"""The fixed world the document and peer-message targets run against.

Deterministic keys (seeded from their names), a repository made by the release side itself
(``Repository.init``, one release built, signed and published, a governance role) in a
temporary directory removed at exit, and the signed documents it produced: the targets' trusted
root and their seeds. Import this module inside ``atheris.instrument_imports()``.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from blackhole_sync.documents import (
    Envelope,
    HaltDoc,
    NodeStatusDoc,
    PrivateKey,
    Root,
    TrustedState,
)
from blackhole_sync.network import make_announcement
from blackhole_sync.release import BuildOptions, ReleaseBuilder, Repository

__all__ = ["KEYS", "WORLD", "World", "key"]

#: The reference time of every target: documents are fresh at it, and stay so for years.
REF = dt.datetime.now(dt.UTC).replace(microsecond=0)


def key(name: str) -> PrivateKey:
    """The world's key called ``name`` (the same bytes on every run)."""
    return PrivateKey(hashlib.sha256(f"fuzz key {name}".encode()).digest())


KEYS: Mapping[str, PrivateKey] = {
    name: key(name) for name in ("root", "release", "index", "gov1", "gov2", "node", "stranger")
}


class World:
    """The repository's signed documents and the keys of each role."""

    def __init__(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="bhsync-fuzz-"))
        atexit.register(shutil.rmtree, base, True)
        repo = Repository.init(
            base / "repo",
            root_keys=[KEYS["root"].public_key],
            root_threshold=1,
            release_keys=[KEYS["release"].public_key],
            release_threshold=1,
            index_key=KEYS["index"],
            sign_with=[KEYS["root"]],
            governance_keys=[KEYS["gov1"].public_key, KEYS["gov2"].public_key],
            governance_threshold=2,
            root_expires_days=3650,
            index_expires_seconds=366 * 86_400,
        )
        artifact = base / "app"
        artifact.write_bytes(b"fuzz world artifact\n" * 64)
        ReleaseBuilder(repo).build("1.0.0", [artifact], BuildOptions(delta_from=None))
        repo.sign_release("1.0.0", KEYS["release"])
        repo.publish_release("1.0.0", KEYS["index"])
        self.root_bytes: bytes = repo.root_bytes()
        index = repo.index_bytes()
        assert index is not None
        self.index_bytes: bytes = index
        self.manifest_bytes: bytes = repo.manifest_bytes("1.0.0")
        self.root: Root = Envelope.from_bytes(self.root_bytes).parse(Root.from_dict)
        self.announcement: bytes = make_announcement(
            self.index_bytes, self.root, "stable", KEYS["index"]
        )
        expires = REF + dt.timedelta(days=3650)
        node = KEYS["node"]
        self.status: bytes = Envelope.sign(
            NodeStatusDoc(
                node_id=node.public_key.hex,
                network_id=self.root.network_id,
                seq=1,
                expires=expires,
                current_version="1.0.0",
                state="idle",
            ).to_dict(),
            [node],
        ).raw
        self.halt: bytes = Envelope.sign(
            HaltDoc("1.0.0", "fuzz", 1, expires).to_dict(), [KEYS["gov1"], KEYS["gov2"]]
        ).raw

    def state(self) -> TrustedState:
        """A trusted state at the world's root and index (fresh for every input)."""
        state = TrustedState(self.root_bytes, reference_time=REF)
        state.update_index(self.index_bytes)
        return state

    def signers(self, role: str) -> Sequence[PrivateKey]:
        """The private keys that meet ``role``'s threshold."""
        return {
            "root": [KEYS["root"]],
            "release": [KEYS["release"]],
            "index": [KEYS["index"]],
            "governance": [KEYS["gov1"], KEYS["gov2"]],
        }.get(role, [KEYS["node"]])

    def seeds(self) -> dict[str, bytes]:
        return {
            "root": self.root_bytes,
            "index": self.index_bytes,
            "manifest": self.manifest_bytes,
            "announcement": self.announcement,
            "status": self.status,
            "halt": self.halt,
        }


WORLD = World()
