"""RollbackManager: consistent state backups (SQLite online backup), restore, points, pruning."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from crashlib import install_release, make_release, release_files, v1_release, v2_release

from blackhole_sync import protocols
from blackhole_sync.errors import NoSuchVersionError
from blackhole_sync.node.rollback import RollbackResult, StateBackup
from blackhole_sync.node.store import NodeStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = NodeStore.create(tmp_path / "node", root_bytes=b"{}", config_text="")
    yield s
    s.close()


def test_backup_of_a_live_wal_database_is_consistent(store: NodeStore) -> None:
    db = store.data_dir / "node.db"
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t(x)")
    writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    writer.commit()  # committed rows live in the -wal file, not yet in node.db
    writer.execute("BEGIN")
    writer.execute("INSERT INTO t VALUES (-1)")  # uncommitted: must not be in the backup
    (store.data_dir / "config.json").write_text('{"a": 1}')
    backup = store.rollbacks.backup(store.path / "bk")
    writer.rollback()
    writer.close()
    assert sorted(backup.files) == ["config.json", "node.db"]
    copy = sqlite3.connect(backup.data / "node.db")
    assert copy.execute("SELECT count(*), min(x) FROM t").fetchone() == (1000, 0)
    copy.close()
    # restore replaces the data directory wholesale
    (store.data_dir / "config.json").write_text('{"a": 2}')
    (store.data_dir / "new-file").write_text("x")
    store.rollbacks.restore(store.path / "bk")
    assert json.loads((store.data_dir / "config.json").read_text()) == {"a": 1}
    assert not (store.data_dir / "new-file").exists()
    assert StateBackup.load(store.path / "bk").size == backup.size


async def test_rollback_points_and_perform_rollback(store: NodeStore) -> None:
    m1, b1 = v1_release()
    await install_release(store, m1, b1, release_files("1.0.0"))
    m2, b2 = v2_release()
    await install_release(store, m2, b2, release_files("2.0.0"))
    points = store.rollbacks.rollback_points()
    assert [(p.previous_version, p.for_version) for p in points] == [
        (None, "1.0.0"),
        ("1.0.0", "2.0.0"),
    ]
    rb = store.rollbacks
    assert isinstance(rb, protocols.RollbackManager)
    assert rb.can_rollback() and rb.get_rollback_versions() == ["1.0.0"]
    result = await rb.perform_rollback("1.0.0")
    assert result == RollbackResult("1.0.0", "2.0.0", points[1].id)
    # data restored: schema back to 1
    conn = sqlite3.connect(store.data_dir / "node.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


async def test_rollback_without_data_restore_keeps_data(store: NodeStore) -> None:
    m1, b1 = v1_release()
    await install_release(store, m1, b1, release_files("1.0.0"))
    m2, b2 = v2_release()
    await install_release(store, m2, b2, release_files("2.0.0"))
    assert store.rollback(restore_data=False) == "1.0.0"
    conn = sqlite3.connect(store.data_dir / "node.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    assert store.history()[-1]["note"] == "data kept"
    assert store.history()[-1]["error"] is None  # a remark, not a failure


async def test_prune_old_rollback_points(store: NodeStore) -> None:
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        files = release_files(v)
        m, b = make_release(v, files)
        await install_release(store, m, b, files)
    assert len(store.rollbacks.rollback_points()) == 4
    removed = store.rollbacks.prune_points(3)
    assert len(removed) == 1
    await store.rollbacks.prune_old_rollback_points(2)
    kept = store.rollbacks.rollback_points()
    assert [p.for_version for p in kept] == ["1.2.0", "1.3.0"]
    assert all(p.path.is_dir() for p in kept)
    assert sorted(x.name for x in store.rollbacks.root.iterdir()) == sorted(str(p.id) for p in kept)


async def test_async_backup_and_restore_state(store: NodeStore) -> None:
    (store.data_dir / "config.json").write_text('{"a": 1}')
    backup = await store.rollbacks.backup_state()
    assert backup.path.parent == store.layout.rollback_dir and backup.files == ("config.json",)
    (store.data_dir / "config.json").write_text('{"a": 2}')
    await store.rollbacks.restore_state(backup)
    assert json.loads((store.data_dir / "config.json").read_text()) == {"a": 1}
    store.close()
    with NodeStore.open(store.path) as again:  # manual backups survive recovery
        assert backup.path.is_dir()
        assert again.rollbacks.rollback_points() == []


async def test_activate_switches_without_touching_data(store: NodeStore) -> None:
    m1, b1 = v1_release()
    await install_release(store, m1, b1, release_files("1.0.0"))
    m2, b2 = v2_release()
    await install_release(store, m2, b2, release_files("2.0.0"))
    assert store.activate("1.0.0") == "2.0.0"
    assert store.current_version() == "1.0.0"
    conn = sqlite3.connect(store.data_dir / "node.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2  # data untouched
    conn.close()
    last = store.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"], last["error"]) == (
        "activate",
        "2.0.0",
        "1.0.0",
        None,
    )
    assert store.activate("1.0.0") == "1.0.0"  # already current: nothing journaled
    assert len(store.history()) == 3
    with pytest.raises(NoSuchVersionError):
        store.activate("9.9.9")
