"""The update agent's post-install watch: good after the window, abandoned after a crash loop."""

from __future__ import annotations

import datetime as _dt
from functools import partial
from pathlib import Path

import pytest

from blackhole_sync.documents import Command
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.manager import MAX_START_FAILURES, UpdateManager, init_node
from blackhole_sync.node.store import NodeStore
from blackhole_sync.release import Repository

HEALTH = ("sh", "-c", 'test ! -e "$BLACKHOLE_SYNC_NODE/make-health-fail"')


def setup(tmp_path: Path, window: int | None) -> Path:
    key = PrivateKey.generate()
    repo = Repository.init(
        tmp_path / "repo",
        root_keys=[key.public_key],
        root_threshold=1,
        release_keys=[key.public_key],
        release_threshold=1,
        index_key=key,
        sign_with=[key],
    )
    for version in ("1.0.0", "1.1.0"):
        (tmp_path / "app").write_bytes(f"app {version}\n".encode() * 100)
        repo.build_release(
            version, [tmp_path / "app"], health=Command(HEALTH, timeout=10, window=window)
        )
        repo.sign_release(version, key)
        repo.publish_release(version, key)
    node = tmp_path / "node"
    init_node(
        node,
        root_bytes=(tmp_path / "repo" / "root.json").read_bytes(),
        sources=[str(tmp_path / "repo")],
    )
    return node


async def install(node: Path, version: str) -> None:
    async with UpdateManager(node) as manager:
        await manager.update(version)


async def watch(node: Path, clock: _dt.datetime | None = None) -> str:
    kwargs = {} if clock is None else {"clock": lambda: clock}
    async with UpdateManager(node, **kwargs) as manager:
        return await manager.confirm_current_health()


@pytest.mark.anyio
async def test_version_failing_health_on_every_start_is_abandoned_not_crash_looped(
    tmp_path: Path,
) -> None:
    node = setup(tmp_path, window=None)
    await install(node, "1.0.0")
    await install(node, "1.1.0")
    (node / "make-health-fail").touch()  # the new version stops being healthy after install
    results = [await watch(node) for _ in range(MAX_START_FAILURES)]
    assert results == ["unhealthy"] * (MAX_START_FAILURES - 1) + ["abandoned"]
    with NodeStore.open(node) as store:
        assert store.current_version() == "1.0.0"
        assert store.is_bad("1.1.0")
    (node / "make-health-fail").unlink()
    async with UpdateManager(node) as manager:  # a bad version is never offered again
        assert [u.version for u in await manager.check_for_updates()] == []


@pytest.mark.anyio
async def test_version_is_marked_good_only_after_its_health_window(tmp_path: Path) -> None:
    node = setup(tmp_path, window=3600)
    await install(node, "1.0.0")
    assert await watch(node) == "watching"
    later = _dt.datetime.now(_dt.UTC) + _dt.timedelta(hours=2)
    assert await watch(node, later) == "good"
    with NodeStore.open(node) as store:
        assert store.version_state("1.0.0") == "good"


@pytest.mark.anyio
async def test_a_failed_cycle_is_retried_soon_not_a_check_interval_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import anyio

    from blackhole_sync import agent
    from blackhole_sync.fetch import make_plugin_manager

    node = setup(tmp_path, window=None)
    hidden = tmp_path / "repo-away"
    (tmp_path / "repo").rename(hidden)  # the only source is gone: the first cycle fails
    monkeypatch.setattr(agent, "FAILED_RETRY", 0.2)

    def current() -> str | None:  # without the node's lock, which the agent may hold
        link = node / "current"
        return link.resolve().name if link.is_symlink() else None

    async def bring_the_source_back() -> None:
        with anyio.fail_after(30):
            while "check failed" not in capsys.readouterr().out:  # noqa: ASYNC110 - polls output
                await anyio.sleep(0.05)
        hidden.rename(tmp_path / "repo")
        with anyio.fail_after(30):  # the check interval is an hour: only the retry installs
            while current() != "1.1.0":  # noqa: ASYNC110 - polls another task's result
                await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        # check_interval: the default hour; no plugins (no peer network: the core's loop alone)
        tg.start_soon(
            partial(agent.run_agent, node, plugins=make_plugin_manager(load_entrypoints=False))
        )
        await bring_the_source_back()
        tg.cancel_scope.cancel()
    assert current() == "1.1.0"
