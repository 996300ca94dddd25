"""The edge cache: a node's verified holdings served as a repository for its neighbours."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import LengthOrHashMismatchError
from blackhole_sync.manager import UpdateManager, init_node
from blackhole_sync.mirror import export_mirror
from blackhole_sync.release import Repository


def make_node(path: Path, root: Path, sources: list[str]) -> Path:
    init_node(path, root_bytes=root.read_bytes(), sources=sources)
    return path


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = PrivateKey.generate()
    repo = Repository.init(
        tmp_path / "repo",
        root_keys=[key.public_key],
        root_threshold=1,
        release_keys=[key.public_key],
        release_threshold=1,
        index_key=key,
        sign_with=[key],
    )
    payload = b"node binary " * 5000
    (tmp_path / "app").write_bytes(payload)
    repo.build_release("1.0.0", [tmp_path / "app"])
    repo.sign_release("1.0.0", key)
    repo.publish_release("1.0.0", key)
    node = make_node(tmp_path / "alpha", tmp_path / "repo" / "root.json", [str(tmp_path / "repo")])

    async def update() -> None:
        async with UpdateManager(node) as manager:
            await manager.update()

    anyio.run(update)
    return tmp_path, node, payload


def test_export_holds_exactly_the_verified_documents_and_blobs(
    installed: tuple[Path, Path, bytes],
) -> None:
    tmp_path, node, payload = installed
    result = export_mirror(node)
    mirror = result.path
    assert mirror == node / "mirror"
    assert (mirror / "root.json").read_bytes() == (tmp_path / "repo" / "root.json").read_bytes()
    assert (mirror / "index.json").read_bytes() == (tmp_path / "repo" / "index.json").read_bytes()
    assert (mirror / "manifests" / "1.0.0.json").read_bytes() == (
        tmp_path / "repo" / "manifests" / "1.0.0.json"
    ).read_bytes()
    blobs = sorted(p.name for p in (mirror / "blobs").iterdir())
    assert blobs == [hashlib.sha256(payload).hexdigest()]
    assert result.blobs == 1


def test_neighbour_installs_from_the_mirror_alone(installed: tuple[Path, Path, bytes]) -> None:
    tmp_path, node, _ = installed
    mirror = export_mirror(node).path
    beta = make_node(tmp_path / "beta", mirror / "root.json", [str(mirror)])

    async def update() -> str | None:
        async with UpdateManager(beta) as manager:
            result = await manager.update()
            return None if result is None else result.version

    assert anyio.run(update) == "1.0.0"


def test_tampered_mirror_blob_is_refused_and_node_unchanged(
    installed: tuple[Path, Path, bytes],
) -> None:
    tmp_path, node, _ = installed
    mirror = export_mirror(node).path
    blob = next((mirror / "blobs").iterdir())
    data = bytearray(blob.read_bytes())
    data[0] ^= 1
    blob.unlink()  # a hard link to the installed file: replace, never write through it
    blob.write_bytes(bytes(data))
    assert node.joinpath("versions", "1.0.0", "app").read_bytes()[0] != data[0]
    beta = make_node(tmp_path / "beta", mirror / "root.json", [str(mirror)])

    async def update() -> None:
        async with UpdateManager(beta) as manager:
            await manager.update()

    with pytest.raises(LengthOrHashMismatchError):
        anyio.run(update)
    assert not (beta / "current").exists()
    assert list((beta / "versions").iterdir()) == []


def test_export_drops_blobs_no_longer_held(installed: tuple[Path, Path, bytes]) -> None:
    _, node, _ = installed
    mirror = export_mirror(node).path
    stale = mirror / "blobs" / ("0" * 64)
    stale.write_bytes(b"stale")
    result = export_mirror(node)
    assert not stale.exists()
    assert result.removed == 1
