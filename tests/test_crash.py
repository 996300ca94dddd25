"""Crash injection: a real subprocess is SIGKILLed at every named checkpoint of install,
migrate and rollback (and at random instants); the reopened node runs the old or the new
version, its tree re-hashes to its manifest, staging is empty, and the data database opens
with the schema of the version that runs."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest
from crashlib import check_node, copy_node, init_node, run_driver

from blackhole_sync.node.store import CHECKPOINTS, NodeStore

INSTALL_POINTS = [c for c in CHECKPOINTS if not c.startswith("rollback.")]
ROLLBACK_POINTS = [c for c in CHECKPOINTS if c.startswith("rollback.")]
AFTER_SWITCH = {
    "install.switched",
    "install.restarted",
    "install.health_checked",
    "install.committed",
}
KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def base_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("base") / "node"
    init_node(path)
    return path


def test_every_step_has_a_checkpoint() -> None:
    assert len(set(CHECKPOINTS)) == len(CHECKPOINTS)
    for prefix in ("install.", "migrate.", "rollback."):
        assert any(c.startswith(prefix) for c in CHECKPOINTS)


@pytest.mark.parametrize("point", INSTALL_POINTS)
def test_kill_during_install(point: str, base_node: Path, tmp_path: Path) -> None:
    node = copy_node(base_node, tmp_path / "node")
    proc = run_driver({"node": str(node), "ops": ["install-v2"]}, crash_at=point)
    assert proc.returncode == KILLED, (proc.stdout, proc.stderr)
    current = check_node(node)
    assert current == ("2.0.0" if point in AFTER_SWITCH else "1.0.0")
    history = NodeStore.open(node, read_only=True)
    try:
        last = history.history()[-1]
    finally:
        history.close()
    assert last["action"] == ("install" if point in AFTER_SWITCH else "failed")
    # The node is usable afterwards: the same install now completes.
    proc = run_driver({"node": str(node), "ops": ["install-v2"]})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["install-v2"] == "ok"
    assert check_node(node) == "2.0.0"


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_kill_during_manual_rollback(point: str, base_node: Path, tmp_path: Path) -> None:
    node = copy_node(base_node, tmp_path / "node")
    proc = run_driver({"node": str(node), "ops": ["install-v2", "rollback"]}, crash_at=point)
    assert proc.returncode == KILLED, (proc.stdout, proc.stderr)
    assert check_node(node) == "1.0.0"  # a journaled rollback is always finished


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_kill_during_health_failure_rollback(point: str, base_node: Path, tmp_path: Path) -> None:
    node = copy_node(base_node, tmp_path / "node")
    proc = run_driver({"node": str(node), "ops": ["install-v2-unhealthy"]}, crash_at=point)
    assert proc.returncode == KILLED, (proc.stdout, proc.stderr)
    assert check_node(node) == "1.0.0"
    with NodeStore.open(node) as store:
        assert store.is_bad("2.0.0")


def _random_kills(base_node: Path, tmp_path: Path, iterations: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    ops = ["install-v2", "rollback"]
    probe = copy_node(base_node, tmp_path / "probe")
    proc = run_driver({"node": str(probe), "ops": ops})
    assert proc.returncode == 0, proc.stderr
    duration = json.loads(proc.stdout.splitlines()[-1])["seconds"]
    outcomes: dict[str, int] = {}
    for i in range(iterations):
        node = copy_node(base_node, tmp_path / f"node{i}")
        proc = run_driver(
            {"node": str(node), "ops": ops}, kill_after=rng.uniform(0, duration * 1.1)
        )
        assert proc.returncode in (0, KILLED), proc.stderr
        current = check_node(node)
        outcomes[current] = outcomes.get(current, 0) + 1
    return outcomes


def test_random_kill_short(base_node: Path, tmp_path: Path) -> None:
    """Five kills at random instants of an install followed by a rollback (CI version)."""
    outcomes = _random_kills(base_node, tmp_path, 5, seed=1)
    assert sum(outcomes.values()) == 5


@pytest.mark.slow
def test_random_kill_soak(base_node: Path, tmp_path: Path) -> None:
    """At least 100 kills at random instants (nox -s soak)."""
    outcomes = _random_kills(base_node, tmp_path, 120, seed=random.randrange(2**32))
    assert sum(outcomes.values()) == 120


def test_kill_with_a_host_rollback_point_is_undone_from_it(base_node: Path, tmp_path: Path) -> None:
    """A host's RollbackManager made the point (a state backup outside the node): recovery,
    which has no hooks, restores ``data/`` from the journaled path."""
    node = copy_node(base_node, tmp_path / "node")
    spec = {"node": str(node), "ops": ["install-v2-foreign-backup"], "points": str(tmp_path / "p")}
    proc = run_driver(spec, crash_at="migrate.swapped")
    assert proc.returncode == KILLED, (proc.stdout, proc.stderr)
    assert check_node(node) == "1.0.0"
    assert (tmp_path / "p").is_dir()  # the host's point is the host's: never removed


def test_kill_with_an_opaque_host_point_says_the_data_is_left_to_the_host(
    base_node: Path, tmp_path: Path
) -> None:
    """The documented limitation: a host point the store cannot read is reported, not guessed."""
    node = copy_node(base_node, tmp_path / "node")
    spec = {"node": str(node), "ops": ["install-v2-foreign-opaque"], "points": str(tmp_path / "p")}
    proc = run_driver(spec, crash_at="migrate.swapped")
    assert proc.returncode == KILLED, (proc.stdout, proc.stderr)
    with NodeStore.open(node) as store:
        assert store.current_version() == "1.0.0"
        assert store.verify_installed() == [] and store.active_operation() is None
        last = store.history()[-1]
        assert last["action"] == "failed" and "not restored" in last["error"]


@pytest.mark.parametrize("point", ["rollback.begin", "rollback.switch_prepared"])
def test_kill_during_activation_is_finished(point: str, base_node: Path, tmp_path: Path) -> None:
    node = copy_node(base_node, tmp_path / "node")
    proc = run_driver({"node": str(node), "ops": ["install-v2", "activate-v1"]}, crash_at=point)
    assert proc.returncode == KILLED, (proc.stdout, proc.stderr)
    with NodeStore.open(node) as store:
        assert store.current_version() == "1.0.0"
        assert store.verify_installed() == [] and store.verify_installed("2.0.0") == []
        last = store.history()[-1]
        assert (last["action"], last["from_version"], last["to_version"]) == (
            "activate",
            "2.0.0",
            "1.0.0",
        )
