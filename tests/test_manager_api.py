"""The node flow through the Python API: UpdateManager under asyncio (HTTP) and trio (file).

check_for_updates, download_update, verify_update, apply_update, get_update_status,
set_update_policy, sync_with_network and broadcast_update_status, with a plugin hook that
receives the node's signed status and checks its signature.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from blackhole_sync.documents import Envelope, NodeStatusDoc
from blackhole_sync.documents.signing import PrivateKey, PublicKey
from blackhole_sync.errors import LengthOrHashMismatchError, SecurityError
from blackhole_sync.fetch.hookspecs import hookimpl
from blackhole_sync.fetch.plugins import make_plugin_manager
from blackhole_sync.manager import UpdateManager, init_node
from blackhole_sync.node.config import NodeConfig
from blackhole_sync.node.policy import ManualUpdatePolicy, UpdatePolicy
from blackhole_sync.release import Repository

SIZE = 400_000


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("api")
    keys = {n: PrivateKey.generate() for n in ("root", "rel1", "rel2", "index")}
    repository = Repository.init(
        base / "repo",
        root_keys=[keys["root"].public_key],
        root_threshold=1,
        release_keys=[keys["rel1"].public_key, keys["rel2"].public_key],
        release_threshold=2,
        index_key=keys["index"].public_key,
        sign_with=[keys["root"]],
    )
    v1 = random.Random(7).randbytes(SIZE)
    v2 = bytearray(v1)
    v2[SIZE // 3 : SIZE // 3 + 32] = b"x" * 32
    for version, data in (("1.0.0", v1), ("1.1.0", bytes(v2))):
        src = base / version / "service"
        src.parent.mkdir()
        src.write_bytes(data)
        repository.build_release(version, [src], delta_from="auto")
        repository.sign_release(version, keys["rel1"])
        repository.sign_release(version, keys["rel2"])
        repository.publish_release(version, keys["index"])
    return {"path": repository.path, "v1": v1, "v2": bytes(v2), "keys": keys}


def make_node(path: Path, repo: Path, source: str) -> Path:
    init_node(path, root_bytes=(repo / "root.json").read_bytes(), sources=[source])
    return path


class StatusReceiver:
    """A gossip-like plugin: receives the signed status through the hook."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], bytes]] = []

    @hookimpl
    def blackhole_sync_broadcast_status(self, status: Any, signed: bytes) -> None:
        self.received.append((dict(status), signed))


