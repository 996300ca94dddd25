"""The engine itself: loopback-only settings, rate limits on loopback, anyio backends, stopping."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import psutil
import pytest
from blackhole_sync_bittorrent import (
    Engine,
    EngineConfig,
    Finished,
    Started,
    TooLarge,
    TransferFailed,
    build_settings,
    create_torrent,
)
from bt_helpers import Cluster, assert_port_free, make_blob, sha256_of

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(120)]

MIB = 1024 * 1024

LOOPBACK_SETTINGS = {
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_lsd": False,
    "dht_bootstrap_nodes": "",
    "outgoing_interfaces": "127.0.0.1",
    "webtorrent_stun_server": "",
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_ignore_dark_internet": False,
    "dht_enforce_node_id": False,
    "allow_multiple_connections_per_ip": True,
    "apply_filter_to_dht": True,
}


def test_loopback_only_effective_settings(cluster: Cluster) -> None:
    node = cluster.node("n")
    settings = node.request("settings")["settings"]
    assert {k: settings[k] for k in LOOPBACK_SETTINGS} == LOOPBACK_SETTINGS
    assert settings["listen_interfaces"] == "127.0.0.1:0"  # an ephemeral port, on loopback
    assert settings["enable_dht"] is True
    sockets = psutil.Process(node.popen.pid).net_connections(kind="inet")
    assert sockets, "the node listens somewhere"
    assert {s.laddr.ip for s in sockets} == {"127.0.0.1"}
    # libtorrent's defaults, for contrast: what loopback_only turns off.
    public = build_settings(EngineConfig(state_dir=Path("unused"), loopback_only=False))
    assert public["enable_upnp"] and public["enable_natpmp"] and public["enable_lsd"]
    assert public["dht_bootstrap_nodes"] and public["listen_interfaces"] == "0.0.0.0:0"
    assert public["dht_restrict_routing_ips"] and public["dht_enforce_node_id"]


def test_extra_settings_cannot_reopen_the_network() -> None:
    config = EngineConfig(
        state_dir=Path("unused"),
        extra_settings={"enable_upnp": True, "dht_bootstrap_nodes": "router.example:6881"},
    )
    settings = build_settings(config)
    assert settings["enable_upnp"] is False and settings["dht_bootstrap_nodes"] == ""


@pytest.mark.parametrize("peer_class_filter", [True, False])
def test_upload_limit_holds_on_loopback_only_with_the_peer_class_filter(
    cluster: Cluster, tmp_path: Path, peer_class_filter: bool
) -> None:
    blob, _ = make_blob(tmp_path / "origin", 3 * MIB)
    torrent = create_torrent(blob)
    torrent_path = tmp_path / "t.torrent"
    torrent_path.write_bytes(torrent.data)
    args = ["--upload-rate", str(1 * MIB), "--no-dht"]
    if not peer_class_filter:
        args.append("--no-peer-class-filter")
    seeder = cluster.node("seeder", args=args)
    seeder.request("seed", torrent=str(torrent_path), file=str(blob))
    node = cluster.node("dl", args=["--no-dht"])
    (tmp_path / "stage").mkdir()
    started = time.monotonic()
    node.request(
        "download",
        torrent=str(torrent_path),
        staging=str(tmp_path / "stage"),
        cap=4 * MIB,
        peers=[["127.0.0.1", seeder.port]],
    )
    node.wait_event("finished", timeout=60)
    elapsed = time.monotonic() - started
    if peer_class_filter:
        assert elapsed >= 2.0, f"3 MiB at 1 MiB/s took {elapsed:.1f}s"
    else:
        assert elapsed < 2.0, f"the local peer class ignores the limit, yet it took {elapsed:.1f}s"


def assert_opened_read_only(path: Path) -> None:
    """This process holds ``path`` open or mapped, and never for writing (root ignores 0444,
    so the mode bits alone would prove nothing)."""
    target = str(path.resolve())
    seen = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != target:
                continue
            flags = next(
                int(line.split()[1], 8)
                for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                if line.startswith("flags:")
            )
        except OSError:
            continue
        seen += 1
        assert flags & os.O_ACCMODE == os.O_RDONLY, f"fd {fd} flags {flags:o}"
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(target):
            seen += 1
            assert line.split()[1][1] == "-", line  # no write permission on the mapping
    assert seen, "libtorrent has the file neither open nor mapped"


def _port_is_free(port: int) -> bool:
    try:
        assert_port_free(port)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_engine_in_process_seeds_to_a_node_and_stops_cleanly(
    anyio_backend: str, cluster: Cluster, tmp_path: Path
) -> None:
    blob, digest = make_blob(tmp_path / "origin", 1 * MIB + 3)
    blob.chmod(0o444)
    torrent = await anyio.to_thread.run_sync(create_torrent, blob)
    torrent_path = tmp_path / "t.torrent"
    torrent_path.write_bytes(torrent.data)
    config = EngineConfig(state_dir=tmp_path / "state", tick_interval=0.1)
    async with Engine(config) as engine:
        port = engine.listen_port
        assert engine.dht is not None
        client_port = engine.dht.local_address[1]
        with pytest.raises(RuntimeError, match="one libtorrent engine per process"):
            async with Engine(config):
                pass
        seed = await engine.seed(torrent, blob, upload_limit=4 * MIB)
        node = cluster.node("dl", backend="trio" if anyio_backend == "asyncio" else "asyncio")
        (tmp_path / "stage").mkdir()
        await anyio.to_thread.run_sync(
            lambda: node.request(
                "download",
                torrent=str(torrent_path),
                staging=str(tmp_path / "stage"),
                cap=2 * MIB,
                peers=[["127.0.0.1", port]],
            )
        )
        done = await anyio.to_thread.run_sync(lambda: node.wait_event("finished", timeout=30))
        assert sha256_of(Path(done["path"])) == digest
        with anyio.fail_after(10):
            while seed.stats().payload_uploaded < torrent.length:  # noqa: ASYNC110 - polling stats
                await anyio.sleep(0.1)
        stats = seed.stats()
        assert stats.role == "seed" and stats.ratio == pytest.approx(1.0, abs=0.05)
        assert_opened_read_only(blob)
        assert engine.stats().peers_seen == 1
        with pytest.raises(TooLarge):
            await engine.download(torrent, tmp_path / "stage", max_length=torrent.length - 1)
    # Closed: the session is gone, its TCP/UDP port and the DHT client's port are free, and
    # another engine may open in this process.
    assert _port_is_free(port) and _port_is_free(client_port)
    async with Engine(config) as again:
        assert again.listen_port > 0
    for process in psutil.Process().children(recursive=True):
        assert process.pid == node.popen.pid or not process.is_running()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_cancelling_a_download_closes_the_engine_and_keeps_resume_data(
    anyio_backend: str, cluster: Cluster, tmp_path: Path
) -> None:
    blob, _ = make_blob(tmp_path / "origin", 2 * MIB, seed=7)
    torrent = await anyio.to_thread.run_sync(create_torrent, blob)
    torrent_path = tmp_path / "t.torrent"
    torrent_path.write_bytes(torrent.data)
    seeder = cluster.node("seeder", args=["--no-dht"])
    await anyio.to_thread.run_sync(
        lambda: seeder.request(
            "seed", torrent=str(torrent_path), file=str(blob), upload_limit=256 * 1024
        )
    )
    config = EngineConfig(state_dir=tmp_path / "state", tick_interval=0.1, enable_dht=False)
    (tmp_path / "stage").mkdir()
    events = []
    with anyio.CancelScope() as scope:
        async with Engine(config) as engine:
            port = engine.listen_port
            download = await engine.download(
                torrent, tmp_path / "stage", max_length=4 * MIB, peers=[("127.0.0.1", seeder.port)]
            )
            with download.events() as stream, anyio.fail_after(30):
                async for event in stream:
                    events.append(event)
                    if download.stats().have_bytes >= 256 * 1024:
                        break
            scope.cancel()  # the caller gives up: leaving the block under cancellation
            await anyio.sleep(30)
    assert scope.cancelled_caught
    assert isinstance(events[0], Started)
    assert not any(isinstance(e, Finished) for e in events)
    assert (tmp_path / "state" / f"{torrent.btih}.fastresume").is_file()
    assert _port_is_free(port)
    with pytest.raises(TransferFailed):
        await download.wait_finished()
