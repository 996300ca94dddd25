"""VersionManager: semver ordering, installed versions, compatibility and migration paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from repo_sim import RepoSim

from blackhole_sync.documents import ReleaseManifest
from blackhole_sync.documents.versions import (
    VersionComparison,
    VersionInfo,
    VersionManager,
    compare_versions,
    sort_versions,
)
from blackhole_sync.errors import FormatError, MigrationError

SIM = RepoSim()


def manifest(version: str, **extra: Any) -> ReleaseManifest:
    return ReleaseManifest.from_dict(SIM.manifest_signed(version, **extra))


def migration(mid: str, a: int, b: int) -> dict[str, Any]:
    return {"id": mid, "from_schema": a, "to_schema": b, "sql": f"-- {mid}"}


class Source:
    def __init__(self, current: str | None, installed: Sequence[str]) -> None:
        self.current = current
        self.installed = installed

    def current_version(self) -> str | None:
        return self.current

    def installed_versions(self) -> Sequence[VersionInfo]:
        return [VersionInfo(v) for v in self.installed]


def test_compare_versions_by_semver_precedence() -> None:
    assert compare_versions("1.0.0", "1.0.1") is VersionComparison.OLDER
    assert compare_versions("1.10.0", "1.9.0") is VersionComparison.NEWER
    assert compare_versions("1.0.0-rc.1", "1.0.0") is VersionComparison.OLDER
    assert compare_versions("1.0.0-rc.2", "1.0.0-rc.10") is VersionComparison.OLDER
    assert compare_versions("2.0.0", "2.0.0") is VersionComparison.EQUAL


@pytest.mark.parametrize("bad", ["v1.0.0", "1.0", "1.0.0+build", "01.0.0"])
def test_compare_refuses_invalid_versions(bad: str) -> None:
    with pytest.raises(FormatError):
        compare_versions(bad, "1.0.0")
    with pytest.raises(FormatError):
        compare_versions("1.0.0", bad)


def test_sort_versions() -> None:
    versions = ["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.9", "1.2.0-alpha"]
    assert sort_versions(versions) == ["0.9.9", "1.2.0-alpha", "1.2.0-rc.1", "1.2.0", "1.10.0"]
    assert sort_versions(versions, reverse=True)[0] == "1.10.0"


def test_installed_versions_ascending() -> None:
    vm = VersionManager(Source("1.10.0", ["1.10.0", "1.9.0", "1.9.0-rc.1"]))
    assert vm.get_current_version() == "1.10.0"
    assert [i.version for i in vm.get_installed_versions()] == ["1.9.0-rc.1", "1.9.0", "1.10.0"]
    assert vm.compare_versions("1.9.0", "1.10.0") is VersionComparison.OLDER


def test_compatibility_min_from_version() -> None:
    manifests = {"2.0.0": manifest("2.0.0", compatibility={"min_from_version": "1.5.0"})}
    assert not VersionManager(Source("1.4.9", []), lambda: manifests).check_compatibility("2.0.0")
    assert VersionManager(Source("1.5.0", []), lambda: manifests).check_compatibility("2.0.0")
    # A fresh node (nothing installed) may install anything.
    assert VersionManager(Source(None, []), lambda: manifests).check_compatibility("2.0.0")
    assert not VersionManager(Source("1.5.0", []), lambda: manifests).check_compatibility("9.9.9")


def test_compatibility_protocol_overlap() -> None:
    manifests = {"2.0.0": manifest("2.0.0", compatibility={"protocol_versions": [4, 5]})}
    vm = VersionManager(Source("1.0.0", []), lambda: manifests, protocol_versions=lambda: [3])
    assert not vm.check_compatibility("2.0.0")
    vm = VersionManager(Source("1.0.0", []), lambda: manifests, protocol_versions=lambda: [3, 4])
    assert vm.check_compatibility("2.0.0")
    matrix = vm.get_compatibility_matrix()
    assert matrix.current == "1.0.0"
    assert matrix.entries["2.0.0"]["protocol_versions"] == [4, 5]


def test_migration_path_in_schema_order() -> None:
    manifests = {
        "1.1.0": manifest("1.1.0", migrations=[migration("a", 1, 2)]),
        "1.2.0": manifest("1.2.0", migrations=[migration("b", 2, 3), migration("c", 3, 4)]),
        "1.3.0": manifest("1.3.0", migrations=[migration("d", 4, 5)]),
    }
    vm = VersionManager(Source("1.0.0", []), lambda: manifests, schema_version=lambda: 1)
    assert [m.id for m in vm.get_required_migrations("1.0.0", "1.2.0")] == ["a", "b", "c"]
    vm = VersionManager(Source("1.1.0", []), lambda: manifests, schema_version=lambda: 2)
    assert [m.id for m in vm.get_required_migrations("1.1.0", "1.3.0")] == ["b", "c", "d"]


def test_migration_gap_refused() -> None:
    manifests = {"1.2.0": manifest("1.2.0", migrations=[migration("b", 3, 4)])}
    vm = VersionManager(Source("1.0.0", []), lambda: manifests, schema_version=lambda: 1)
    with pytest.raises(MigrationError):
        vm.get_required_migrations("1.0.0", "1.2.0")


def test_migrations_already_applied_skipped() -> None:
    manifests = {"1.1.0": manifest("1.1.0", migrations=[migration("a", 1, 2)])}
    vm = VersionManager(Source("1.1.0", []), lambda: manifests, schema_version=lambda: 2)
    assert vm.get_required_migrations(None, "1.1.0") == []


PRECEDENCE_CASES = [
    "0.9.9", "1.0.0-0a", "1.0.0-1", "1.0.0-a1", "1.0.0-alpha", "1.0.0-alpha.1",
    "1.0.0-alpha.1.2", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
    "1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0", "2.0.0",
]  # fmt: skip


def test_cached_precedence_orders_exactly_as_semver() -> None:
    import itertools

    import semver

    from blackhole_sync.documents import compare_versions, newer_versions, sort_versions

    for a, b in itertools.product(PRECEDENCE_CASES, PRECEDENCE_CASES):
        assert int(compare_versions(a, b)) == semver.Version.parse(a).compare(b), (a, b)
    shuffled = list(reversed(PRECEDENCE_CASES))
    assert sort_versions(shuffled) == sorted(shuffled, key=semver.Version.parse)
    assert newer_versions(shuffled, "1.0.0-rc.1") == ["1.0.0", "1.2.0", "1.10.0", "2.0.0"]
    assert newer_versions(shuffled, None) == sort_versions(shuffled)
