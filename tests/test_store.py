"""The node store API: layout, lock, install/refusals, hooks, history, states, prune, tables."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from crashlib import (
    install_release,
    make_release,
    release_files,
    stage,
    v1_release,
    v2_release,
)

from blackhole_sync.documents.metadata import ReleaseManifest
from blackhole_sync.errors import (
    HealthCheckError,
    InsufficientSpaceError,
    LengthOrHashMismatchError,
    NodeLockedError,
    NoSuchVersionError,
    SandboxError,
    UnsafePathError,
)
from blackhole_sync.node.store import InstallHooks, NodeStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = NodeStore.create(tmp_path / "node", root_bytes=b'{"r":1}', config_text="[node]\n")
    yield s
    s.close()


async def install_v1(store: NodeStore) -> None:
    m, b = v1_release()
    await install_release(store, m, b, release_files("1.0.0"))


async def install_v2(store: NodeStore, **kw: object) -> object:
    m, b = v2_release()
    return await install_release(store, m, b, release_files("2.0.0"), **kw)


def test_create_makes_the_layout_and_refuses_a_used_dir(tmp_path: Path) -> None:
    path = tmp_path / "node"
    with NodeStore.create(path, root_bytes=b"ROOT", config_text="x = 1\n") as s:
        assert (path / "trust" / "root.json").read_bytes() == b"ROOT"
        assert (path / "config.toml").read_text() == "x = 1\n"
        assert stat.S_IMODE(os.stat(path / "staging").st_mode) == 0o700
        for d in ("versions", "rollback", "data"):
            assert (path / d).is_dir()
        assert s.current_version() is None and s.installed_versions() == []
    with pytest.raises(FileExistsError):
        NodeStore.create(path, root_bytes=b"", config_text="")


def test_second_opener_waits_then_gets_node_locked(store: NodeStore) -> None:
    with pytest.raises(NodeLockedError):
        NodeStore.open(store.path, lock_timeout=0.2)


async def test_install_switch_and_verify(store: NodeStore) -> None:
    await install_v1(store)
    result = await install_v2(store)
    assert result.changed and result.previous_version == "1.0.0"  # type: ignore[attr-defined]
    assert store.current_version() == "2.0.0"
    assert os.readlink(store.path / "current") == "versions/2.0.0"
    assert [i.version for i in store.installed_versions()] == ["1.0.0", "2.0.0"]
    assert stat.S_IMODE(os.stat(store.version_dir("2.0.0") / "app").st_mode) == 0o755
    assert store.verify_installed() == [] and store.verify_installed("1.0.0") == []
    assert (store.trust_dir / "manifests" / "2.0.0.json").exists()
    again = await install_v2(store)
    assert not again.changed  # type: ignore[attr-defined]


async def test_tampered_installed_tree_is_reported(store: NodeStore) -> None:
    await install_v1(store)
    target = store.version_dir("1.0.0") / "lib.bin"
    os.chmod(target, 0o644)
    with open(target, "r+b") as f:
        f.write(b"X")
    problems = store.verify_installed()
    assert any("sha256" in p for p in problems) and any("mode" in p for p in problems)


async def test_staged_tree_with_wrong_bytes_is_refused(store: NodeStore) -> None:
    m, b = v1_release()
    files = dict(release_files("1.0.0"))
    tree = stage(store, m, files)
    (tree / "lib.bin").chmod(0o644)
    (tree / "lib.bin").write_bytes(b"Y" * len(files["lib.bin"]))
    (tree / "lib.bin").chmod(0o755)
    with pytest.raises(LengthOrHashMismatchError):
        await store.install(m, b, tree)
    assert store.current_version() is None and store.installed_versions() == []


async def test_extra_file_in_the_staged_tree_is_refused(store: NodeStore) -> None:
    m, b = v1_release()
    tree = stage(store, m, release_files("1.0.0"))
    (tree / "backdoor").write_bytes(b"x")
    with pytest.raises(LengthOrHashMismatchError, match="backdoor"):
        await store.install(m, b, tree)


async def test_tree_outside_staging_is_refused(store: NodeStore, tmp_path: Path) -> None:
    m, b = v1_release()
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UnsafePathError):
        await store.install(m, b, tmp_path / "elsewhere")


async def test_stage_file_applies_manifest_mode_and_length(store: NodeStore) -> None:
    m, _b = v1_release()
    tree = store.new_staging_dir()
    assert stat.S_IMODE(os.stat(tree).st_mode) == 0o700
    blob = store.staging_dir / "blob"
    blob.write_bytes(b"short")
    with pytest.raises(LengthOrHashMismatchError):
        store.stage_file(blob, m.artifact("app"), tree)


async def test_insufficient_space_is_refused_before_anything(tmp_path: Path) -> None:
    with NodeStore.create(
        tmp_path / "node", root_bytes=b"", config_text="", reserve_bytes=1 << 62
    ) as s:
        m, b = v1_release()
        tree = stage(s, m, release_files("1.0.0"))
        with pytest.raises(InsufficientSpaceError):
            await s.install(m, b, tree)
        assert s.history() == []


async def test_failing_sandbox_stops_before_the_switch(store: NodeStore) -> None:
    await install_v1(store)

    async def sandbox(tree: Path, data: Path, manifest: ReleaseManifest) -> None:
        assert (tree / "app").exists()
        raise SandboxError("self-test failed")

    with pytest.raises(SandboxError):
        await install_v2(store, hooks=InstallHooks(sandbox=sandbox))
    assert store.current_version() == "1.0.0"
    assert store.is_bad("2.0.0")
    assert not store.version_dir("2.0.0").exists()
    assert store.history()[-1]["action"] == "failed"


async def test_failing_health_check_rolls_back_and_marks_bad(store: NodeStore) -> None:
    await install_v1(store)
    steps: list[str] = []
    restarted: list[str] = []

    async def progress(step: str) -> None:
        steps.append(step)

    async def restart(version: str) -> None:
        restarted.append(version)

    async def health(version: str, manifest: ReleaseManifest) -> None:
        raise HealthCheckError("port closed")

    hooks = InstallHooks(health=health, restart=restart, progress=progress)
    with pytest.raises(HealthCheckError):
        await install_v2(store, hooks=hooks)
    assert store.current_version() == "1.0.0"
    assert restarted == ["2.0.0"]
    assert steps[:2] == ["verify", "migrate"] and "health" in steps
    assert store.is_bad("2.0.0") and store.bad_reason("2.0.0") == "port closed"
    last = store.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == (
        "failed",
        "1.0.0",
        "2.0.0",
    )


async def test_rollback_to_previous_and_history(store: NodeStore) -> None:
    with pytest.raises(NoSuchVersionError):
        store.rollback()
    await install_v1(store)
    with pytest.raises(NoSuchVersionError):
        store.rollback()  # nothing before the first version
    await install_v2(store)
    assert store.rollbacks.can_rollback()
    assert store.rollbacks.rollback_versions() == ["1.0.0"]
    assert store.rollback() == "1.0.0"
    assert store.rollback("1.0.0") == "1.0.0"  # idempotent
    with pytest.raises(NoSuchVersionError):
        store.rollback("9.9.9")
    actions = [h["action"] for h in store.history()]
    assert actions == ["install", "install", "rollback"]
    assert store.history()[1]["method"] == "full"


async def test_prune_keeps_current_and_rollback_target(store: NodeStore) -> None:
    await install_v1(store)
    await install_v2(store)
    files = release_files("3.0.0")
    m3, b3 = make_release("3.0.0", files)
    await install_release(store, m3, b3, files)
    assert store.prune(1) == ["1.0.0"]  # 2.0.0 is the rollback target of 3.0.0
    assert [i.version for i in store.installed_versions()] == ["2.0.0", "3.0.0"]
    assert not store.version_dir("1.0.0").exists()
    assert all(p.previous_version != "1.0.0" for p in store.rollbacks.rollback_points())
    assert store.prune(0) == []


async def test_version_states_for_the_agent(store: NodeStore) -> None:
    await install_v1(store)
    assert store.record_start_failure("1.0.0") == 1
    assert store.record_start_failure("1.0.0") == 2
    store.mark_good("1.0.0")
    assert store.record_start_failure("1.0.0") == 1
    store.mark_bad("1.0.0", "crash loop")
    assert store.is_bad("1.0.0") and store.bad_reason("1.0.0") == "crash loop"
    assert store.installed_versions()[0].state == "bad"


def test_meta_seq_floors_and_votes(store: NodeStore) -> None:
    assert store.get_meta("deferrals") is None
    store.set_meta("deferrals", "2")
    assert store.get_meta("deferrals") == "2"
    store.set_meta("deferrals", None)
    assert store.get_meta("deferrals") is None
    assert store.get_seq_floor("vote", "n1") is None
    store.set_seq_floor("vote", "n1", 5)
    store.set_seq_floor("vote", "n1", 3)  # never goes down
    assert store.get_seq_floor("vote", "n1") == 5
    store.put_vote("p1", "n1", 2, True, "ab" * 32, b"{}")
    store.put_vote("p1", "n1", 1, False)  # older seq ignored
    votes = store.get_votes("p1")
    assert len(votes) == 1 and votes[0]["support"] == 1 and votes[0]["seq"] == 2


async def test_state_survives_reopen(store: NodeStore) -> None:
    await install_v1(store)
    store.set_meta("k", "v")
    store.close()
    with NodeStore.open(store.path) as again:
        assert again.current_version() == "1.0.0"
        assert again.get_meta("k") == "v"
        assert [h["action"] for h in again.history()] == ["install"]
