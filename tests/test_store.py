"""The node store API: layout, lock, install/refusals, hooks, history, states, prune, tables."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from crashlib import (
    ForeignPointHooks,
    install_release,
    make_release,
    release_files,
    schema_of,
    stage,
    v1_release,
    v2_release,
)

from blackhole_sync.documents import ReleaseManifest
from blackhole_sync.errors import (
    FormatError,
    HealthCheckError,
    InstallError,
    InsufficientSpaceError,
    LengthOrHashMismatchError,
    NodeLockedError,
    NoSuchVersionError,
    SandboxError,
    UnsafePathError,
)
from blackhole_sync.node import (
    DefaultInstallHooks,
    InstallHooks,
    NodeLayout,
    SignedManifest,
    TrustStore,
)
from blackhole_sync.node.store import NodeStore

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
    assert store.layout.trust_manifest("2.0.0").read_bytes() == v2_release()[1]
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
        await store.install(SignedManifest.from_bytes(b), tree)
    assert store.current_version() is None and store.installed_versions() == []


async def test_extra_file_in_the_staged_tree_is_refused(store: NodeStore) -> None:
    m, b = v1_release()
    tree = stage(store, m, release_files("1.0.0"))
    (tree / "backdoor").write_bytes(b"x")
    with pytest.raises(LengthOrHashMismatchError, match="backdoor"):
        await store.install(SignedManifest.from_bytes(b), tree)


async def test_tree_outside_staging_is_refused(store: NodeStore, tmp_path: Path) -> None:
    _m, b = v1_release()
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UnsafePathError):
        await store.install(SignedManifest.from_bytes(b), tmp_path / "elsewhere")


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
            await s.install(SignedManifest.from_bytes(b), tree)
        assert s.history() == []


async def test_failing_sandbox_stops_before_the_switch(store: NodeStore) -> None:
    await install_v1(store)

    class FailingSelfTest(DefaultInstallHooks):
        async def self_test(self, tree: Path, data: Path, manifest: ReleaseManifest) -> None:
            assert (tree / "app").exists()
            raise SandboxError("self-test failed")

    with pytest.raises(SandboxError):
        await install_v2(store, hooks=FailingSelfTest(store.rollbacks))
    assert store.current_version() == "1.0.0"
    assert store.is_bad("2.0.0")
    assert not store.version_dir("2.0.0").exists()
    assert store.history()[-1]["action"] == "failed"


async def test_failing_health_check_rolls_back_and_marks_bad(store: NodeStore) -> None:
    await install_v1(store)
    steps: list[str] = []
    restarted: list[str] = []

    class Hooks(DefaultInstallHooks):
        async def progress(self, step: str) -> None:
            steps.append(step)

        async def restart(self, version: str) -> None:
            restarted.append(version)

        async def health(self, version: str, manifest: ReleaseManifest) -> None:
            raise HealthCheckError("port closed")

    with pytest.raises(HealthCheckError):
        await install_v2(store, hooks=Hooks(store.rollbacks))
    assert store.current_version() == "1.0.0"
    assert restarted == ["2.0.0"]
    assert steps == ["verify", "backup", "sandbox", "migrate", "switch", "restart", "health"]
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


# -- the layout, the trust store, the state database ----------------------------------------


def test_layout_owns_every_path_and_refuses_escapes(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path)
    digest = "ab" * 32
    assert layout.current == tmp_path / "current"
    assert layout.version_dir("1.2.3") == tmp_path / "versions" / "1.2.3"
    assert layout.trust_root == tmp_path / "trust" / "root.json"
    assert layout.trust_root_version(3) == tmp_path / "trust" / "3.root.json"
    assert layout.trust_index == tmp_path / "trust" / "index.json"
    assert layout.trust_manifest("1.2.3") == tmp_path / "trust" / "manifests" / "1.2.3.json"
    assert layout.staging_dir == tmp_path / "staging"
    assert layout.partial(digest) == tmp_path / "partial" / digest
    assert layout.blob(digest) == tmp_path / "blobs" / digest
    assert (layout.bittorrent_dir, layout.ipfs_dir, layout.gossip_dir) == (
        tmp_path / "bittorrent",
        tmp_path / "ipfs",
        tmp_path / "gossip",
    )
    assert layout.state_db == tmp_path / "state.db"
    assert layout.rollback_point(7) == tmp_path / "rollback" / "7"
    assert layout.data_dir == tmp_path / "data"
    assert layout.config == tmp_path / "config.toml"
    assert layout.identity_key == tmp_path / "identity.key"
    assert layout.mirror_dir == tmp_path / "mirror"
    for bad in ("../1.0.0", "1.0", "1.0.0/x"):
        with pytest.raises(FormatError):
            layout.version_dir(bad)
    for bad_digest in ("../" + digest[3:], digest.upper(), "ab"):
        with pytest.raises(FormatError):
            layout.blob(bad_digest)
    with pytest.raises(UnsafePathError):
        layout.rollback_point("../x")
    with pytest.raises(FormatError):
        layout.trust_root_version(0)


def test_trust_store_keeps_received_bytes_atomically(store: NodeStore) -> None:
    trust = TrustStore(store.layout)
    assert trust.root_bytes() == b'{"r":1}' and trust.root_versions() == []
    trust.save_root(b"ROOT2", 2)
    assert trust.root_bytes() == b"ROOT2" and trust.root_version_bytes(2) == b"ROOT2"
    assert trust.root_versions() == [2]
    assert trust.index_bytes() is None
    trust.save_index(b"INDEX")
    assert trust.index_bytes() == b"INDEX"
    _m, b = v1_release()
    assert trust.manifest_bytes("1.0.0") is None
    trust.save_manifest("1.0.0", b)
    assert trust.manifest_versions() == ["1.0.0"]
    assert trust.manifest("1.0.0") == SignedManifest.from_bytes(b)
    trust.remove_manifest("1.0.0")
    with pytest.raises(NoSuchVersionError):
        trust.manifest("1.0.0")
    store.layout.trust_index.write_bytes(b" " * (16 * 1024 * 1024 + 1))
    with pytest.raises(FormatError, match="over"):
        trust.index_bytes()
    leftovers = [p.name for p in store.layout.trust_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_signed_manifest_pairs_the_model_with_its_bytes() -> None:
    m, b = v1_release()
    release = SignedManifest.from_bytes(b)
    assert release.manifest == m and release.raw == b and release.version == "1.0.0"
    bare = SignedManifest.from_bytes(json.dumps(m.to_dict()).encode())
    assert bare.manifest == m


def test_an_old_state_database_is_brought_up_to_date(store: NodeStore) -> None:
    store.state.conn.execute("ALTER TABLE journal DROP COLUMN rollback_path")
    store.state.conn.execute("ALTER TABLE journal DROP COLUMN rollback_own")
    store.state.conn.execute("PRAGMA user_version = 1")
    store.close()
    with NodeStore.open(store.path) as again:
        columns = {r[1] for r in again.state.conn.execute("PRAGMA table_info(journal)")}
        assert {"rollback_path", "rollback_own"} <= columns
        assert again.state.conn.execute("PRAGMA user_version").fetchone()[0] == 2


# -- hash passes ------------------------------------------------------------------------------


async def test_an_install_hashes_each_file_once(
    store: NodeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blackhole_sync.node import tree as tree_module

    hashed: list[str] = []
    real = tree_module.hash_file

    def counting(path: Path, *, fsync: bool = False) -> tuple[str, int]:
        hashed.append(path.name)
        return real(path, fsync=fsync)

    monkeypatch.setattr(tree_module, "hash_file", counting)
    await install_v1(store)
    assert sorted(hashed) == ["app", "lib.bin"]
    hashed.clear()
    await install_v2(store)
    store.rollback()  # re-hashes 1.0.0's tree before it goes live again
    await install_v2(store)  # 2.0.0 is installed: its tree is checked, the staged copy is not
    assert sorted(hashed) == ["app"] * 3 + ["lib.bin"] * 3
    hashed.clear()
    await install_v2(store)  # already current: nothing moves, nothing is hashed
    assert hashed == []


# -- hooks and rollback points ----------------------------------------------------------------


async def test_a_host_rollback_point_is_journaled_and_restored_through_the_hooks(
    store: NodeStore, tmp_path: Path
) -> None:
    await install_v1(store)
    own_points = store.rollbacks.rollback_points()

    class Failing(ForeignPointHooks):
        async def health(self, version: str, manifest: ReleaseManifest) -> None:
            raise HealthCheckError("down")

    hooks = Failing(store, tmp_path / "host-points")
    assert isinstance(hooks, InstallHooks)
    with pytest.raises(HealthCheckError):
        await install_v2(store, hooks=hooks)
    assert [p.path.parent for p in hooks.restored] == [tmp_path / "host-points"]
    assert store.rollbacks.rollback_points() == own_points  # the store made no point
    row = store.state.journal(store.state.conn.execute("SELECT max(id) FROM journal").fetchone()[0])
    assert (row["rollback_path"], row["rollback_own"]) == (str(hooks.restored[0].path), 0)
    assert schema_of(store.data_dir / "node.db") == (1, {"t1"})
    assert store.current_version() == "1.0.0" and store.is_bad("2.0.0")


async def test_a_failure_after_the_data_swap_restores_through_the_hooks(
    store: NodeStore, tmp_path: Path
) -> None:
    await install_v1(store)

    class BrokenSwitch(ForeignPointHooks):
        async def progress(self, step: str) -> None:
            if step == "switch":
                raise OSError("disk on fire")

    hooks = BrokenSwitch(store, tmp_path / "host-points")
    with pytest.raises(InstallError, match="disk on fire"):
        await install_v2(store, hooks=hooks)
    assert len(hooks.restored) == 1
    assert schema_of(store.data_dir / "node.db") == (1, {"t1"})
    assert store.current_version() == "1.0.0" and store.active_operation() is None
    assert store.history()[-1]["action"] == "failed"
