"""Each kind of release through the node's real install path (API, local-directory source).

Unpacked archives updated by per-member deltas, releases encrypted to node keys, schema
migrations of the node's SQLite database, scoped configuration changes, and migrations a
plugin provides.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import random
import sqlite3
import tarfile
import time
from pathlib import Path

import anyio
import pytest

from blackhole_sync.codecs import load_private_key
from blackhole_sync.documents import Command, ConfigChange, Migration, SchemaInfo
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import DecryptionError, HealthCheckError
from blackhole_sync.fetch.hookspecs import hookimpl
from blackhole_sync.fetch.plugins import make_plugin_manager
from blackhole_sync.manager import UpdateManager, init_node
from blackhole_sync.node.store import NodeStore
from blackhole_sync.release import Repository


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.key = PrivateKey.generate()
        self.repo = Repository.init(
            tmp_path / "repo",
            root_keys=[self.key.public_key],
            root_threshold=1,
            release_keys=[self.key.public_key],
            release_threshold=1,
            index_key=self.key,
            sign_with=[self.key],
        )

    def publish(self, version: str, files: list[Path], **options: object) -> None:
        self.repo.build_release(version, files, **options)  # type: ignore[arg-type]
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)

    def node(self, name: str = "node") -> Path:
        node = self.tmp / name
        init_node(
            node,
            root_bytes=(self.tmp / "repo" / "root.json").read_bytes(),
            sources=[str(self.tmp / "repo")],
        )
        return node


def update(node: Path, **kwargs: object) -> tuple[str, str, int]:
    async def run() -> tuple[str, str, int]:
        async with UpdateManager(node, **kwargs) as manager:  # type: ignore[arg-type]
            result = await manager.update()
            assert result is not None
            return result.version, result.method, result.bytes_fetched

    return anyio.run(run)


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unpacked_archive_updates_by_per_member_deltas(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    big = bytes(range(256)) * 8192  # 2 MiB, compresses badly only as a whole
    members = {"bin/node": big, "lib/data.bin": big[::-1], "share/readme": b"v1\n"}
    (tmp_path / "v1").mkdir()
    s.publish(
        "1.0.0",
        [make_tar(tmp_path / "v1" / "bundle.tar", members)],
        unpack=[tmp_path / "v1" / "bundle.tar"],
    )
    changed = dict(
        members,
        **{
            "bin/node": big[:1000] + b"patched" + big[1007:],
            "share/readme": b"v2\n",
            "share/new-file": b"brand new\n",
        },
    )
    (tmp_path / "v2").mkdir()
    s.publish(
        "1.1.0",
        [make_tar(tmp_path / "v2" / "bundle.tar", changed)],
        unpack=[tmp_path / "v2" / "bundle.tar"],
        delta_from="auto",
    )
    deltas = s.repo.show_release("1.1.0")["manifest"]["deltas"]
    assert sorted(d["member"] for d in deltas) == ["bin/node", "share/new-file", "share/readme"]
    node2 = s.node("node2")

    async def install_first() -> None:
        async with UpdateManager(node2) as manager:
            await manager.update("1.0.0")

    anyio.run(install_first)
    version, method, fetched = update(node2)
    assert (version, method) == ("1.1.0", "delta")
    assert fetched < 50_000, fetched  # two small patches, the unchanged member copied locally
    tree = node2 / "current"
    assert (tree / "bin" / "node").read_bytes() == changed["bin/node"]
    assert (tree / "share" / "readme").read_bytes() == b"v2\n"
    assert (tree / "share" / "new-file").read_bytes() == b"brand new\n"
    assert (tree / "lib" / "data.bin").read_bytes() == members["lib/data.bin"]
    assert (tree / "bin" / "node").stat().st_mode & 0o777 == 0o755
    with NodeStore.open(node2) as store:
        assert store.verify_installed() == []


def test_release_encrypted_to_a_node_installs_there_and_nowhere_else(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    recipient = s.node("recipient")
    outsider = s.node("outsider")
    secret = b"secret build " * 10_000
    (tmp_path / "app").write_bytes(secret)
    public = load_private_key(recipient / "identity.key").public_key
    s.publish("1.0.0", [tmp_path / "app"], encrypt_to=[public])
    blob_names = [p.name for p in (tmp_path / "repo" / "blobs").iterdir()]
    assert all((tmp_path / "repo" / "blobs" / n).read_bytes() != secret for n in blob_names)
    assert update(recipient)[:2] == ("1.0.0", "full")
    assert (recipient / "current" / "app").read_bytes() == secret
    with pytest.raises(DecryptionError):
        update(outsider)
    assert not (outsider / "current").exists()


def test_schema_release_migrates_the_node_database_and_rollback_restores_it(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    (tmp_path / "app").write_bytes(b"app 1\n")
    s.publish("1.0.0", [tmp_path / "app"])
    node = s.node()
    update(node)
    db = node / "data" / "node.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE peers (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO peers VALUES ('a')")
    conn.close()
    (tmp_path / "app").write_bytes(b"app 2\n")
    s.publish(
        "1.1.0",
        [tmp_path / "app"],
        update_type="schema",
        schema=SchemaInfo(0, 1),
        migrations=[
            Migration("add-score", 0, 1, "ALTER TABLE peers ADD COLUMN score INTEGER DEFAULT 7")
        ],
    )
    assert update(node)[0] == "1.1.0"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, score FROM peers").fetchall() == [("a", 7)]
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()

    async def rollback() -> None:
        async with UpdateManager(node) as manager:
            await manager.rollback()

    anyio.run(rollback)
    conn = sqlite3.connect(db)
    assert [r[1] for r in conn.execute("PRAGMA table_info(peers)")] == ["id"]
    conn.close()


def test_configuration_release_applies_only_matching_scopes(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    (tmp_path / "app").write_bytes(b"app\n")
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
    s.publish(
        "1.0.0",
        [tmp_path / "app"],
        update_type="configuration",
        config_changes=[
            ConfigChange("network.max_peers", 64),
            ConfigChange("network.relay", True, scope="regional", selector="eu"),
            ConfigChange("network.later", "x", effective=now + _dt.timedelta(days=30)),
        ],
    )
    node = s.node()
    update(node)
    config = json.loads((node / "data" / "config.json").read_text())
    assert config["network"]["max_peers"] == 64
    assert "relay" not in config["network"]  # this node is not in region "eu"
    assert "later" not in config["network"]  # not effective yet: kept pending


MIGRATED: list[str] = []


class MigrationPlugin:
    @hookimpl
    def blackhole_sync_migrations(
        self, from_version: str | None, to_version: str
    ) -> list[Migration]:
        MIGRATED.append(f"{from_version}->{to_version}")
        if to_version != "1.1.0":
            return []
        return [Migration("plugin-index", 0, 1, "CREATE INDEX IF NOT EXISTS peers_id ON peers(id)")]


def test_migrations_from_a_plugin_run_in_the_install(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    (tmp_path / "app").write_bytes(b"app 1\n")
    s.publish("1.0.0", [tmp_path / "app"])
    node = s.node()
    update(node)
    with sqlite3.connect(node / "data" / "node.db") as conn:
        conn.execute("CREATE TABLE peers (id TEXT)")
    conn.close()
    (tmp_path / "app").write_bytes(b"app 2\n")
    s.publish("1.1.0", [tmp_path / "app"])
    plugins = make_plugin_manager()
    plugins.register(MigrationPlugin())
    update(node, plugins=plugins)
    assert "1.0.0->1.1.0" in MIGRATED
    conn = sqlite3.connect(node / "data" / "node.db")
    assert conn.execute("SELECT name FROM sqlite_master WHERE type='index'").fetchall() == [
        ("peers_id",)
    ]
    conn.close()


def test_node_two_releases_behind_takes_a_chain_of_patches(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    # 1 MiB that does not compress: a tiny compressed blob would rightly beat two patches
    base = random.Random(5).randbytes(1 << 20)
    app = tmp_path / "app"
    app.write_bytes(base)
    s.publish("1.0.0", [app])
    node = s.node()
    assert update(node)[:2] == ("1.0.0", "full")
    app.write_bytes(base[:5000] + b"one" + base[5003:])
    s.publish("1.1.0", [app], delta_from=["1.0.0"])
    app.write_bytes(base[:5000] + b"two" + base[5003:900_000] + b"more" + base[900_004:])
    s.publish("1.2.0", [app], delta_from=["1.1.0"])  # no patch straight from 1.0.0
    version, method, fetched = update(node)
    assert (version, method) == ("1.2.0", "delta")
    assert fetched < 10_000, fetched  # two small patches instead of 1 MiB
    assert (node / "current" / "app").read_bytes() == app.read_bytes()


@pytest.mark.parametrize(
    "health",
    [Command(("sh", "-c", "exit 3"), timeout=10), Command(("sleep", "60"), timeout=1)],
    ids=["failing", "hanging"],
)
def test_failing_or_hanging_health_check_ends_on_the_old_version(
    tmp_path: Path, health: Command
) -> None:
    s = Setup(tmp_path)
    app = tmp_path / "app"
    app.write_bytes(b"v1" * 1000)
    s.publish("1.0.0", [app])
    node = s.node()
    update(node)
    app.write_bytes(b"v2" * 1000)
    s.publish("1.1.0", [app], health=health)
    started = time.monotonic()
    with pytest.raises(HealthCheckError):
        update(node)
    assert time.monotonic() - started < 30  # the hanging check was cut at its timeout
    with NodeStore.open(node) as store:
        assert store.current_version() == "1.0.0"
        assert store.is_bad("1.1.0")
        assert store.verify_installed() == []
    assert (node / "current" / "app").read_bytes() == b"v1" * 1000
