"""A repository and real node directories for the tests (and the benchmark) that run the
gossip plugin through the core: the gate over each node's trusted root and state.db.

:class:`World` makes a repository (one key holds every role, as in the core's tests), signed
announcements of new index versions (``repo refresh``: no release to build), forged and badly
signed ones, and node directories (``node init``) whose config.toml sets ``[network]
loopback_only = true`` and a ``[gossip]`` table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netutil import free_port

from blackhole_sync import Envelope, PrivateKey, Repository, init_node
from blackhole_sync.codecs import libp2p_peer_id, load_private_key, write_key_pair
from blackhole_sync.network import make_announcement

PEER_NODE = Path(__file__).with_name("peer_node.py")


def toml_value(value: Any) -> str:
    return json.dumps(value)  # strings, numbers, booleans and lists of strings: TOML-compatible


def gossip_table(**settings: Any) -> str:
    lines = ["[gossip]"] + [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "keys").mkdir(mode=0o700, exist_ok=True)
        self.key_path = tmp / "keys" / "index"
        self.key: PrivateKey = write_key_pair(self.key_path)
        self.repo = Repository.init(
            tmp / "repo", root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1,
            index_key=self.key.public_key, sign_with=[self.key],
        )  # fmt: skip
        self.network_id = self.repo.root().network_id

    # -- releases and announcements ---------------------------------------------------------

    def publish(self, version: str) -> None:
        src = self.tmp / "build" / version / "service"
        src.parent.mkdir(parents=True)
        src.write_bytes(f"service {version}\n".encode() * 200)
        self.repo.build_release(version, [src], delta_from=[])
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)

    def announcement(self) -> tuple[int, bytes]:
        """A new index version (``repo refresh``) and its signed announcement."""
        index = self.repo.refresh(self.key)
        data = self.repo.index_bytes()
        assert data is not None
        return index.version, make_announcement(data, self.repo.root(), "stable", self.key)

    def forged(self, payload: bytes) -> bytes:
        """The same announcement signed by a key that is not the index key."""
        return Envelope.sign(Envelope.from_bytes(payload).signed, [PrivateKey.generate()]).raw

    @staticmethod
    def badly_signed(payload: bytes) -> bytes:
        """The genuine signature, one bit of it flipped."""
        doc = json.loads(payload)
        sig = bytearray(bytes.fromhex(doc["signatures"][0]["sig"]))
        sig[5] ^= 1
        doc["signatures"][0]["sig"] = sig.hex()
        return json.dumps(doc, separators=(",", ":")).encode()

    # -- nodes ---------------------------------------------------------------------------------

    def node(
        self, name: str, *, sources: list[str] | None = None, **gossip: Any
    ) -> tuple[Path, int]:
        """A node directory with a fixed gossip port; returns (path, port)."""
        path = self.tmp / "nodes" / name
        path.parent.mkdir(exist_ok=True)
        init_node(path, root_bytes=self.repo.root_bytes(), sources=sources or [str(self.repo.path)])
        port = gossip.pop("port", None) or free_port()
        self.configure(path, listen=f"/ip4/127.0.0.1/tcp/{port}", **gossip)
        return path, port

    @staticmethod
    def peer_id(path: Path) -> str:
        """The libp2p peer id a node will have: derived from its identity key."""
        return libp2p_peer_id(load_private_key(path / "identity.key").public_key)

    def addr(self, path: Path, port: int) -> str:
        return f"/ip4/127.0.0.1/tcp/{port}/p2p/{self.peer_id(path)}"

    @staticmethod
    def configure(path: Path, *, check_interval: int | None = None, **gossip: Any) -> None:
        config = (path / "config.toml").read_text()
        config = config.replace("loopback_only = false", "loopback_only = true")
        # Only this plugin's peer transport (an embedded Kubo per node would double the load).
        config = config.replace("\nblock = []", '\nblock = ["ipfs", "bittorrent"]')
        if check_interval is not None:
            config = config.replace("check_interval = 3600", f"check_interval = {check_interval}")
        head, sep, _tail = config.partition("[gossip]")
        if sep:  # replace an earlier [gossip] table (the last table of the file)
            config = head
        (path / "config.toml").write_text(config + "\n" + gossip_table(**gossip))
