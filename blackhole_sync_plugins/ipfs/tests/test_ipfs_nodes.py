"""Two embedded nodes, each in its own process, on 127.0.0.1; and the rpc backend against the
Kubo RPC facade over a third. Every test runs under asyncio and trio (nodes and client alike)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from blackhole_sync_ipfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    FetchTimeoutError,
    LengthExceededError,
    PinError,
    RpcNode,
    cid_of_bytes,
    cid_of_file,
)
from blackhole_sync_ipfs.testing import NodeProcess, NodeProcessError
from ipfs_helpers import needs_embedded

pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("net"), needs_embedded]

NODE_ARGS = ("--pin-check-timeout", "2")
# 0, one byte, exactly one chunk, one chunk and a byte, several MiB, and more than MAX_LINKS
# leaves (a second level of dag-pb nodes).
SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * 2**20 + 3, (MAX_LINKS + 10) * CHUNK_SIZE + 5]


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("blobs")
    out = {}
    for size in SIZES:
        path = base / f"blob-{size}"
        path.write_bytes(random.Random(size).randbytes(size))
        out[size] = path
    return out


@pytest.fixture(scope="module")
async def pair(
    anyio_backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[NodeProcess, NodeProcess]]:
    base = tmp_path_factory.mktemp(f"pair-{anyio_backend}")
    async with (
        NodeProcess(base / "a", backend=anyio_backend, extra_args=NODE_ARGS) as a,
        NodeProcess(base / "b", backend=anyio_backend, extra_args=NODE_ARGS) as b,
    ):
        await b.call("connect", addr=a.address)
        yield a, b


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_round_trip(pair: tuple[NodeProcess, NodeProcess], blobs: dict[int, Path], tmp_path: Path) -> None:
    a, b = pair
    blob = blobs[5 * 2**20 + 3]
    cid = await a.call("add", path=str(blob))
    assert cid == cid_of_file(blob)
    result = await b.call("get", cid=cid, max_length=blob.stat().st_size, out=str(tmp_path / "out"))
    assert result["failure"] is None
    assert result["written"] == blob.stat().st_size
    assert result["sha256"] == sha256(blob) == sha256(tmp_path / "out")
    counters = await b.call("counters")
    assert counters["bytes_fetched"] >= blob.stat().st_size
    assert (await a.call("counters"))["bytes_added"] >= blob.stat().st_size


async def test_unknown_cid_times_out(pair: tuple[NodeProcess, NodeProcess], tmp_path: Path) -> None:
    _, b = pair
    unknown = cid_of_bytes(b"nobody has this " + random.randbytes(16))
    with anyio.fail_after(20):
        result = await b.call("get", cid=unknown, max_length=100, timeout=1.0, out=str(tmp_path / "o"))
    assert result["failure"]["error"] == "FetchTimeoutError"
    assert result["written"] == 0


async def test_cap_cuts_the_stream(pair: tuple[NodeProcess, NodeProcess], blobs: dict[int, Path], tmp_path: Path) -> None:
    a, b = pair
    blob = blobs[5 * 2**20 + 3]
    cid = await a.call("add", path=str(blob))
    cap = 3 * CHUNK_SIZE + 1000
    result = await b.call("get", cid=cid, max_length=cap, out=str(tmp_path / "out"))
    assert result["failure"]["error"] == "LengthExceededError"
    assert result["written"] == cap
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()[:cap]


async def test_pin_and_unpin(pair: tuple[NodeProcess, NodeProcess], blobs: dict[int, Path]) -> None:
    a, b = pair
    cid = await a.call("add", path=str(blobs[CHUNK_SIZE + 1]))
    assert cid in await a.call("pins")
    assert cid not in await b.call("pins")
    await b.call("pin", cid=cid)  # fetched from a
    assert cid in await b.call("pins")
    await b.call("unpin", cid=cid)
    assert cid not in await b.call("pins")
    with pytest.raises(NodeProcessError) as info:
        await b.call("unpin", cid=cid)
    assert info.value.error == PinError.__name__


async def test_offline_cid_equals_the_nodes(
    pair: tuple[NodeProcess, NodeProcess], blobs: dict[int, Path], tmp_path: Path
) -> None:
    """Kubo's own add (this build only does CIDv0 with dag-pb leaves) agrees with the builder's
    CIDv0 form for every size, so the layout is Kubo's; the CIDv1 raw-leaves DAG the engine adds
    is read back by Kubo's own UnixFS reader and fetched over bitswap byte for byte."""
    a, b = pair
    for size, blob in blobs.items():
        assert await a.call("add_v0", path=str(blob)) == cid_of_file(blob, cid_version=0), size
        cid = await a.call("add", path=str(blob))
        assert cid == cid_of_file(blob), size
        native = await a.call("download_native", cid=cid, out=str(tmp_path / f"native-{size}"))
        assert native == {"status": 0, "sha256": sha256(blob)}, size
    big = blobs[SIZES[-1]]
    result = await b.call("get", cid=cid_of_file(big), max_length=big.stat().st_size, out=str(tmp_path / "big"))
    assert result["failure"] is None and result["sha256"] == sha256(big)


