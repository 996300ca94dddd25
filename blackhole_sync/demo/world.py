"""The demo's world: fresh keys, a repository, its releases and governance documents, and the
node directories (configured for gossip, BitTorrent and IPFS on 127.0.0.1 only).

The origin runs HTTP, gossip and a BitTorrent seed, not IPFS: what it sends is then all in its
own byte counters (HTTP and the seed's upload; Kubo keeps no per-peer upload count here). IPFS
is the nodes' network: each runs an embedded Kubo node, pins the blobs it keeps and serves
them to the others, and hears announcements over its pubsub too.

Keys: one root key, 2-of-3 release keys, an online index key and 2-of-3 governance keys, all
generated fresh under ``WORK/keys``. Artifacts are deterministic: an executable shell script
(its ``--health`` answers the release's health check) followed by a pseudo-random payload, so
a new version differs from the last in a few regions and goes out as a small delta.

Phases: a node's place in a rollout is ``node_position(node id, release digest, salt)``
(network/rollout.py). :func:`choose_salt` tries ``demo-0``, ``demo-1``, ... and takes the first
salt that puts exactly the intended number of online nodes in each phase (and, for the bad
release, the offline node outside the first phase): the demo says which salt it chose.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import define

from .._fsutil import sha256_hex
from ..clock import utcnow
from ..codecs import libp2p_peer_id, write_key_pair
from ..documents import (
    Command,
    HaltDoc,
    PrivateKey,
    Proposal,
    RolloutPhase,
    RolloutPlan,
    ValidatorSet,
)
from ..fetch import make_plugin_manager
from ..manager import init_node
from ..network import node_position
from ..release import Repository, publish_coordination, write_coordination_draft

__all__ = ["PHASES", "DemoNode", "World", "choose_salt", "phase_counts"]

#: The rollout phases: (name, cumulative share of the nodes in basis points).
PHASES: tuple[tuple[str, int], ...] = (("canary", 2500), ("half", 5000), ("all", 10_000))

SCRIPT = """#!/bin/sh
# A stand-in for the Blackhole node binary, release {version}.
if [ "$1" = "--health" ]; then
  echo "blackhole node {version}: {health}"
  exit {status}
