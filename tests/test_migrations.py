"""Schema migrations on a copy, configuration changes, and a crash between migrate and commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import signal
import sqlite3
from pathlib import Path

import pytest
from crashlib import M1, M2, check_node, copy_node, init_node, run_driver, schema_of

from blackhole_sync.documents import ConfigChange, Migration
from blackhole_sync.errors import MigrationError
from blackhole_sync.node.migrations import (
    SchemaMigrator,
    apply_config_changes,
    config_sidecars,
    read_config,
    revert_config_changes,
)
from blackhole_sync.node.store import NodeStore

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def make_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(M1.sql)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migration_runs_on_a_copy_and_leaves_the_original_intact(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    make_db(db)
    before = digest(db)
    migrator = SchemaMigrator(db, [M2, M1])
    assert [m.id for m in migrator.plan()] == ["m2"]
    assert migrator.migrate_copy(tmp_path / "new.db") == 2
    assert digest(db) == before
    assert schema_of(db) == (1, {"t1"})
    assert schema_of(tmp_path / "new.db") == (2, {"t1", "t2"})


def test_failing_migration_removes_the_copy(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    make_db(db)
    bad = Migration("bad", 1, 2, "CREATE TABLE t2(y); SELECT * FROM no_such_table;")
    with pytest.raises(MigrationError, match="bad"):
        SchemaMigrator(db, [bad]).migrate_copy(tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()
    assert schema_of(db) == (1, {"t1"})


def test_migration_cannot_attach_other_files(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    make_db(db)
    evil = Migration("evil", 1, 2, f"ATTACH DATABASE '{tmp_path / 'evil.db'}' AS e;")
    with pytest.raises(MigrationError):
        SchemaMigrator(db, [evil]).migrate_copy(tmp_path / "new.db")
    assert not (tmp_path / "evil.db").exists()


def test_gap_and_fork_in_the_chain_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    make_db(db)
    with pytest.raises(MigrationError, match="no migration starts at schema 1"):
        SchemaMigrator(db, [Migration("m3", 2, 3, "SELECT 1;")]).plan()
    fork = [M2, Migration("m2b", 1, 3, "SELECT 1;")]
    with pytest.raises(MigrationError, match="both start"):
        SchemaMigrator(db, fork).plan()
    with pytest.raises(MigrationError, match="two different"):
        SchemaMigrator(db, [M2, Migration("m2", 1, 2, "SELECT 2;")])


def test_plugin_migrations_join_the_chain(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    make_db(db)
    migrator = SchemaMigrator(db, [M2])
    migrator.register(Migration("plugin-m3", 2, 3, "CREATE TABLE t3(z);"))
    assert migrator.migrate_copy(tmp_path / "new.db") == 3


def test_config_changes_honour_scope_and_effective_date(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"net": {"peers": 8}}))
    changes = [
        ConfigChange("net.peers", 16),
        ConfigChange("net.region_cap", 3, scope="regional", selector="eu"),
        ConfigChange("net.region_cap", 9, scope="regional", selector="us"),
        ConfigChange("limits.tx", 5, scope="node-type", selector="validator"),
        ConfigChange("net.fee", 7, effective=NOW + dt.timedelta(days=2), rollback_window=3600),
    ]
    result = apply_config_changes(
        cfg, changes, region="eu", node_type="archive", now=NOW, version="2.0.0"
    )
    assert len(result.applied) == 2 and len(result.pending) == 1 and len(result.skipped) == 2
    assert read_config(cfg) == {"net": {"peers": 16, "region_cap": 3}}
    # the pending change applies once due
    later = NOW + dt.timedelta(days=3)
    result = apply_config_changes(cfg, [], region="eu", node_type="archive", now=later)
    assert [c.key for c in result.applied] == ["net.fee"] and not result.pending
    assert read_config(cfg)["net"]["fee"] == 7
    # inside its rollback window it can be reverted; the others (window 0) are past theirs
    assert revert_config_changes(cfg, now=later + dt.timedelta(minutes=5)) == ["net.fee"]
    assert "fee" not in read_config(cfg)["net"]
    assert revert_config_changes(cfg, now=later + dt.timedelta(days=1)) == []
    pending, history = config_sidecars(cfg)
    assert json.loads(pending.read_text()) == []
    assert len(json.loads(history.read_text())) == 2


@pytest.fixture(scope="module")
def base_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("base") / "node"
    init_node(path)
    return path


@pytest.mark.parametrize(
    "point",
    [
        "migrate.schema_applied",
        "install.migrated",
        "migrate.swapping",
        "migrate.swapped",
        "install.switch_prepared",
        "install.switched",
        "install.health_checked",
    ],
)
def test_crash_between_migrate_and_commit_keeps_old_schema_usable_after_rollback(
    point: str, base_node: Path, tmp_path: Path
) -> None:
    node = copy_node(base_node, tmp_path / "node")
    with NodeStore.open(node) as store:
        conn = sqlite3.connect(store.data_dir / "node.db")
        conn.execute("INSERT INTO t1 VALUES (42)")
        conn.commit()
        conn.close()
    proc = run_driver({"node": str(node), "ops": ["install-v2"]}, crash_at=point)
    assert proc.returncode == -signal.SIGKILL
    current = check_node(node)
    with NodeStore.open(node) as store:
        if current == "2.0.0":
            assert store.rollback() == "1.0.0"
        assert store.current_version() == "1.0.0"
        db = store.data_dir / "node.db"
    assert schema_of(db) == (1, {"t1"})
    conn = sqlite3.connect(db)
    assert sorted(r[0] for r in conn.execute("SELECT x FROM t1")) == [1, 42]
    conn.close()
    assert check_node(node) == "1.0.0"


def test_failed_migration_in_install_leaves_the_node_unchanged(
    base_node: Path, tmp_path: Path
) -> None:
    import anyio
    from crashlib import install_release, make_release, release_files

    node = copy_node(base_node, tmp_path / "node")
    bad = Migration("m2", 1, 2, "CREATE TABLE t2(y); INSERT INTO missing VALUES (1);")
    files = release_files("2.0.0")
    m, b = make_release("2.0.0", files, migrations=[M1, bad])
    with NodeStore.open(node) as store:
        with pytest.raises(MigrationError):
            anyio.run(install_release, store, m, b, files)
        assert store.current_version() == "1.0.0"
        assert not store.is_bad("2.0.0")
    assert check_node(node) == "1.0.0"
