"""Policies through ``node run --once`` and the config.toml the node wrote, edited by an operator."""

from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    Keys,
    bhs,
    bhs_json,
    init_node,
    init_repo,
    make_keys,
    release,
    set_config,
    small_change,
    status,
    write_artifact,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("policy")
    keys = make_keys(base / "keys")
    repo = base / "repo"
    init_repo(repo, keys)
    v1 = write_artifact(base / "v1" / "app", 50_000)
    release(repo, keys, "1.0.0", v1)
    return {"keys": keys, "repo": repo, "v1": v1}


def _window_excluding_now() -> tuple[str, str]:
    now = _dt.datetime.now(_dt.UTC)
    start = (now + _dt.timedelta(hours=2)).strftime("%H:%M")
    end = (now + _dt.timedelta(hours=3)).strftime("%H:%M")
    return start, end


def _node(world: dict[str, Any], tmp_path: Path, repo: Path | None = None) -> Path:
    node = tmp_path / "node"
    init_node(node, (repo or world["repo"]) / "root.json", repo or world["repo"])
    return node


def test_update_window_that_excludes_now_defers_the_agent(
    world: dict[str, Any], tmp_path: Path
) -> None:
    node = _node(world, tmp_path)
    start, end = _window_excluding_now()
    set_config(node, "window", start=start, end=end, timezone="UTC")
    run = bhs("node", "run", node, "--once")
    assert status(node)["current_version"] is None, run.out
    # an explicit command overrides the window
    assert bhs_json("node", "update", node)["version"] == "1.0.0"
    # and with a window that includes now, the agent installs
    node2 = tmp_path / "node2"
    init_node(node2, world["repo"] / "root.json", world["repo"])
    now = _dt.datetime.now(_dt.UTC)
    set_config(node2, "window", start=(now - _dt.timedelta(hours=1)).strftime("%H:%M"),
               end=(now + _dt.timedelta(hours=1)).strftime("%H:%M"))  # fmt: skip
    bhs("node", "run", node2, "--once")
    assert status(node2)["current_version"] == "1.0.0"


def test_critical_release_installs_outside_the_window(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    repo = tmp_path / "repo"
    shutil.copytree(world["repo"], repo)
    node = _node(world, tmp_path, repo)
    bhs("node", "update", node)
    start, end = _window_excluding_now()
    set_config(node, "window", start=start, end=end)
    v2 = small_change(world["v1"], tmp_path / "v2" / "app")
    release(repo, keys, "1.1.0", v2)  # a normal release waits for the window
    bhs("node", "run", node, "--once")
    assert status(node)["current_version"] == "1.0.0"
    v3 = small_change(v2, tmp_path / "v3" / "app", at=5)
    release(repo, keys, "1.2.0", v3, build=["--critical"])
    bhs("node", "run", node, "--once")
    assert status(node)["current_version"] == "1.2.0"
    assert (node / "current" / "app").read_bytes() == v3.read_bytes()


def test_manual_policy_downloads_but_waits_for_confirmation(
    world: dict[str, Any], tmp_path: Path
) -> None:
    node = _node(world, tmp_path)
    set_config(node, "policy", mode="manual")
    set_config(node, "policy.manual", auto_download=True, require_user_confirmation=True)
    first = bhs("node", "run", node, "--once")
    assert "download" in first.out.lower(), first.out
    assert status(node)["current_version"] is None
    bhs("node", "run", node, "--once")  # still waiting
    assert status(node)["current_version"] is None
    confirmed = bhs_json("node", "confirm", node)
    assert confirmed["confirmed"] == "1.0.0"
    assert status(node)["current_version"] is None  # confirm alone does not install
    bhs("node", "run", node, "--once")
    assert status(node)["current_version"] == "1.0.0"


def test_deferral_count_is_enforced(world: dict[str, Any], tmp_path: Path) -> None:
    node = _node(world, tmp_path)
    set_config(node, "policy", mode="manual")
    set_config(node, "policy.manual", max_deferral_count=2, allow_deferral=True)
    bhs("node", "check", node)
    assert bhs_json("node", "defer", node)["count"] == 1
    assert bhs_json("node", "defer", node)["count"] == 2
    err = bhs("node", "defer", node, expect=1).err
    assert "defer" in err.lower()
    bhs("node", "run", node, "--once")
    assert status(node)["current_version"] is None
    # deferral switched off: refused outright
    set_config(node, "policy.manual", allow_deferral=False)
    bhs("node", "defer", node, expect=1)
