"""The design's core protocols, implemented by an outsider and plugged into the real manager.

``OutsiderVersions`` and ``OutsiderBackups`` below are written as a host's engineer would
write them: only the public API (``blackhole_sync`` and ``blackhole_sync.protocols``), their own
storage, no private names. An update and a rollback run through them against a real
repository, and mypy checks (as a test) that they satisfy the protocols.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import blackhole_sync
from blackhole_sync import (
    IncompatibleReleaseError,
    NodeStore,
    PrivateKey,
    Repository,
    RollbackPoint,
    RollbackResult,
    StateBackup,
    UpdateManager,
    init_node,
    protocols,
)
from blackhole_sync.testing import run

OUTSIDER_CODE = '''
class OutsiderVersions:
    """A host's version policy: never jump a major version, no migrations of its own."""

    def __init__(self, manager: "blackhole_sync.UpdateManager") -> None:
        self.manager = manager
        self.calls: list[tuple[str, object]] = []

    def get_current_version(self) -> str | None:
        return self.manager.store.current_version()

    def get_installed_versions(self) -> list[blackhole_sync.VersionInfo]:
        return self.manager.store.installed_versions()

    def get_compatibility_matrix(self) -> blackhole_sync.CompatibilityInfo:
        return blackhole_sync.CompatibilityInfo(self.get_current_version(), {})

    def compare_versions(self, v1: str, v2: str) -> blackhole_sync.VersionComparison:
        return blackhole_sync.compare_versions(v1, v2)

    def check_compatibility(self, target: str) -> bool:
        self.calls.append(("check_compatibility", target))
        current = self.get_current_version()
        return current is None or current.split(".")[0] == target.split(".")[0]

    def get_required_migrations(
        self, from_version: str | None, to_version: str
    ) -> list[blackhole_sync.Migration]:
        self.calls.append(("get_required_migrations", (from_version, to_version)))
        return []


class OutsiderBackups:
    """A host's rollback points: whole copies of data/ in a directory of its own."""

    def __init__(self, store: "blackhole_sync.NodeStore", where: Path) -> None:
        self.store = store
        self.where = where
        self.where.mkdir(exist_ok=True)
        self.calls: list[str] = []

    def _index(self) -> list[dict[str, Any]]:
        path = self.where / "points.json"
        return json.loads(path.read_text()) if path.exists() else []

    def can_rollback(self) -> bool:
        return bool(self.get_rollback_versions())

    def get_rollback_versions(self) -> list[str]:
        current = self.store.current_version()
        versions = [v.version for v in self.store.installed_versions() if v.version != current]
        return sorted(versions, key=blackhole_sync.version_key, reverse=True)

    async def create_rollback_point(
        self, previous_version: str | None, for_version: str
    ) -> blackhole_sync.RollbackPoint:
        self.calls.append(f"create {previous_version}->{for_version}")
        points = self._index()
        point_id = len(points) + 1
        path = self.where / str(point_id)
        shutil.copytree(self.store.layout.data_dir, path / "data")
        points.append({"id": point_id, "previous": previous_version, "for": for_version})
        (self.where / "points.json").write_text(json.dumps(points))
        created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return blackhole_sync.RollbackPoint(
            point_id, previous_version, for_version, created, path, 0
        )

    async def perform_rollback(self, target: str | None = None) -> blackhole_sync.RollbackResult:
        self.calls.append(f"rollback to {target}")
        assert target is not None
        previous = self.store.activate(target)
        point = next(p for p in reversed(self._index()) if p["previous"] == target)
        await self._restore(self.where / str(point["id"]) / "data")
        return blackhole_sync.RollbackResult(target, previous, point["id"])

    async def backup_state(self) -> blackhole_sync.StateBackup:
        dest = self.where / "manual"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(self.store.layout.data_dir, dest / "data")
        return blackhole_sync.StateBackup(dest, (), 0)

    async def restore_state(
        self, backup: blackhole_sync.StateBackup | blackhole_sync.RollbackPoint
    ) -> None:
        self.calls.append("restore")
        await self._restore(backup.path / "data")

    async def prune_old_rollback_points(self, keep: int) -> None:
        self.calls.append(f"prune {keep}")

    async def _restore(self, source: Path) -> None:
        data = self.store.layout.data_dir
        shutil.rmtree(data)
        shutil.copytree(source, data)
