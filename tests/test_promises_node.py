"""Issue 9, the node side: every hole staged, every setting made to do what it says.

Each test stages one attack or one operator situation against a real repository (built with
the library, served from a directory) and real node directories, through the API or the
command line as an operator would run it, and checks the node ends where the promise says.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from cli_helpers import BIN, ENV, bhs, bhs_json

from blackhole_sync import (
    TRANSPORT_API,
    BaseTransport,
    LocalTransport,
    Locator,
    Sink,
    TransportSpec,
    hookimpl,
    make_plugin_manager,
)
from blackhole_sync.agent import run_cycle
from blackhole_sync.documents import Command, Compatibility, ConfigChange, Migration
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import (
    HealthCheckError,
    IncompatibleReleaseError,
    LengthOrHashMismatchError,
)
from blackhole_sync.manager import UpdateManager, init_node
from blackhole_sync.node import NodeStore
from blackhole_sync.release import Repository
from blackhole_sync.testing import run as run_process

NOW = dt.datetime.now(dt.UTC)


class Repo:
    """A repository whose releases carry an ``app`` file (and whatever else a test adds)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = PrivateKey.generate()
        self.repo = Repository.init(
            path, root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1,
            index_key=self.key, sign_with=[self.key],
        )  # fmt: skip
        self.work = path.parent / f"{path.name}-src"
        self.work.mkdir()

    def release(self, version: str, files: dict[str, bytes] | None = None, **options: Any) -> None:
        folder = self.work / version
        folder.mkdir()
        contents = files or {"app": f"app {version}\n".encode() * 200}
        paths = []
        for name, data in contents.items():
            (folder / name).write_bytes(data)
            paths.append(folder / name)
        self.repo.build_release(version, paths, delta_from=[], **options)
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)

    def yank(self, version: str, reason: str) -> None:
        self.repo.yank(version, self.key, reason=reason)

    def blob_of(self, version: str, name: str = "app") -> Path:
        data = (self.work / version / name).read_bytes()
        return self.path / "blobs" / hashlib.sha256(data).hexdigest()

    def node(self, path: Path, config: str = "", **edits: str) -> Path:
        """A fresh node following this repository; ``config`` is appended to config.toml and
        each ``edits`` item replaces the line starting with ``key =``."""
        init_node(path, root_bytes=(self.path / "root.json").read_bytes(), sources=[str(self.path)])
        if config or edits:
            edit_config(path, config, **edits)
        return path


def edit_config(node: Path, extra: str = "", **edits: str) -> None:
    lines = (node / "config.toml").read_text().splitlines()
    for key, value in edits.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{key} =")]
        assert len(hits) == 1, key
        lines[hits[0]] = f"{key} = {value}"
    (node / "config.toml").write_text("\n".join(lines) + "\n" + extra)


def current(node: Path) -> str | None:
    link = node / "current"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def installed(node: Path) -> list[str]:
    return sorted(os.listdir(node / "versions"))


def manager_run(node: Path, work: Any, **options: Any) -> Any:
    async def main() -> Any:
        async with UpdateManager(node, **options) as manager:
            return await work(manager)

    return anyio.run(main)


def update(node: Path, version: str | None = None, **options: Any) -> Any:
    return manager_run(node, lambda m: m.update(version), **options)


def cycle(node: Path, **options: Any) -> str:
    summary, _wait = anyio.run(lambda: run_cycle(node, **options))
    return summary


def damage(node: Path, version: str, name: str = "app") -> None:
    target = node / "versions" / version / name
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF
    target.write_bytes(bytes(data))


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


# -- hole 1: releases this node cannot run ------------------------------------------------------