async def run_flow(node: Path, repo: dict[str, Any], *, tampered: Callable[[], None]) -> None:
    receiver = StatusReceiver()
    plugins = make_plugin_manager(load_entrypoints=True)
    plugins.register(receiver, name="status-receiver")
    async with UpdateManager(node, plugins=plugins) as manager:
        status = manager.get_update_status()
        assert status.current_version is None and status.installed_versions == ()

        updates = await manager.check_for_updates()
        assert [u.version for u in updates] == ["1.1.0", "1.0.0"]  # highest version first
        first = next(u for u in updates if u.version == "1.0.0")
        package = await manager.download_update(first)
        assert await manager.verify_update(package) is True
        result = await manager.apply_update(package)
        assert (result.version, result.method) == ("1.0.0", "full")
        assert (node / "current" / "service").read_bytes() == repo["v1"]

        updates = await manager.check_for_updates()
        assert [u.version for u in updates] == ["1.1.0"]
        package = await manager.download_update(updates[0])
        assert package.method == "delta"
        assert package.bytes_fetched < SIZE // 20
        assert await manager.verify_update(package) is True
        # a staged file changed after download: verify_update raises, never returns False
        staged = package.tree / "service"
        original = staged.read_bytes()
        staged.chmod(0o644)
        staged.write_bytes(b"y" + original[1:])
        with pytest.raises((LengthOrHashMismatchError, SecurityError)):
            await manager.verify_update(package)
        staged.write_bytes(original)
        staged.chmod(package.manifest.artifacts[0].mode)
        assert await manager.verify_update(package) is True
        result = await manager.apply_update(package)
        assert (result.version, result.previous, result.method) == ("1.1.0", "1.0.0", "delta")

        status = manager.get_update_status()
        assert status.current_version == "1.1.0"
        assert status.installed_versions == ("1.0.0", "1.1.0")
        assert status.to_dict()["metrics"]["method"] == "delta"

        policy = UpdatePolicy(mode="manual", manual=ManualUpdatePolicy(max_deferral_count=1))
        manager.set_update_policy(policy)
        assert manager.config.policy.mode == "manual"
        synced = await manager.sync_with_network()
        assert synced.error is None and synced.installed is None and synced.available == ()

        signed = await manager.broadcast_update_status()
        again = await manager.broadcast_update_status()
        node_key = PublicKey.from_hex(status.node_public_key)

    saved = NodeConfig.from_file(node / "config.toml")
    assert saved.policy.mode == "manual"
    assert saved.policy.manual.max_deferral_count == 1
    assert [s for _, s in receiver.received] == [signed, again]
    for raw in (signed, again):
        env = Envelope.from_bytes(raw, expected_type="status")
        assert len(env.signatures) == 1 and env.signatures[0].keyid == node_key.keyid
        assert node_key.verify(env.signed_bytes, bytes.fromhex(env.signatures[0].sig))
    docs = [Envelope.from_bytes(s).parse(NodeStatusDoc.from_dict) for _, s in receiver.received]
    assert docs[0].current_version == "1.1.0"
    assert docs[1].seq > docs[0].seq

    # an attacker swaps the served artifact of a newer release: refused, node unchanged
    tampered()
    async with UpdateManager(node) as manager:
        manager.set_update_policy(UpdatePolicy())
        assert [u.version for u in await manager.check_for_updates()] == ["1.2.0"]
        with pytest.raises(SecurityError):
            await manager.sync_with_network()
        status = manager.get_update_status()
        assert status.current_version == "1.1.0"
        assert status.installed_versions == ("1.0.0", "1.1.0")
    assert not any((node / "staging").iterdir())


def _served_copy(repo: dict[str, Any], tmp: Path) -> Path:
    import shutil

    copy = tmp / "repo"
    shutil.copytree(repo["path"], copy)
    return copy


def _publish_tampered(repo: dict[str, Any], served: Path) -> None:
    """Publish 1.2.0 properly, then replace the blobs it brought with other bytes."""
    keys = repo["keys"]
    before = {p.name for p in (served / "blobs").iterdir()}
    src = served.parent / "1.2.0" / "service"
    src.parent.mkdir()
    src.write_bytes(repo["v2"][::-1])
    repository = Repository.open(served)
    repository.build_release("1.2.0", [src], delta_from="auto")
    repository.sign_release("1.2.0", keys["rel1"])
    repository.sign_release("1.2.0", keys["rel2"])
    repository.publish_release("1.2.0", keys["index"])
    for blob in (served / "blobs").iterdir():
        if blob.name not in before:
            blob.write_bytes(bytes(b ^ 0xFF for b in blob.read_bytes()))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_api_flow_over_http_under_asyncio(
    anyio_backend: str, repo: dict[str, Any], tmp_path: Path
) -> None:
    from blackhole_sync_http.server import serve_repository

    served = _served_copy(repo, tmp_path)
    async with serve_repository(served, "127.0.0.1", 0) as server:
        node = make_node(tmp_path / "node", served, server.url)
        await run_flow(node, repo, tampered=lambda: _publish_tampered(repo, served))


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_api_flow_over_a_file_source_under_trio(
    anyio_backend: str, repo: dict[str, Any], tmp_path: Path
) -> None:
    served = _served_copy(repo, tmp_path)
    node = make_node(tmp_path / "node", served, served.as_uri())
    await run_flow(node, repo, tampered=lambda: _publish_tampered(repo, served))