'''
namespace: dict[str, Any] = {
    "blackhole_sync": blackhole_sync,
    "Path": Path,
    "Any": Any,
    "json": json,
    "shutil": shutil,
    "dt": dt,
}
exec(compile("from __future__ import annotations\n" + OUTSIDER_CODE, "outsider", "exec"), namespace)
OutsiderVersions = namespace["OutsiderVersions"]
OutsiderBackups = namespace["OutsiderBackups"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("protocols")
    key = PrivateKey.generate()
    repository = Repository.init(
        base / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key.public_key,
        sign_with=[key],
    )  # fmt: skip
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        src = base / version / "service"
        src.parent.mkdir()
        src.write_bytes(f"service {version}\n".encode() * 100)
        repository.build_release(version, [src], delta_from=[])
        repository.sign_release(version, key)
        repository.publish_release(version, key)
    return repository.path


def test_the_library_classes_implement_the_protocols(tmp_path: Path, repo: Path) -> None:
    init_node(tmp_path / "node", root_bytes=(repo / "root.json").read_bytes(), sources=[str(repo)])
    store = NodeStore.open(tmp_path / "node")
    try:
        assert isinstance(store.rollbacks, protocols.RollbackManager)
    finally:
        store.close()
    assert isinstance(UpdateManager(tmp_path / "node"), protocols.UpdateManager)
    assert isinstance(OutsiderBackups.__new__(OutsiderBackups), protocols.RollbackManager)
    assert isinstance(OutsiderVersions.__new__(OutsiderVersions), protocols.VersionManager)


@pytest.mark.anyio
async def test_an_update_and_a_rollback_run_through_a_host_s_own_managers(
    tmp_path: Path, repo: Path
) -> None:
    node = tmp_path / "node"
    init_node(node, root_bytes=(repo / "root.json").read_bytes(), sources=[str(repo)])
    made: dict[str, Any] = {}

    def versions(manager: UpdateManager) -> Any:
        made["versions"] = OutsiderVersions(manager)
        return made["versions"]

    def backups(store: NodeStore) -> Any:
        made["backups"] = OutsiderBackups(store, tmp_path / "host-backups")
        return made["backups"]

    async with UpdateManager(node, version_manager=versions, rollback_manager=backups) as m:
        assert (await m.update("1.0.0")).version == "1.0.0"  # type: ignore[union-attr]
        (node / "data" / "state.txt").write_text("written while 1.0.0 ran")
        assert (await m.update("1.1.0")).version == "1.1.0"  # type: ignore[union-attr]
        (node / "data" / "state.txt").write_text("written while 1.1.0 ran")
        # the host's version policy refuses the major jump; nothing changes
        with pytest.raises(IncompatibleReleaseError):
            await m.update("2.0.0")
        assert m.store.current_version() == "1.1.0"
        assert await m.rollback() == "1.0.0"

    assert (node / "current").resolve().name == "1.0.0"
    assert (node / "data" / "state.txt").read_text() == "written while 1.0.0 ran"
    assert ("check_compatibility", "2.0.0") in made["versions"].calls
    assert ("get_required_migrations", ("1.0.0", "1.1.0")) in made["versions"].calls
    assert made["backups"].calls[:2] == ["create None->1.0.0", "create 1.0.0->1.1.0"]
    assert made["backups"].calls[-1] == "rollback to 1.0.0"
    assert (tmp_path / "host-backups" / "2" / "data" / "state.txt").exists()


@pytest.mark.anyio
async def test_a_damaged_rollback_target_is_refused_even_with_a_host_s_rollback_manager(
    tmp_path: Path, repo: Path
) -> None:
    node = tmp_path / "node"
    source = tmp_path / "source"  # a copy of the repository that goes away
    shutil.copytree(repo, source)
    init_node(node, root_bytes=(repo / "root.json").read_bytes(), sources=[str(source)])
    backups: list[Any] = []

    def make(store: NodeStore) -> Any:
        backups.append(OutsiderBackups(store, tmp_path / "host-backups"))
        return backups[0]

    async with UpdateManager(node, rollback_manager=make) as m:
        await m.update("1.0.0")
        await m.update("1.1.0")
        shutil.rmtree(source)  # nothing can deliver 1.0.0 again: the damage cannot be repaired
        target = node / "versions" / "1.0.0" / "service"
        target.chmod(0o644)
        target.write_bytes(b"tampered" + target.read_bytes()[8:])
        with pytest.raises(blackhole_sync.LengthOrHashMismatchError, match=r"1\.0\.0"):
            await m.rollback()
        assert m.store.current_version() == "1.1.0"
    assert not any(c.startswith("rollback") for c in backups[0].calls)


def test_mypy_accepts_the_outsider_classes_as_the_protocols(tmp_path: Path) -> None:
    source = tmp_path / "outsider.py"
    source.write_text(
        "from __future__ import annotations\n"
        "import datetime as dt\nimport json\nimport shutil\n"
        "from pathlib import Path\nfrom typing import Any\n\n"
        "import blackhole_sync\nfrom blackhole_sync import protocols\n"
        + OUTSIDER_CODE
        + "\n\ndef check(m: blackhole_sync.UpdateManager, s: blackhole_sync.NodeStore) -> None:\n"
        "    v: protocols.VersionManager = OutsiderVersions(m)\n"
        "    r: protocols.RollbackManager = OutsiderBackups(s, Path('x'))\n"
        "    u: protocols.UpdateManager = m\n"
        "    lib_v: protocols.VersionManager = m.versions\n"
        "    lib_r: protocols.RollbackManager = s.rollbacks\n"
        "    del v, r, u, lib_v, lib_r\n"
    )
    result = run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)], timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_protocols_name_the_design_s_operations() -> None:
    expected = {
        protocols.UpdateManager: {
            "check_for_updates", "download_update", "verify_update", "apply_update",
            "set_update_policy", "get_update_status", "sync_with_network",
            "broadcast_update_status",
        },
        protocols.VersionManager: {
            "get_current_version", "get_installed_versions", "get_compatibility_matrix",
            "compare_versions", "check_compatibility", "get_required_migrations",
        },
        protocols.RollbackManager: {
            "can_rollback", "get_rollback_versions", "create_rollback_point",
            "perform_rollback", "backup_state", "restore_state", "prune_old_rollback_points",
        },
    }  # fmt: skip
    for protocol, names in expected.items():
        assert names <= set(dir(protocol)), protocol
    _ = (RollbackPoint, RollbackResult, StateBackup)
