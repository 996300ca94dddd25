"""Delta patches travel by BitTorrent: real node processes (``blackhole-sync node update``,
``node run``) and a real origin (``blackhole-sync serve``, HTTP only here), on 127.0.0.1.

The release builder signs each patch's ``btih``/``btmh`` into the manifest and the repository
serves its ``.torrent``; a node that applied a patch keeps it in ``NODE/blobs`` and its agent
seeds it; the next node fetches the patch from that peer rather than from the origin. A
patch locator that lies (another file's torrent) is followed, its bytes refused against the
patch's signed sha256, and the origin serves the patch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from blackhole_sync_bittorrent import create_torrent
from bt_helpers import Cluster

from blackhole_sync import Envelope, PrivateKey, ReleaseManifest, Repository, make_plugin_manager
from blackhole_sync.demo.processes import Processes, cli_args, free_port, wait_for_line
from blackhole_sync.manager import init_node

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(240)]

MIB = 1024 * 1024
OTHERS = sorted(
    {ep.name for ep in importlib.metadata.entry_points(group="blackhole_sync")}
    - {"bittorrent", "http"}
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class World:
    """A repository with 1.0.0 and 1.1.0 (a delta from 1.0.0), an HTTP origin, node dirs."""

    def __init__(self, tmp: Path, procs: Processes) -> None:
        self.tmp = tmp
        self.procs = procs
        self.key = PrivateKey.generate()
        self.repo = Repository.init(
            tmp / "repo", root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1, index_key=self.key,
            sign_with=[self.key],
        )  # fmt: skip
        rnd = random.Random(15)
        self.v1 = rnd.randbytes(4 * MIB)
        v2 = bytearray(self.v1)
        for at in range(0, len(v2), 256 * 1024):  # a quarter of the bytes change
            v2[at : at + 64 * 1024] = rnd.randbytes(64 * 1024)
        self.v2 = bytes(v2)
        self.url = ""

    def build(self, version: str, data: bytes, delta_from: list[str]) -> ReleaseManifest:
        app = self.tmp / "build" / version / "app"
        app.parent.mkdir(parents=True)
        app.write_bytes(data)
        plugins = make_plugin_manager(load_entrypoints=True, block=OTHERS)
        return self.repo.build_release(version, [app], delta_from=delta_from, plugins=plugins)

    def publish(self, version: str) -> None:
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)

    def serve(self) -> None:
        """The origin, HTTP only (no BitTorrent seed: what peers get, they get from peers)."""
        config = self.tmp / "origin.toml"
        config.write_text(f"[plugins]\nblock = {json.dumps(['bittorrent', *OTHERS])}\n")
        origin = self.procs.start("origin", cli_args(
            "serve", str(self.repo.path), "--port", "0", "--loopback-only",
            "--peer-config", str(config),
        ))  # fmt: skip
        self.url = wait_for_line(origin, lambda line: line.startswith("http://"), 60).strip()

    def origin_sent(self, relpath: str) -> int:
        """What the origin's HTTP server sent of ``relpath`` (its own counters), once settled:
        the origin rewrites them every second while they change, so the figure is read until
        it has not changed for 2.5 s (15 s at most)."""
        path = self.repo.path / ".bhsync" / "origin" / "status.json"
        deadline = time.monotonic() + 15
        last, since = None, time.monotonic()
        while True:
            status = read_json(path)
            sent = int(((status.get("http") or {}).get("by_path") or {}).get(relpath, 0))
            if sent != last:
                last, since = sent, time.monotonic()
            if time.monotonic() - since >= 2.5 or time.monotonic() > deadline:
                return sent
            time.sleep(0.25)

    def node(self, name: str, **bittorrent: Any) -> Path:
        path = self.tmp / name
        init_node(path, root_bytes=self.repo.root_bytes(), sources=[self.url])
        text = (path / "config.toml").read_text()
        for old, new in (
            ("loopback_only = false", "loopback_only = true"),
            ("\nblock = []", f"\nblock = {json.dumps(OTHERS)}"),
        ):
            assert old in text
            text = text.replace(old, new, 1)
        (path / "config.toml").write_text(text)
        configure(path, bittorrent)
        return path


def configure(node: Path, bittorrent: dict[str, Any]) -> None:
    """Set the node's ``[bittorrent]`` table (replacing any)."""
    text = (node / "config.toml").read_text().split("\n[bittorrent]\n")[0]
    lines = [f"{k} = {json.dumps(v)}" for k, v in bittorrent.items()]
    (node / "config.toml").write_text(text + "\n[bittorrent]\n" + "\n".join(lines) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update(node: Path, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        cli_args("node", "update", "--json", *extra, str(node)),
        capture_output=True, text=True, timeout=180, start_new_session=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def current_bytes(node: Path) -> bytes:
    return (node / "current" / "app").read_bytes()


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    with Processes(tmp_path / "logs") as group:
        yield group


def test_a_delta_patch_is_fetched_from_a_peer_that_applied_it(
    tmp_path: Path, procs: Processes
) -> None:
    w = World(tmp_path, procs)
    w.build("1.0.0", w.v1, [])
    w.publish("1.0.0")
    manifest = w.build("1.1.0", w.v2, ["1.0.0"])
    w.publish("1.1.0")
    [record] = manifest.deltas
    [art] = manifest.artifacts
    patch = w.repo.blob_path(record.patch.sha256).read_bytes()
    assert record.patch.length < art.length // 2
    locators = {x["kind"]: x["value"] for x in record.locators}
    torrent = create_torrent(w.repo.blob_path(record.patch.sha256))
    assert locators == {"btih": torrent.btih, "btmh": torrent.btmh}  # signed in the manifest
    assert (w.repo.path / "torrents" / f"{torrent.btih}.torrent").read_bytes() == torrent.data
    w.serve()

    # node1 has no swarm: both versions come from the origin, 1.1.0 by the patch, kept
    port1 = free_port()
    node1 = w.node("node1", port=port1, dht=False)
    assert update(node1, "--version", "1.0.0")["method"] == "full"
    assert update(node1)["method"] == "delta"
    assert (node1 / "blobs" / record.patch.sha256).read_bytes() == patch
    assert w.origin_sent(f"blobs/{record.patch.sha256}") == record.patch.length
    # ... and its agent seeds the patch it keeps
    procs.start("node1-agent", cli_args("node", "run", str(node1)))

    def seeding() -> bool:
        status = read_json(node1 / "bittorrent" / "status.json")
        return any(s.get("btih") == torrent.btih for s in status.get("seeding") or [])

    wait_until(seeding, 60, "node1 does not seed the patch")

    # node2 installs 1.0.0 from the origin, then is pointed at node1 and updates by delta
    node2 = w.node("node2", dht=False)
    assert update(node2, "--version", "1.0.0")["method"] == "full"
    configure(node2, {"dht": False, "peers": [f"127.0.0.1:{port1}"], "peer_timeout": 20})
    result = update(node2)
    assert (result["version"], result["method"]) == ("1.1.0", "delta")
    assert current_bytes(node2) == w.v2
    assert (node2 / "blobs" / record.patch.sha256).read_bytes() == patch
    fetched = read_json(node2 / "bittorrent" / "status.json")["last_fetch"]
    assert fetched["btih"] == torrent.btih
    assert fetched["from_peers"] == record.patch.length  # all of it from node1
    assert fetched["from_web_seeds"] == 0 and not fetched["web_seeds_added"]
    time.sleep(1.5)  # the origin rewrites its counters every second
    # the origin sent the patch once (to node1), and node2 only its .torrent
    assert w.origin_sent(f"blobs/{record.patch.sha256}") == record.patch.length
    assert w.origin_sent(f"torrents/{torrent.btih}.torrent") == len(torrent.data)


def test_a_patch_locator_that_lies_is_refused_and_the_origin_serves_the_patch(
    tmp_path: Path, procs: Processes, cluster: Cluster
) -> None:
    w = World(tmp_path, procs)
    w.build("1.0.0", w.v1, [])
    w.publish("1.0.0")
    manifest = w.build("1.1.0", w.v2, ["1.0.0"])
    [record] = manifest.deltas
    # A decoy of the patch's length, whose torrent even carries the patch's name: the release
    # keys sign a manifest whose patch locator names the decoy's info hashes.
    decoy = tmp_path / "decoy" / "file"
    decoy.parent.mkdir()
    decoy.write_bytes(random.Random(3).randbytes(record.patch.length))
    lie = create_torrent(decoy, sha256_hex=record.patch.sha256)
    assert lie.name == record.patch.sha256 and lie.length == record.patch.length
    lying = attrs.evolve(
        record, locators=({"kind": "btih", "value": lie.btih}, {"kind": "btmh", "value": lie.btmh})
    )
    draft = w.repo.draft_dir("1.1.0")
    signed = manifest.__class__.from_dict({**manifest.to_dict(), "deltas": [lying.to_dict()]})
    (draft / "manifest.json").write_bytes(Envelope.of(signed.to_dict(), ()).raw)
    served = draft / "served" / "torrents"
    served.mkdir(parents=True, exist_ok=True)
    (served / f"{lie.btih}.torrent").write_bytes(lie.data)
    w.publish("1.1.0")
    w.serve()
    # a peer that seeds the decoy under the lying torrent
    (tmp_path / "decoy.torrent").write_bytes(lie.data)
    seeder = cluster.node("decoy-seeder", args=["--no-dht"])
    seeder.request("seed", torrent=str(tmp_path / "decoy.torrent"), file=str(decoy))

    node = w.node("node", dht=False)
    assert update(node, "--version", "1.0.0")["method"] == "full"
    configure(node, {"dht": False, "peers": [f"127.0.0.1:{seeder.port}"], "peer_timeout": 20})
    result = update(node)
    assert (result["version"], result["method"]) == ("1.1.0", "delta")
    assert current_bytes(node) == w.v2
    kept = (node / "blobs" / record.patch.sha256).read_bytes()
    assert sha(kept) == record.patch.sha256
    fetched = read_json(node / "bittorrent" / "status.json")["last_fetch"]
    assert fetched["btih"] == lie.btih
    assert fetched["from_peers"] == record.patch.length  # the decoy came, and was refused
    time.sleep(1.5)
    assert w.origin_sent(f"blobs/{record.patch.sha256}") == record.patch.length  # the fallback
    assert seeder.request("stats")["transfers"][lie.btih]["payload_uploaded"] >= len(kept)
