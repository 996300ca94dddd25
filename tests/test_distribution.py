"""UpdateDistribution and P2PUpdateDistribution over real transports (memory and local)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from blackhole_sync.distribution import P2PUpdateDistribution, UpdateDistribution
from blackhole_sync.documents import Envelope, Index
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import NoSuchVersionError
from blackhole_sync.fetch import LocalTransport, Verdict
from blackhole_sync.manager import UpdateManager, init_node
from blackhole_sync.release import Repository
from blackhole_sync.testing import MemoryHub, MemoryTransport

PAYLOAD = b"blackhole node build " * 3000


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    key = PrivateKey.generate()
    repo = Repository.init(
        tmp_path / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key, sign_with=[key],
    )  # fmt: skip
    (tmp_path / "app").write_bytes(PAYLOAD)
    repo.build_release("1.0.0", [tmp_path / "app"])
    repo.sign_release("1.0.0", key)
    repo.publish_release("1.0.0", key)
    (tmp_path / "app").write_bytes(PAYLOAD + b"draft")
    repo.build_release("1.1.0", [tmp_path / "app"], delta_from=None)
    return repo


def make_node(tmp_path: Path, repo: Repository) -> Path:
    node = tmp_path / "node"
    init_node(node, root_bytes=(repo.path / "root.json").read_bytes(), sources=[str(repo.path)])
    return node


@pytest.mark.anyio
async def test_publisher_spreads_blobs_and_announces_the_signed_index(
    tmp_path: Path, repo: Repository
) -> None:
    hub, store = MemoryHub(), {}
    memory = MemoryTransport(hub=hub, store=store)
    listener = MemoryTransport(
        hub=hub, store=store, message_validator=lambda message: Verdict.ACCEPT
    )
    subscription = listener.subscribe(["index"])
    usb = LocalTransport(root=tmp_path / "usb-stick")
    p2p = P2PUpdateDistribution(repo, {"memory": memory, "usb": usb})
    result = await p2p.distribute_update("1.0.0")
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert list(result.locators) == [sha]
    assert set(result.locators[sha]) == {"memory", "usb"}
    assert (tmp_path / "usb-stick" / "blobs" / sha).read_bytes() == PAYLOAD
    assert result.announced_on == ("memory",)
    with anyio.fail_after(5):
        announcement = await subscription.__anext__()
    index = Envelope.from_bytes(announcement.payload, expected_type="index").parse(Index.from_dict)
    assert "1.0.0" in index.releases("stable")
    assert (
        store[f"blobs/{sha}"] == PAYLOAD if f"blobs/{sha}" in store else PAYLOAD in store.values()
    )
    with pytest.raises(NoSuchVersionError):
        await p2p.distribute_update("1.1.0")  # a draft is never distributed
    await subscription.aclose()  # type: ignore[attr-defined]
    await memory.aclose()
    await listener.aclose()
    hub.close()


@pytest.mark.anyio
async def test_node_retrieves_then_seeds_what_it_verified(tmp_path: Path, repo: Repository) -> None:
    node = make_node(tmp_path, repo)
    seeded = tmp_path / "seeded"
    async with UpdateManager(node) as manager:
        distribution = UpdateDistribution(manager, {"local": LocalTransport(root=seeded)})
        package = await distribution.retrieve_update("1.0.0")
        assert package.version == "1.0.0"
        offered = await distribution.distribute_update(package)
        await manager.apply_update(package)
        seeded_again = await distribution.seed_update("1.0.0")
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert list(offered.locators) == list(seeded_again.locators) == [sha]
    assert (seeded / "blobs" / sha).read_bytes() == PAYLOAD
    (node / "versions" / "1.0.0" / "app").chmod(0o644)
    with open(node / "versions" / "1.0.0" / "app", "r+b") as f:  # tamper after install
        f.write(b"X")
    async with UpdateManager(node) as manager:
        distribution = UpdateDistribution(manager, {"local": LocalTransport(root=seeded)})
        with pytest.raises(Exception, match="does not match its manifest"):
            await distribution.seed_update("1.0.0")