fi
echo "blackhole node {version}"
exit 0
# payload:
"""


def now() -> dt.datetime:
    return utcnow()


@define
class DemoNode:
    """One node of the demo: its directory, identity and addresses."""

    name: str
    path: Path
    node_id: str
    peer_id: str
    gossip_port: int
    bt_port: int
    ipfs_port: int
    ipfs_peer_id: str
    offline: bool = False

    @property
    def gossip_addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.gossip_port}/p2p/{self.peer_id}"

    @property
    def ipfs_addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.ipfs_port}/p2p/{self.ipfs_peer_id}"

    def current(self) -> str | None:
        link = self.path / "current"
        try:
            return link.resolve().name if link.is_symlink() else None
        except OSError:
            return None


def phase_counts(online: int) -> list[int]:
    """How many of ``online`` nodes each phase gets (each at least one when possible)."""
    counts, placed = [], 0
    for i, (_name, bp) in enumerate(PHASES):
        left = len(PHASES) - i - 1
        target = online if not left else max(placed + 1, online * bp // 10_000)
        target = min(target, online - left) if online >= len(PHASES) else min(target, online)
        counts.append(max(0, target - placed))
        placed = max(placed, target)
    return counts


def choose_salt(
    online: Sequence[str], digest: str, *, avoid_first: Sequence[str] = (), tries: int = 200_000
) -> tuple[str, list[int]]:
    """The first salt ``demo-<i>`` whose phases hold exactly :func:`phase_counts` of the
    ``online`` node ids and none of ``avoid_first`` in the first phase; (salt, each online
    node's phase index in order)."""
    want = phase_counts(len(online))
    for i in range(tries):
        salt = f"demo-{i}"
        phases = [_phase_of(node_position(n, digest, salt)) for n in online]
        got = [phases.count(p) for p in range(len(PHASES))]
        if got != want:
            continue
        if any(_phase_of(node_position(n, digest, salt)) == 0 for n in avoid_first):
            continue
        return salt, phases
    raise RuntimeError(f"no salt among {tries} puts {want} nodes in the phases")


def _phase_of(position: int) -> int:
    for i, (_name, bp) in enumerate(PHASES):
        if position < bp:
            return i
    return len(PHASES) - 1


class World:
    """Keys, repository, releases, governance documents and node directories."""

    def __init__(self, work: Path, *, size: int) -> None:
        self.work = work
        self.size = size
        keys = work / "keys"
        keys.mkdir(mode=0o700)
        names = ["root", "release-1", "release-2", "release-3", "index", "gov-1", "gov-2", "gov-3"]
        self.keys: dict[str, PrivateKey] = {n: write_key_pair(keys / n) for n in names}
        self.index_key_path = keys / "index"
        k = self.keys
        self.repo = Repository.init(
            work / "repo", root_keys=[k["root"].public_key], root_threshold=1,
            release_keys=[k[f"release-{i}"].public_key for i in (1, 2, 3)], release_threshold=2,
            index_key=k["index"].public_key, sign_with=[k["root"]],
            governance_keys=[k[f"gov-{i}"].public_key for i in (1, 2, 3)],
            governance_threshold=2,
        )  # fmt: skip
        # every transport that locates blobs signs its locators into the manifests (a
        # BitTorrent info hash, an IPFS CID; computed offline, nothing is started here)
        self.plugins = make_plugin_manager(load_entrypoints=True)
        self.nodes: list[DemoNode] = []
        self._payload = bytearray(random.Random(15).randbytes(size))
        self.digests: dict[str, str] = {}

    # -- releases ------------------------------------------------------------------------

    def _artifact(self, version: str, *, healthy: bool, change: int) -> Path:
        rng = random.Random(f"change-{version}")
        for _ in range(change):  # a few regions change from one version to the next
            at = rng.randrange(0, max(1, self.size - 16_384))
            self._payload[at : at + 16_384] = rng.randbytes(16_384)
        header = SCRIPT.format(
            version=version, health="healthy" if healthy else "FAILING: cannot reach peers",
            status=0 if healthy else 1,
        )  # fmt: skip
        path = self.work / "build" / version / "blackhole-node"
        path.parent.mkdir(parents=True)
        path.write_bytes(header.encode() + bytes(self._payload))
        os.chmod(path, 0o755)  # noqa: S103 - the artifact is an executable
        return path

    def build(
        self,
        version: str,
        *,
        delta_from: Sequence[str] = (),
        healthy: bool = True,
        update_type: str = "binary",
        change: int = 8,
    ) -> str:
        """Build and sign (2 of 3 release keys) ``version``; its manifest digest."""
        artifact = self._artifact(version, healthy=healthy, change=change)
        self.repo.build_release(
            version, [artifact], delta_from=list(delta_from), update_type=update_type,
            health=Command(("./blackhole-node", "--health"), timeout=20),
            plugins=self.plugins,
        )  # fmt: skip
        self.repo.sign_release(version, self.keys["release-1"])
        self.repo.sign_release(version, self.keys["release-3"])
        digest = sha256_hex(self.repo.draft_envelope(version).raw)
        self.digests[version] = digest
        return digest

    def publish(self, version: str) -> None:
        self.repo.publish_release(version, self.keys["index"])
        index = self.repo.index()
        listed = None if index is None else index.listing(version)
        if listed is not None:
            self.digests[version] = listed.sha256

    def blobs(self, version: str) -> dict[str, dict[str, Any]]:
        """The transfer blobs of ``version``: sha256 -> {"kind", "length"}."""
        from ..documents import ReleaseManifest

        envelope, _state = self.repo.release_envelope(version)
        manifest = envelope.parse(ReleaseManifest.from_dict)
        out: dict[str, dict[str, Any]] = {}
        for a in manifest.artifacts:
            out[a.blob.sha256] = {"version": version, "kind": "artifact", "length": a.blob.length}
        for d in manifest.deltas:
            out[d.patch.sha256] = {
                "version": version, "kind": f"delta from {d.from_version}",
                "length": d.patch.length,
            }  # fmt: skip
        return out

    # -- governance (2 of 3 governance keys) ---------------------------------------------

    def govern(self, document: Any) -> None:
        for name in ("gov-1", "gov-2"):
            write_coordination_draft(self.repo, document, self.keys[name])
        publish_coordination(self.repo, self.keys["index"])

    def validators(self, nodes: Sequence[DemoNode]) -> None:
        self.govern(ValidatorSet(1, now() + dt.timedelta(days=1), {n.node_id: 1 for n in nodes}))

    def plan(
        self, release: str, salt: str, *, durations: Sequence[int], halt_bp: int
    ) -> RolloutPlan:
        phases = tuple(
            RolloutPhase(name, bp, duration)
            for (name, bp), duration in zip(PHASES, durations, strict=True)
        )
        doc = RolloutPlan(
            release, 1, now() + dt.timedelta(days=1), now() - dt.timedelta(seconds=1),
            phases, salt, halt_bp,
        )  # fmt: skip
        self.govern(doc)
        return doc

    def halt(self, release: str, reason: str) -> None:
        self.govern(HaltDoc(release, reason, 1, now() + dt.timedelta(days=1)))

    def proposal(self, release: str, *, window: int, grace: int, height: int) -> Proposal:
        doc = Proposal(
            "protocol-2", release, 2, 7500, now() - dt.timedelta(seconds=1),
            now() + dt.timedelta(seconds=window), now() + dt.timedelta(days=1), 0,
            self.digests[release], grace, height,
        )  # fmt: skip
        self.govern(doc)
        return doc

    # -- nodes ---------------------------------------------------------------------------

    def add_node(
        self, name: str, *, url: str, gossip_port: int, bt_port: int, ipfs_port: int,
        origin: dict[str, str], offline: bool = False,
    ) -> DemoNode:  # fmt: skip
        """A node directory whose agent talks to the origin (HTTP, gossip, BitTorrent) and to
        the nodes made before it (gossip, BitTorrent, IPFS), on 127.0.0.1 only.

        The offline node, back at the end, runs without BitTorrent and with ``peers_first``:
        it catches up over IPFS from the other nodes' embedded Kubo nodes (which pin the blobs
        they keep), the origin's HTTP only a fallback."""
        path = self.work / "nodes" / name
        path.parent.mkdir(exist_ok=True)
        init_node(path, root_bytes=self.repo.root_bytes(), sources=[url])
        from ..codecs import load_private_key

        identity = load_private_key(path / "identity.key")
        key = identity.public_key
        # the IPFS plugin is its own distribution (the demo checks it is installed)
        ipfs = importlib.import_module("blackhole_sync_ipfs.transport")
        ipfs_id = str(ipfs.peer_id_for(identity.seed))
        node = DemoNode(
            name, path, key.hex, libp2p_peer_id(key), gossip_port, bt_port, ipfs_port, ipfs_id,
            offline,
        )  # fmt: skip
        online = [n for n in self.nodes if not n.offline]
        boot = [origin["gossip"], *(n.gossip_addr for n in online[-2:])]
        bt_peers = [origin["bittorrent"]]
        ipfs_boot = [n.ipfs_addr for n in (online if offline else online[-3:])]
        text = (path / "config.toml").read_text()
        for old, new in (
            ("check_interval = 3600", "check_interval = 300"),
            ("loopback_only = false", "loopback_only = true"),
            ("status_interval = 300", "status_interval = 3"),
            ("rollback_on_halt = false", "rollback_on_halt = true"),
            ("\nblock = []", '\nblock = ["bittorrent"]' if offline else "\nblock = []"),
            ("peers_first = false", f"peers_first = {'true' if offline else 'false'}"),
        ):
            assert old in text, old
            text = text.replace(old, new, 1)
        text += (
            "\n[gossip]\n"
            f'listen = "/ip4/127.0.0.1/tcp/{gossip_port}"\n'
            f"bootstrap = {json.dumps(boot)}\n"
            "dial_backoff_initial = 0.3\ndial_backoff_max = 2.0\n"
            "\n[bittorrent]\n"
            f"port = {bt_port}\n"
            f"peers = {json.dumps(bt_peers)}\n"
            f"dht_bootstrap = {json.dumps(bt_peers)}\n"
            "dht_poll_interval = 15\n"
            "peer_timeout = 20\nstall_timeout = 30\ngive_up_after = 90\n"
            "\n[ipfs]\n"
            f"port = {ipfs_port}\n"
            f"bootstrap = {json.dumps(ipfs_boot)}\n"
            "fetch_timeout = 20\n"
        )
        (path / "config.toml").write_text(text)
        self.nodes.append(node)
        return node

    def origin_peer_config(self, gossip_port: int, bt_port: int) -> Path:
        path = self.work / "origin-peers.toml"
        path.write_text(
            '[plugins]\nblock = ["ipfs"]\n\n'
            f'[gossip]\nlisten = "/ip4/127.0.0.1/tcp/{gossip_port}"\n'
            "dial_backoff_initial = 0.3\ndial_backoff_max = 2.0\n\n"
            f"[bittorrent]\nport = {bt_port}\n"
        )
        return path
