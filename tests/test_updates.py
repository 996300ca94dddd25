"""The design's update-type views and NodeUpdateClient, over real published releases."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import anyio
import pytest

from blackhole_sync.documents import (
    ConfigChange,
    Envelope,
    Migration,
    ProtocolInfo,
    ReleaseManifest,
    SchemaInfo,
)
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.fetch.hookspecs import hookimpl
from blackhole_sync.fetch.plugins import make_plugin_manager
from blackhole_sync.manager import NodeUpdateClient, UpdateManager, init_node
from blackhole_sync.release import Repository
from blackhole_sync.updates import (
    BinaryUpdate,
    ConfigurationUpdate,
    DeltaUpdate,
    ProtocolUpdate,
    SchemaUpdate,
    update_views,
)


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, PrivateKey]:
    key = PrivateKey.generate()
    repo = Repository.init(
        tmp_path / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key, sign_with=[key],
    )  # fmt: skip
    app = tmp_path / "app"
    app.write_bytes(b"node v1 " * 4000)
    repo.build_release("1.0.0", [app])
    repo.sign_release("1.0.0", key)
    repo.publish_release("1.0.0", key)
    app.write_bytes(b"node v1 " * 3999 + b"node v2 ")
    repo.build_release(
        "1.1.0", [app], delta_from="auto", priority=5,
        config_changes=[ConfigChange("net.peers", 8, effective=_dt.datetime(2030, 1, 1, tzinfo=_dt.UTC), rollback_window=600)],
        protocol=ProtocolInfo(7, breaking=True, consensus_threshold_bp=8000),
        schema=SchemaInfo(0, 1, estimated_seconds=30),
        migrations=[Migration("m1", 0, 1, "CREATE TABLE t (x INTEGER)")],
    )  # fmt: skip
    repo.sign_release("1.1.0", key)
    repo.publish_release("1.1.0", key)
    return tmp_path / "repo", key


def load(repo: Path, version: str) -> tuple[ReleaseManifest, Envelope]:
    envelope = Envelope.from_bytes((repo / "manifests" / f"{version}.json").read_bytes())
    return envelope.parse(ReleaseManifest.from_dict), envelope


def test_views_expose_each_update_type_of_a_release(published: tuple[Path, PrivateKey]) -> None:
    repo, key = published
    manifest, envelope = load(repo, "1.1.0")
    (binary,) = BinaryUpdate.from_manifest(manifest, envelope)
    assert binary.checksum == manifest.artifacts[0].sha256
    assert binary.signature[0].keyid == key.keyid and len(binary.delta_patches) == 1
    config = ConfigurationUpdate.from_manifest(manifest)
    assert config is not None and config.scope == "global"
    assert config.rollback_window == _dt.timedelta(minutes=10)
    assert config.effective_date == _dt.datetime(2030, 1, 1, tzinfo=_dt.UTC)
    protocol = ProtocolUpdate.from_manifest(manifest)
    assert protocol == ProtocolUpdate(7, True, False, 8000, None)
    schema = SchemaUpdate.from_manifest(manifest)
    assert schema is not None and (schema.from_version, schema.to_version) == (0, 1)
    assert schema.estimated_duration == _dt.timedelta(seconds=30)
    delta = DeltaUpdate.from_manifest(manifest, envelope, "1.0.0")
    assert delta is not None and delta.to_version == "1.1.0"
    assert delta.compressed_size < delta.uncompressed_size // 10
    assert DeltaUpdate.from_manifest(manifest, envelope, "0.9.0") is None
    views = update_views(manifest, envelope, installed=["1.0.0"])
    assert views["protocol"] == protocol and len(views["deltas"]) == 1  # type: ignore[arg-type]
    plain, _ = load(repo, "1.0.0")
    assert ConfigurationUpdate.from_manifest(plain) is None
    assert ProtocolUpdate.from_manifest(plain) is None
    assert SchemaUpdate.from_manifest(plain) is None


BROADCASTS: list[bytes] = []


class Listener:
    @hookimpl
    def blackhole_sync_broadcast_status(self, status: dict[str, object], signed: bytes) -> None:
        BROADCASTS.append(signed)


def test_node_update_client_checks_selects_installs_and_broadcasts(
    tmp_path: Path, published: tuple[Path, PrivateKey]
) -> None:
    repo, _ = published
    node = tmp_path / "node"
    init_node(node, root_bytes=(repo / "root.json").read_bytes(), sources=[str(repo)])
    plugins = make_plugin_manager()
    plugins.register(Listener())

    async def run() -> tuple[str | None, str | None]:
        async with UpdateManager(node, plugins=plugins) as manager:
            client = NodeUpdateClient(manager)
            first = await client.check_and_update()
            again = await client.check_and_update()
            return (first.version if first else None), (again.version if again else None)

    assert anyio.run(run) == ("1.1.0", None)  # priority 5 and newest; then up to date
    assert len(BROADCASTS) == 1
    status = Envelope.from_bytes(BROADCASTS[0], expected_type="status")
    assert status.signed["current_version"] == "1.1.0"