async def test_pubsub_both_ways(pair: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = pair
    topic = f"blackhole-test-{random.randrange(1 << 30)}"
    await a.call("subscribe", topic=topic)
    await b.call("subscribe", topic=topic)
    for sender, receiver in ((a, b), (b, a)):
        payload = random.randbytes(40)
        await deliver(sender, receiver, topic, payload)


async def deliver(sender: NodeProcess, receiver: NodeProcess, topic: str, payload: bytes) -> None:
    """Publish until the receiver has it (gossipsub needs a heartbeat or two to mesh)."""
    import base64

    encoded = base64.b64encode(payload).decode()
    with anyio.fail_after(30):
        while True:
            await sender.call("publish", topic=topic, payload=encoded)
            await anyio.sleep(0.3)
            got = await receiver.call("messages", topic=topic)
            if any(m["payload"] == encoded and m["from"] == sender.peer_id for m in got):
                return


async def test_loopback_only(pair: tuple[NodeProcess, NodeProcess]) -> None:
    a, _ = pair
    config = await a.call("config")
    assert config["Addresses"]["Swarm"] == ["/ip4/127.0.0.1/tcp/0"]
    assert config["Bootstrap"] == []
    assert config["Discovery"]["MDNS"]["Enabled"] is False
    assert config["Routing"]["Type"] == "none"
    assert config["Swarm"]["Transports"]["Network"]["QUIC"] is False
    assert config["Swarm"]["AddrFilters"]
    assert "PrivKey" not in config["Identity"]
    assert all(addr.startswith("/ip4/127.0.0.1/tcp/") for addr in a.ready["addresses"])
    sockets = await a.call("sockets")
    assert sockets, "the node should listen"
    assert {s["ip"] for s in sockets} == {"127.0.0.1"}
    assert not [s for s in sockets if s["type"] == "udp"]


async def test_add_after_a_failed_fetch(pair: tuple[NodeProcess, NodeProcess], tmp_path: Path) -> None:
    """A node that asked for a CID in vain caches "not found"; adding that content later still
    works (the engine restarts the node) and the other node can fetch it."""
    a, b = pair
    data = b"published later " + random.randbytes(300_000)
    cid = cid_of_bytes(data)
    result = await b.call("get", cid=cid, max_length=len(data), timeout=1.0, out=str(tmp_path / "x"))
    assert result["failure"]["error"] == "FetchTimeoutError"
    blob = tmp_path / "later"
    blob.write_bytes(data)
    assert await b.call("add", path=str(blob)) == cid
    result = await a.call("get", cid=cid, max_length=len(data), timeout=10, out=str(tmp_path / "y"))
    assert result["failure"] is None and result["sha256"] == hashlib.sha256(data).hexdigest()


async def test_rpc_backend(
    anyio_backend: str, pair: tuple[NodeProcess, NodeProcess], blobs: dict[int, Path], tmp_path: Path
) -> None:
    """The rpc backend (in this process) against the Kubo RPC facade over a third node."""
    _, b = pair
    async with NodeProcess(tmp_path / "c", backend="asyncio", rpc_facade=True, extra_args=NODE_ARGS) as c:
        assert c.rpc_url is not None
        async with RpcNode(c.rpc_url, timeout=30) as rpc:
            assert rpc.daemon_version
            info = await rpc.id()
            assert info.peer_id == c.peer_id
            blob = blobs[5 * 2**20 + 3]
            cid = await rpc.add_file(blob)
            assert cid == cid_of_file(blob)
            assert cid in await rpc.pins()

            received = bytearray()

            async def write(chunk: bytes) -> None:
                received.extend(chunk)

            assert await rpc.get(cid, write, max_length=blob.stat().st_size) == blob.stat().st_size
            assert bytes(received) == blob.read_bytes()
            assert rpc.counters.bytes_fetched == blob.stat().st_size

            received.clear()
            with pytest.raises(LengthExceededError):
                await rpc.get(cid, write, max_length=1000)
            assert bytes(received) == blob.read_bytes()[:1000]

            with pytest.raises(FetchTimeoutError):
                await rpc.get(cid_of_bytes(random.randbytes(32)), write, max_length=10, timeout=1.0)

            # The content added through the RPC API is served to an embedded peer.
            await rpc.connect(b.address)
            result = await b.call("get", cid=cid, max_length=blob.stat().st_size, out=str(tmp_path / "o"))
            assert result["failure"] is None and result["sha256"] == sha256(blob)

            await rpc.unpin(cid)
            assert cid not in await rpc.pins()
            await rpc.pin(cid)
            assert cid in await rpc.pins()

            topic = f"rpc-{random.randrange(1 << 30)}"
            await b.call("subscribe", topic=topic)
            async with rpc.subscribe(topic) as sub:
                payload = random.randbytes(24)
                import base64

                with anyio.fail_after(30):
                    while True:
                        await b.call("publish", topic=topic, payload=base64.b64encode(payload).decode())
                        with anyio.move_on_after(0.5):
                            message = await sub.receive()
                            if message.payload == payload:
                                break
                assert message.from_peer == b.peer_id
                mine = random.randbytes(24)
                with anyio.fail_after(30):
                    while True:
                        await rpc.publish(topic, mine)
                        await anyio.sleep(0.3)
                        got = await b.call("messages", topic=topic)
                        if any(base64.b64decode(m["payload"]) == mine for m in got):
                            break
        report = await c.close()
        assert report is not None and report["sockets"] == []


async def test_nodes_started_together_fetch_from_their_bootstrap_peer_at_once(
    anyio_backend: str, blobs: dict[int, Path], tmp_path: Path
) -> None:
    """Five nodes start side by side, bootstrapped to a seed, and each fetches from it at once.

    Kubo's own bootstrapper dialled the seed before bitswap listened for connections, so
    bitswap never asked the seed for a block: such a fetch waited until the seed happened to
    send it a message (5 of 8 starts beside another node). The node now dials its bootstrap
    peers itself once it runs."""
    blob = blobs[CHUNK_SIZE + 1]
    async with NodeProcess(tmp_path / "seed", backend=anyio_backend, extra_args=NODE_ARGS) as seed:
        cid = await seed.call("add", path=str(blob))
        nodes = [
            NodeProcess(tmp_path / f"n{i}", backend=anyio_backend,
                        extra_args=(*NODE_ARGS, "--bootstrap", seed.address))
            for i in range(5)
        ]  # fmt: skip
        try:
            async with anyio.create_task_group() as tg:
                for node in nodes:
                    tg.start_soon(node.__aenter__)
            for i, node in enumerate(nodes):
                assert any(p.endswith(seed.peer_id) for p in await node.call("peers"))
                result = await node.call(
                    "get", cid=cid, max_length=blob.stat().st_size, timeout=5.0,
                    out=str(tmp_path / f"out-{i}"),
                )  # fmt: skip
                assert result["failure"] is None, (i, result["failure"])
                assert result["sha256"] == sha256(blob)
        finally:
            with anyio.CancelScope(shield=True):
                for node in nodes:
                    await node.close()


async def test_clean_shutdown(anyio_backend: str, tmp_path: Path) -> None:
    """Closing with a fetch still waiting leaves no socket and no engine thread."""
    async with NodeProcess(tmp_path / "n", backend=anyio_backend, extra_args=NODE_ARGS) as node:
        result = await node.call(
            "get", cid=cid_of_bytes(random.randbytes(32)), max_length=10, timeout=0.5, out=str(tmp_path / "o")
        )
        assert result["failure"]["error"] == "FetchTimeoutError"
        assert any(name.startswith("bhs-ipfs-") for name in await node.call("threads"))
        report = await node.close()
    assert report is not None
    assert report["sockets"] == []
    assert not [name for name in report["threads"] if name.startswith("bhs-ipfs")]