def test_a_signed_release_without_an_artifact_for_this_platform_is_refused_exit_1(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release("2.0.0", platform="plan9")  # validly signed, nothing for linux
    node = repo.node(tmp_path / "node")
    bhs("node", "update", node, "--version", "1.0.0")
    for args in (["--version", "2.0.0"], []):
        refused = bhs("node", "update", node, *args, expect=1)
        assert "2.0.0 has no artifact for linux" in refused.err
        assert current(node) == "1.0.0" and installed(node) == ["1.0.0"]
    assert not any((node / "staging").iterdir())
    checked = bhs_json("node", "check", node)
    assert checked["available"] == [] and checked["not_installable"][0]["version"] == "2.0.0"


def test_a_release_excluded_by_its_compatibility_rules_is_refused_and_the_agent_steps_up(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.2.0")
    repo.release("1.5.0")
    repo.release("2.0.0", compatibility=Compatibility(min_from_version="1.5.0"))
    node = repo.node(tmp_path / "node")
    update(node, "1.2.0")
    with pytest.raises(IncompatibleReleaseError, match=r"updates from 1\.5\.0 or later"):
        update(node, "2.0.0")
    assert current(node) == "1.2.0" and installed(node) == ["1.2.0"]
    # the agent takes the release that leads there first, then the one it allows
    assert cycle(node).startswith("installed 1.5.0")
    assert cycle(node).startswith("installed 2.0.0")


def test_protocol_compatibility_uses_the_node_setting_or_the_host_s_answer(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release("2.0.0", compatibility=Compatibility(protocol_versions=(5,)))
    node = repo.node(tmp_path / "node", protocol_versions="[3, 4]")
    update(node, "1.0.0")
    with pytest.raises(IncompatibleReleaseError, match="speaks protocols 5, this node runs 3, 4"):
        update(node, "2.0.0")
    assert current(node) == "1.0.0"

    class Host:  # the host runs protocol 5 already: its answer wins over the setting
        @hookimpl
        def blackhole_sync_protocol_versions(self, node_dir: Path) -> Sequence[int]:
            return [4, 5]

    plugins = make_plugin_manager()
    plugins.register(Host())
    update(node, "2.0.0", plugins=plugins)
    assert current(node) == "2.0.0"


# -- hole 2: every rollback re-hashes its target ---------------------------------------------------


def test_a_rollback_to_a_tree_with_a_changed_byte_is_refused_when_nothing_can_re_fetch_it(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0")
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    update(node, "1.1.0")
    damage(node, "1.0.0")
    repo.blob_of("1.0.0").unlink()  # no source holds the good bytes any more
    refused = bhs("node", "rollback", node, expect=3)
    assert "installed tree of 1.0.0 does not match its signed manifest" in refused.err
    assert current(node) == "1.1.0"
    # the library's own rollback paths re-hash too (no cached "verified" stamp)
    with NodeStore.open(node) as store:
        with pytest.raises(LengthOrHashMismatchError, match=r"1\.0\.0"):
            store.rollback("1.0.0")
        with pytest.raises(LengthOrHashMismatchError, match=r"1\.0\.0"):
            anyio.run(lambda: store.rollbacks.perform_rollback("1.0.0"))
        with pytest.raises(LengthOrHashMismatchError, match=r"1\.0\.0"):
            store.activate("1.0.0")
        assert store.current_version() == "1.1.0"


def test_a_rollback_to_a_damaged_tree_re_fetches_it_when_a_source_delivers(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0")
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    update(node, "1.1.0")
    damage(node, "1.0.0")
    bhs("node", "rollback", node)
    assert current(node) == "1.0.0"
    assert (node / "current" / "app").read_bytes() == (repo.work / "1.0.0" / "app").read_bytes()
    assert bhs("node", "verify", node).code == 0
    history = bhs_json("node", "history", node)["history"]
    assert any(h["action"] == "repair" and h["to_version"] == "1.0.0" for h in history)


class FailsOn:
    """A plugin health check that fails for one version (and can run a side effect first)."""

    def __init__(self, version: str, before: Any = None) -> None:
        self.version = version
        self.before = before

    @hookimpl
    def blackhole_sync_health_checks(self, node_dir: Path) -> Sequence[Any]:
        outer = self

        class Check:
            name = "fails-on"

            async def check(self, node_dir: Path, version: str) -> str | None:
                if version != outer.version:
                    return None
                if outer.before is not None:
                    outer.before()
                return "the service does not answer"

        return [Check()]


def test_a_failed_health_check_switches_back_only_to_a_verified_tree(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0")
    repo.release("1.2.0")
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    damage(node, "1.0.0")
    # a source delivers 1.0.0 again: the health rollback repairs it, then switches
    plugins = make_plugin_manager()
    plugins.register(FailsOn("1.1.0"))
    with pytest.raises(HealthCheckError, match="does not answer"):
        update(node, "1.1.0", plugins=plugins)
    assert current(node) == "1.0.0"
    assert (node / "current" / "app").read_bytes() == (repo.work / "1.0.0" / "app").read_bytes()
    # nothing delivers it: the node stays on the failed version, marked bad, and says why
    damage(node, "1.0.0")
    plugins = make_plugin_manager()
    plugins.register(FailsOn("1.2.0", before=repo.blob_of("1.0.0").unlink))
    with pytest.raises(HealthCheckError, match=r"not rolled back: installed tree of 1\.0\.0"):
        update(node, "1.2.0", plugins=plugins)
    assert current(node) == "1.2.0"
    with NodeStore.open(node) as store:
        assert store.is_bad("1.2.0")
        assert store.active_operation() is None


def test_the_agent_abandoning_a_version_does_not_go_back_to_a_damaged_tree(
    repo: Repo, tmp_path: Path
) -> None:
    from blackhole_sync.manager import MAX_START_FAILURES

    health = Command(("sh", "-c", 'test ! -e "$BLACKHOLE_SYNC_NODE/unhealthy"'), timeout=10)
    repo.release("1.0.0", health=health)
    repo.release("1.1.0", health=health)
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    update(node, "1.1.0")
    (node / "unhealthy").touch()  # 1.1.0 stops answering after its install
    damage(node, "1.0.0")
    repo.blob_of("1.0.0").unlink()

    async def watch(manager: UpdateManager) -> str:
        return await manager.confirm_current_health()

    for _ in range(MAX_START_FAILURES - 1):
        assert manager_run(node, watch) == "unhealthy"
    with pytest.raises(LengthOrHashMismatchError, match="the node stays where it is"):
        manager_run(node, watch)
    assert current(node) == "1.1.0"
    with NodeStore.open(node) as store:
        assert store.is_bad("1.1.0")  # never retried; the next cycle tries the way back again


# -- hole 3: verify what `current` points at ---------------------------------------------------


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlinked-version"])
def test_verify_checks_what_current_points_at_not_what_its_name_says(
    repo: Repo, tmp_path: Path, how: str
) -> None:
    repo.release("1.0.0")
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    fake = tmp_path / "elsewhere" / "1.0.0"
    shutil.copytree(node / "versions" / "1.0.0", fake)
    (fake / "app").chmod(0o644)
    (fake / "app").write_bytes(b"evil " + (fake / "app").read_bytes()[5:])
    link = node / "current"
    link.unlink()
    if how == "absolute":
        link.symlink_to(fake)
    elif how == "dotdot":
        link.symlink_to("versions/../../elsewhere/1.0.0")
    else:
        real = node / "versions" / "1.0.0"
        shutil.rmtree(real)
        real.symlink_to(fake)
        link.symlink_to("versions/1.0.0")
    result = bhs("node", "verify", node, "--json", expect=3).json()
    assert not result["ok"]
    assert any("current" in p for p in result["problems"]), result["problems"]
    assert any("current/app" in p for p in result["problems"]), result["problems"]


# -- hole 4: read-only commands on a read-only node --------------------------------------------


def _node_for_reading(repo: Repo, path: Path) -> Path:
    repo.release("1.0.0")
    node = repo.node(path)
    update(node, "1.0.0")
    return node


def test_status_history_and_verify_work_on_a_read_only_mount(repo: Repo, tmp_path: Path) -> None:
    node = _node_for_reading(repo, tmp_path / "node")
    script = (
        f"mount --bind -o ro {node} {node} || exit 98; "
        f"touch {node}/probe 2>/dev/null && exit 99; "
        + " && ".join(
            f"{BIN} node {cmd} {node} --json > {tmp_path}/{cmd}.json"
            for cmd in ("status", "history", "verify")
        )
    )
    try:
        proc = run_process(["unshare", "--mount", "sh", "-c", script], env=ENV, timeout=120)
    except FileNotFoundError:
        pytest.skip("unshare is not available")
    if proc.returncode in (98, 99) or "unshare:" in proc.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["current_version"] == "1.0.0"
    assert json.loads((tmp_path / "verify.json").read_text())["ok"]
    assert json.loads((tmp_path / "history.json").read_text())["history"]


def test_status_works_for_a_user_who_cannot_write_the_lock_file(repo: Repo, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    if not Path("/tmp").stat().st_mode & 0o001:
        pytest.skip("other users cannot enter /tmp on this machine")
    base = Path(f"/tmp/bhs-ro-{os.getpid()}-{tmp_path.name}")
    base.mkdir(mode=0o755)
    try:
        os.chmod(base, 0o755)
        node = _node_for_reading(repo, base / "node")
        (node / ".lock").touch()
        os.chmod(node / ".lock", 0o600)  # root's; identity.key is 0600 root's too
        os.chmod(node / "config.toml", 0o644)  # the operator may read the settings
        command = [
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            BIN, "node", "status", str(node), "--json",
        ]  # fmt: skip
        proc = run_process(command, env=ENV, timeout=120)
        assert proc.returncode == 0, proc.stderr
        status = json.loads(proc.stdout)
        assert status["current_version"] == "1.0.0" and status["node_public_key"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- hole 7: a yanked release ----------------------------------------------------------------------


def test_a_yanked_running_version_is_shown_by_check_update_and_status(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0")
    node = repo.node(tmp_path / "node")
    update(node, "1.1.0")
    repo.yank("1.1.0", "corrupts the peer table")
    expected = {"version": "1.1.0", "reason": "corrupts the peer table"}
    assert bhs_json("node", "check", node)["yanked"] == expected
    text = bhs("node", "check", node).out
    assert "1.1.0 was withdrawn: corrupts the peer table" in text and "up to date" not in text
    updated = bhs_json("node", "update", node)
    assert updated["yanked"] == expected and not updated["updated"]
    assert "withdrawn" in bhs("node", "update", node).out
    assert bhs_json("node", "status", node)["yanked"] == expected
    assert "withdrawn: corrupts the peer table" in bhs("node", "status", node).out
    assert current(node) == "1.1.0"


def test_the_agent_moves_off_a_yanked_version_only_upward(repo: Repo, tmp_path: Path) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0")
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    update(node, "1.1.0")
    repo.yank("1.1.0", "bad build")
    summary = cycle(node)
    assert "1.1.0 was withdrawn (bad build)" in summary and "staying" in summary
    assert current(node) == "1.1.0"  # never down to 1.0.0
    repo.release("1.2.0", priority=0)
    repo.release("1.3.0")
    assert cycle(node).startswith("installed 1.3.0")


# -- settings that do nothing today ----------------------------------------------------------------


def test_a_switch_not_healthy_within_max_downtime_rolls_back(repo: Repo, tmp_path: Path) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0", health=Command(("sleep", "30"), timeout=60))
    node = repo.node(tmp_path / "node", max_downtime="1")
    update(node, "1.0.0")
    started = time.monotonic()
    with pytest.raises(HealthCheckError, match=r"max_downtime \(1s\)"):
        update(node, "1.1.0")
    assert time.monotonic() - started < 25
    assert current(node) == "1.0.0"
    with NodeStore.open(node) as store:
        assert store.is_bad("1.1.0")


def test_the_agent_does_not_install_a_release_no_health_check_applies_to_when_required(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    node = repo.node(tmp_path / "node", require_health_check="true")
    summary = cycle(node)
    assert "skip" in summary and "require_health_check" in summary
    assert current(node) is None
    edit_config(node, health='["true"]')
    assert cycle(node).startswith("installed 1.0.0")


def test_backup_before_update_false_skips_the_backup_unless_a_schema_migration_runs(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0")
    repo.release("1.2.0", migrations=[Migration("peers", 0, 1, "CREATE TABLE peers (id TEXT)")])
    node = repo.node(tmp_path / "node", backup_before_update="false")
    for version in ("1.0.0", "1.1.0"):
        update(node, version)
    with NodeStore.open(node) as store:
        assert store.rollbacks.rollback_points() == []
    update(node, "1.2.0")
    with NodeStore.open(node) as store:
        [point] = store.rollbacks.rollback_points()
        assert (point.previous_version, point.for_version) == ("1.1.0", "1.2.0")


METRICS = ["sh", "-c", 'cat "$BLACKHOLE_SYNC_VERSION_DIR/metrics.json"']


def _regression_world(repo: Repo, tmp_path: Path, emergency_rollback: bool) -> Path:
    for version, latency in (("1.0.0", 10), ("1.1.0", 30)):
        files = {
            "app": f"app {version}\n".encode() * 100,
            "metrics.json": json.dumps({"latency_ms": latency, "errors": 0}).encode(),
        }
        repo.release(version, files)
    node = repo.node(
        tmp_path / "node",
        metrics=json.dumps(METRICS),
        emergency_rollback=json.dumps(emergency_rollback),
        samples="3",
        watch_seconds="1",
        interval="1",
    )
    text = (node / "config.toml").read_text()
    text = text.replace("[regression.thresholds]\n", "[regression.thresholds]\nlatency_ms = 5000\n")
    (node / "config.toml").write_text(text)
    update(node, "1.0.0")
    return node


def test_a_metric_regression_after_a_switch_rolls_back_with_emergency_rollback(
    repo: Repo, tmp_path: Path
) -> None:
    node = _regression_world(repo, tmp_path, emergency_rollback=True)
    with pytest.raises(HealthCheckError, match=r"latency_ms: 10 -> 30 .*rolled back to 1.0.0"):
        update(node, "1.1.0")
    assert current(node) == "1.0.0"
    with NodeStore.open(node) as store:
        assert store.is_bad("1.1.0")
        baseline = json.loads(store.get_meta("metrics_baseline") or "{}")
    assert baseline["version"] == "1.0.0" and len(baseline["samples"]) == 3


def test_a_metric_regression_is_reported_and_kept_without_emergency_rollback(
    repo: Repo, tmp_path: Path
) -> None:
    node = _regression_world(repo, tmp_path, emergency_rollback=False)
    update(node, "1.1.0")
    assert current(node) == "1.1.0"
    history = bhs_json("node", "history", node)["history"]
    [regression] = [h for h in history if h["action"] == "regression"]
    assert "latency_ms" in regression["error"]


def test_the_manual_policy_s_download_bandwidth_limit_reaches_the_transports(
    repo: Repo, tmp_path: Path
) -> None:
    seen: list[Any] = []

    class Probe(BaseTransport):
        name: ClassVar[str] = "probe"

        def __init__(self, **options: Any) -> None:
            seen.append(options.get("rate_limit"))

        async def fetch(
            self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0
        ) -> None:
            inner = Locator.url("file://" + locator.value[len("probe+file://") :])
            async with LocalTransport() as local:
                await local.fetch(inner, sink, max_length=max_length, start=start)

    class Plugin:
        @hookimpl
        def blackhole_sync_transports(self) -> Sequence[TransportSpec]:
            spec = TransportSpec(
                "probe", Probe, api=TRANSPORT_API, backends={"asyncio", "trio"},
                schemes={"probe+file"},
            )  # fmt: skip
            return [spec]

    repo.release("1.0.0")
    node = repo.node(tmp_path / "node", bandwidth_limit="50000", download_bandwidth_limit="2000")
    edit_config(node, sources=json.dumps([f"probe+file://{repo.path}"]))
    plugins = make_plugin_manager()
    plugins.register(Plugin())
    manager_run(node, lambda m: m.check_for_updates(), plugins=plugins)
    assert seen[-1] == 50000  # automatic policy: bandwidth_limit alone
    edit_config(node, mode='"manual"')
    manager_run(node, lambda m: m.check_for_updates(), plugins=plugins)
    assert seen[-1] == 2000  # manual policy: the lower of the two


def test_a_node_local_consensus_threshold_is_refused_at_load_naming_the_signed_field(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    node = repo.node(tmp_path / "node")
    text = (node / "config.toml").read_text()
    text = text.replace("[policy.automatic]\n", "[policy.automatic]\nconsensus_threshold = 9000\n")
    (node / "config.toml").write_text(text)
    refused = bhs("node", "check", node, expect=1)
    assert "policy.automatic.consensus_threshold" in refused.err
    assert "threshold_bp decides" in refused.err


def test_a_configuration_change_with_a_future_date_is_applied_by_the_agent_when_it_comes(
    repo: Repo, tmp_path: Path
) -> None:
    effective = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
    repo.release(
        "1.0.0",
        update_type="binary",
        config_changes=[ConfigChange("net.fee", 7, effective=effective)],
    )
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    config = node / "data" / "config.json"
    assert not config.exists() or "fee" not in config.read_text()
    cycle(node)  # not due yet
    assert not config.exists() or "fee" not in config.read_text()
    time.sleep(max(0.0, (effective - dt.datetime.now(dt.UTC)).total_seconds()) + 1.1)
    cycle(node)
    assert json.loads(config.read_text())["net"]["fee"] == 7
    history = bhs_json("node", "history", node)["history"]
    assert history[-1]["action"] == "config"


def test_a_rollback_keeps_configuration_changes_past_their_rollback_window(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release(
        "1.1.0",
        config_changes=[
            ConfigChange("net.fee", 9, rollback_window=0),
            ConfigChange("net.cap", 5, rollback_window=3600),
        ],
    )
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    update(node, "1.1.0")
    assert json.loads((node / "data" / "config.json").read_text())["net"] == {"fee": 9, "cap": 5}
    time.sleep(1.1)  # net.fee's window (0 s) is over, net.cap's (an hour) is not
    bhs("node", "rollback", node)
    assert current(node) == "1.0.0"
    assert json.loads((node / "data" / "config.json").read_text())["net"] == {"fee": 9}


def test_prune_honours_keep_versions_and_a_dry_run_changes_nothing(
    repo: Repo, tmp_path: Path
) -> None:
    node = repo.node(tmp_path / "node", keep_versions="2")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        repo.release(version)
        update(node, version)
    planned = bhs_json("node", "prune", node, "--dry-run")
    assert planned == {"removed": ["1.0.0"], "keep": 2, "dry_run": True}
    assert installed(node) == ["1.0.0", "1.1.0", "1.2.0"]
    assert "would remove: 1.0.0" in bhs("node", "prune", node, "--dry-run").out
    assert bhs_json("node", "prune", node)["removed"] == ["1.0.0"]
    assert installed(node) == ["1.1.0", "1.2.0"]


# -- the operator ----------------------------------------------------------------------------------


def test_held_versions_are_shown_and_released_when_a_newer_release_supersedes_them(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0")
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    update(node, "1.1.0")
    bhs("node", "rollback", node)
    assert bhs_json("node", "status", node)["held_versions"] == ["1.1.0"]
    assert "held:               1.1.0" in bhs("node", "status", node).out
    summary = cycle(node)  # the held release waits: not "up to date"
    assert "up to date" not in summary and "1.1.0" in summary and "held" in summary
    assert current(node) == "1.0.0"
    repo.release("1.2.0")
    assert cycle(node).startswith("installed 1.2.0")
    assert bhs_json("node", "status", node)["held_versions"] == []


def test_status_shows_an_update_waiting_for_confirm_and_confirm_says_when_it_installs(
    repo: Repo, tmp_path: Path
) -> None:
    repo.release("1.0.0")
    node = repo.node(tmp_path / "node", mode='"manual"')
    cycle(node)  # downloads; waits for the operator
    status = bhs_json("node", "status", node)
    assert status["pending"]["version"] == "1.0.0"
    assert "node confirm" in status["pending"]["reason"]
    assert "pending:            1.0.0" in bhs("node", "status", node).out
    confirmed = bhs("node", "confirm", node)
    assert "the agent installs it on its next check" in confirmed.out
    assert cycle(node).startswith("installed 1.0.0")
    assert bhs_json("node", "status", node)["pending"] is None


def test_confirm_of_a_held_version_releases_the_hold(repo: Repo, tmp_path: Path) -> None:
    repo.release("1.0.0")
    repo.release("1.1.0")
    node = repo.node(tmp_path / "node")
    update(node, "1.0.0")
    update(node, "1.1.0")
    bhs("node", "rollback", node)
    result = bhs_json("node", "confirm", node, "--version", "1.1.0")
    assert result["released_hold"] and result["next"]["action"] == "install"
    assert cycle(node).startswith("installed 1.1.0")


def test_plugin_settings_block_and_autoload_and_load_failures_show_in_status(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata as md

    repo.release("1.0.0")
    node = repo.node(tmp_path / "node")
    broken = md.EntryPoint("broken", "no_such_module_for_bhs:plugin", "blackhole_sync")
    loaded = md.EntryPoint("mine", "colorsys", "blackhole_sync")  # a module with no hooks
    monkeypatch.setattr(md, "entry_points", lambda group: [broken, loaded])

    def names(manager: UpdateManager) -> Any:
        async def work() -> set[str]:
            pairs = manager.plugins.list_name_plugin()
            return {name for name, plugin in pairs if plugin is not None}

        return work()

    assert {"broken", "mine"} & manager_run(node, names) == {"mine"}
    status = bhs_json("node", "status", node)
    assert [f["name"] for f in status["plugin_failures"]] == ["broken"]
    assert "plugin not loaded:  broken" in bhs("node", "status", node).out
    edit_config(node, block='["broken", "mine"]')
    assert {"broken", "mine"} & manager_run(node, names) == set()
    assert bhs_json("node", "status", node)["plugin_failures"] == []
    edit_config(node, block="[]", autoload="false")
    assert {"broken", "mine"} & manager_run(node, names) == set()


def test_removing_a_sandbox_never_changes_the_mode_of_the_directory_it_lives_in(
    tmp_path: Path,
) -> None:
    from blackhole_sync.node import Sandbox

    parent = tmp_path / "shared-tmp"
    parent.mkdir()
    parent.chmod(0o1777)  # like /tmp, where sandboxes are made by default
    gone = parent / "sandbox-gone"  # its removal fails at the root itself
    sandbox = Sandbox(root=gone, tree=gone / "tree", data=gone / "data", watch_paths=())
    anyio.run(sandbox.aclose)
    assert parent.stat().st_mode & 0o7777 == 0o1777
