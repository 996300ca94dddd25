"""Swarms of real libtorrent sessions, each node in its own process, on 127.0.0.1 only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from blackhole_sync_bittorrent import Torrent, create_torrent
from bt_helpers import Cluster, NodeProc, make_blob, sha256_of

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(180)]

MIB = 1024 * 1024
BACKENDS = ("asyncio", "trio")


def publish(root: Path, size: int, seed: int = 0) -> tuple[Path, Path, Torrent]:
    """A blob in root/origin and its torrent file: (blob path, torrent path, torrent)."""
    blob, _ = make_blob(root / "origin", size, seed)
    torrent = create_torrent(blob)
    torrent_path = root / f"{torrent.btih}.torrent"
    torrent_path.write_bytes(torrent.data)
    return blob, torrent_path, torrent


def start_download(
    node: NodeProc, torrent_path: Path, staging: Path, peers: list[int], **extra: Any
) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    node.request(
        "download",
        torrent=str(torrent_path),
        staging=str(staging),
        cap=64 * MIB,
        peers=[["127.0.0.1", port] for port in peers],
        **extra,
    )


def transfer_stats(node: NodeProc, btih: str) -> dict[str, Any]:
    stats: dict[str, Any] = node.request("stats")["transfers"][btih]
    return stats


def test_eight_downloaders_fetch_one_blob_from_one_seeder(cluster: Cluster, tmp_path: Path) -> None:
    blob, torrent_path, torrent = publish(tmp_path, 4 * MIB)
    seeder = cluster.node("seeder")
    seeder.request("seed", torrent=str(torrent_path), file=str(blob), upload_limit=4 * MIB)
    downloaders: list[NodeProc] = []
    for i in range(8):
        node = cluster.node(f"dl{i}", backend=BACKENDS[i % 2])
        known = [seeder.port, *(d.port for d in downloaders)]
        start_download(node, torrent_path, tmp_path / f"stage{i}", known)
        downloaders.append(node)
    for i, node in enumerate(downloaders):
        done = node.wait_event("finished", timeout=90)
        assert sha256_of(Path(done["path"])) == torrent.name, f"dl{i}"
    seeded = transfer_stats(seeder, torrent.btih)
    received = [transfer_stats(node, torrent.btih) for node in downloaders]
    assert all(r["have_bytes"] == torrent.length for r in received)
    assert sum(r["payload_uploaded"] for r in received) > 0  # peers served each other
    assert 1.0 <= seeded["ratio"] <= 8.5
    assert seeded["peers_seen"] >= 1


def test_seeder_leaves_midway_and_the_swarm_completes_from_peers_and_a_web_seed(
    cluster: Cluster, tmp_path: Path
) -> None:
    blob, torrent_path, torrent = publish(tmp_path, 6 * MIB, seed=1)
    _, base_url = cluster.webseed(blob.parent)
    seeder = cluster.node("seeder")
    seeder.request("seed", torrent=str(torrent_path), file=str(blob), upload_limit=1 * MIB)
    downloaders: list[NodeProc] = []
    for i in range(4):
        node = cluster.node(f"dl{i}", backend=BACKENDS[i % 2])
        start_download(
            node,
            torrent_path,
            tmp_path / f"stage{i}",
            [seeder.port, *(d.port for d in downloaders)],
            stall_timeout=2.0,
        )
        downloaders.append(node)
    # Let the seeder hand out about a third of the blob, then make it leave.
    deadline = time.monotonic() + 60
    while transfer_stats(seeder, torrent.btih)["payload_uploaded"] < 2 * MIB:
        assert time.monotonic() < deadline, "the seeder uploads nothing"
        time.sleep(0.2)
    assert seeder.quit() == 0
    web_seeded = 0
    for i, node in enumerate(downloaders):
        first = node.wait_for(lambda m: m.get("event") in ("finished", "stalled"), timeout=60)
        if first["event"] == "stalled":
            node.request("web_seed", btih=torrent.btih, url=base_url + torrent.name)
            web_seeded += 1
        done = node.wait_event("finished", timeout=60)
        assert sha256_of(Path(done["path"])) == torrent.name, f"dl{i}"
    received = [transfer_stats(node, torrent.btih) for node in downloaders]
    print([(r["from_peers"], r["from_web_seeds"], r["payload_downloaded"]) for r in received])
    assert web_seeded >= 1
    assert sum(r["from_web_seeds"] for r in received) > 0
    assert sum(r["from_peers"] for r in received) > 2 * MIB  # more than the seeder sent
    assert sum(r["from_web_seeds"] for r in received) < len(received) * torrent.length


def test_a_peer_serving_corrupt_pieces_is_banned_and_the_blob_still_verifies(
    cluster: Cluster, tmp_path: Path
) -> None:
    blob, torrent_path, torrent = publish(tmp_path, 3 * MIB, seed=2)
    corrupt = tmp_path / "corrupt" / torrent.name
    corrupt.parent.mkdir()
    data = bytearray(blob.read_bytes())
    for offset in range(0, len(data), torrent.piece_length):
        data[offset + 1000] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    _, bad_port = cluster.badpeer(torrent_path, corrupt)
    seeder = cluster.node("seeder")
    seeder.request("seed", torrent=str(torrent_path), file=str(blob), upload_limit=1 * MIB)
    downloaders = [cluster.node(f"dl{i}", backend=BACKENDS[i % 2]) for i in range(2)]
    for i, node in enumerate(downloaders):
        start_download(node, torrent_path, tmp_path / f"stage{i}", [bad_port, seeder.port])
    for i, node in enumerate(downloaders):
        done = node.wait_event("finished", timeout=90)
        assert sha256_of(Path(done["path"])) == torrent.name, f"dl{i}"
        stats = transfer_stats(node, torrent.btih)
        assert stats["hash_failures"] >= 1, stats
        assert stats["peers_banned"] >= 1, stats
        banned = node.wait_event("peerbanned", timeout=1)
        assert banned["address"] == ["127.0.0.1", bad_port]


def test_a_torrent_whose_file_is_longer_than_the_cap_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, torrent_path, torrent = publish(tmp_path, 1 * MIB + 1)
    node = cluster.node("dl")
    (tmp_path / "stage").mkdir()
    for where in ({"cap": 1 * MIB}, {"cap": 64 * MIB, "max_length": 1 * MIB}):
        refused = node.request(
            "download",
            torrent=str(torrent_path),
            staging=str(tmp_path / "stage"),
            expect_error=True,
            **where,
        )
        assert refused["error"] == "TooLarge"
    assert list((tmp_path / "stage").iterdir()) == []
    assert node.request("stats")["transfers"] == {}
    assert torrent.length == 1 * MIB + 1


def test_a_torrent_with_another_info_hash_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    _, _, wanted = publish(tmp_path / "a", 256 * 1024, seed=3)
    _, other_path, _ = publish(tmp_path / "b", 256 * 1024, seed=4)
    node = cluster.node("dl")
    (tmp_path / "stage").mkdir()
    refused = node.request(
        "download",
        torrent=str(other_path),
        staging=str(tmp_path / "stage"),
        cap=MIB,
        expected_btih=wanted.btih,
        expect_error=True,
    )
    assert refused["error"] == "InfoHashMismatch"
    assert wanted.btih in refused["message"]
    assert node.request("stats")["transfers"] == {}


@pytest.mark.parametrize("stop", ["quit", "kill"])
def test_a_restart_resumes_a_half_finished_download(
    cluster: Cluster, tmp_path: Path, stop: str
) -> None:
    blob, torrent_path, torrent = publish(tmp_path, 6 * MIB, seed=5)
    seeder = cluster.node("seeder")
    seeder.request("seed", torrent=str(torrent_path), file=str(blob), upload_limit=1 * MIB)
    args = ["--resume-interval", "0.5"]
    first = cluster.node("dl", args=args, backend="trio")
    start_download(first, torrent_path, tmp_path / "stage", [seeder.port])
    first.wait_for(
        lambda m: m.get("event") == "progress" and m["have_bytes"] >= 0.4 * torrent.length,
        timeout=60,
    )
    if stop == "quit":
        assert first.quit() == 0  # a clean stop saves resume data
    else:
        first.wait_for(
            lambda m: m.get("event") == "progress" and m["have_bytes"] >= 0.5 * torrent.length, 60
        )
        first.kill()  # only the periodic resume data is there
    resume = tmp_path / "dl" / f"{torrent.btih}.fastresume"
    assert resume.is_file()

    again = cluster.node("dl-again", args=args, state="dl")
    start_download(again, torrent_path, tmp_path / "stage", [seeder.port])
    started = again.wait_event("started", timeout=30)
    assert started["from_resume_data"] is True
    assert started["have_bytes"] >= 0.3 * torrent.length
    done = again.wait_event("finished", timeout=60)
    assert sha256_of(Path(done["path"])) == torrent.name
    after = transfer_stats(again, torrent.btih)
    assert (
        after["payload_downloaded"]
        <= torrent.length - started["have_bytes"] + 4 * torrent.piece_length
    )
    assert after["payload_downloaded"] < torrent.length
