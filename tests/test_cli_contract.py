"""ARCHITECTURE.md section 6, clause by clause, as an adversarial operator would probe it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    BIN,
    ENV,
    Keys,
    bhs,
    bhs_json,
    init_node,
    init_repo,
    make_keys,
    release,
    serve,
    small_change,
    snapshot,
    status,
    write_artifact,
)

from blackhole_sync.testing import run, scaled, spawn

COMMANDS = {
    ("key", "generate"): ["--encrypt"],
    ("key", "show"): ["--json"],
    ("repo", "sign"): ["--key", "--json"],
    ("repo", "publish-root"): ["--json"],
    ("repo", "show"): ["--json"],
    ("release", "export"): ["--version", "--json"],
    ("release", "import"): ["--json"],
    ("repo", "init"): ["--root-key", "--root-threshold", "--release-key", "--release-threshold",
                       "--index-key", "--governance-key", "--governance-threshold",
                       "--root-expires", "--index-expires", "--sign-with"],
    ("repo", "rotate"): ["--sign-with", "--revoke", "--root-key", "--release-key", "--index-key"],
    ("repo", "refresh"): ["--index-key"],
    ("release", "build"): ["--version", "--artifact", "--type", "--channel", "--critical",
                           "--delta-from", "--unpack", "--platform", "--arch", "--json"],
    ("release", "sign"): ["--version", "--key"],
    ("release", "publish"): ["--version", "--index-key"],
    ("release", "list"): ["--json"],
    ("release", "show"): ["--version", "--json"],
    ("release", "yank"): ["--version", "--index-key"],
    ("serve",): ["--host", "--port"],
    ("node", "init"): ["--trust", "--source", "--channel"],
    ("node", "check"): ["--json"],
    ("node", "update"): ["--version", "--json"],
    ("node", "status"): ["--json"],
    ("node", "rollback"): ["--version"],
    ("node", "history"): ["--json"],
    ("node", "run"): [],
    ("node", "confirm"): ["--version"],
    ("node", "defer"): [],
    ("node", "verify"): ["--json"],
    ("node", "prune"): ["--keep", "--dry-run"],
    ("plugins", "list"): ["--json"],
    ("demo",): [],
}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Keys and a repository with 1.0.0 and 1.1.0 (a delta) published; never modified."""
    base = tmp_path_factory.mktemp("contract")
    keys = make_keys(base / "keys")
    repo = base / "repo"
    init_repo(repo, keys)
    v1 = write_artifact(base / "v1" / "app", 200_000, mode=0o751)
    conf = base / "v1" / "app.conf"
    conf.write_text("x = 1\n")
    conf.chmod(0o640)
    release(repo, keys, "1.0.0", v1, conf)
    v2 = small_change(v1, base / "v2" / "app")
    release(repo, keys, "1.1.0", v2, conf)
    return {"keys": keys, "repo": repo, "v1": v1, "v2": v2, "conf": conf, "base": base}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture(scope="module")
def node_template(world: dict[str, Any]) -> Path:
    """A node (path source) with 1.0.0 and 1.1.0 installed; copy it before changing it."""
    node = world["base"] / "node-template"
    init_node(node, world["repo"] / "root.json", world["repo"])
    bhs("node", "update", node, "--version", "1.0.0")
    bhs("node", "update", node)
    return node


@pytest.fixture
def node(node_template: Path, tmp_path: Path) -> Path:
    return _copy(node_template, tmp_path / "node")


# -- the commands and global conventions ------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
def test_every_section_6_command_and_flag_exists(command: tuple[str, ...]) -> None:
    text = bhs(*command, "--help").out
    for flag in COMMANDS[command]:
        assert flag in text, f"{' '.join(command)} lacks {flag}"


def test_usage_errors_exit_2(world: dict[str, Any], tmp_path: Path) -> None:
    bhs(expect=2)
    bhs("no-such-group", expect=2)
    bhs("node", "explode", tmp_path, expect=2)
    bhs("node", "status", expect=2)  # NODE missing
    bhs("node", "prune", tmp_path, "--keep", "0", expect=2)  # at least 1
    bhs("node", "prune", tmp_path, "--keep", "many", expect=2)
    bhs("serve", world["repo"], "--port", "http", expect=2)
    bhs("release", "build", world["repo"], "--version", "v1.2.3", "--artifact", world["v1"],
        expect=2)  # fmt: skip
    bhs("release", "build", world["repo"], "--version", "1.2.3+build.7", "--artifact",
        world["v1"], expect=2)  # fmt: skip
    bhs("node", "status", tmp_path, "--jsn", expect=2)


def test_errors_are_one_line_on_stderr_without_traceback(tmp_path: Path) -> None:
    result = bhs("node", "status", tmp_path / "nowhere", "--json", expect=1)
    # with --json the error is also the one JSON object on stdout
    assert result.json()["error"]["exit"] == 1
    assert len(result.err.strip().splitlines()) == 1
    debug = run([BIN, "--debug", "node", "status", str(tmp_path / "nowhere")], env=ENV, timeout=60)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr  # --debug adds it


def test_json_prints_exactly_one_object_for_every_state_reader(
    world: dict[str, Any], node: Path
) -> None:
    for args in (
        ("node", "status", node),
        ("node", "check", node),
        ("node", "history", node),
        ("node", "verify", node),
        ("node", "update", node),
        ("release", "list", world["repo"]),
        ("release", "show", world["repo"], "--version", "1.1.0"),
        ("plugins", "list"),
    ):
        result = bhs(*args, "--json")
        assert isinstance(result.json(), dict)
        assert result.err == "", result


# -- keys ---------------------------------------------------------------------------------------------


def test_key_generate_prints_only_the_key_id_writes_0600_and_never_overwrites(
    tmp_path: Path,
) -> None:
    path = tmp_path / "holder"
    out = bhs("key", "generate", path).out
    assert out.strip() == out.strip().lower() and len(out.strip()) == 64
    assert out == out.strip() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "holder.pub").is_file()
    before = path.read_bytes(), (tmp_path / "holder.pub").read_bytes()
    bhs("key", "generate", path, expect=1)
    assert (path.read_bytes(), (tmp_path / "holder.pub").read_bytes()) == before
    # the .pub alone existing is a conflict as well, and a symlink is never followed
    (tmp_path / "other.pub").write_text("x")
    bhs("key", "generate", tmp_path / "other", expect=1)
    assert not (tmp_path / "other").exists()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    bhs("key", "generate", tmp_path / "link", expect=1)
    assert not (tmp_path / "target").exists()


def test_public_key_where_a_private_key_belongs_and_back_exit_2(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    repo = _copy(world["repo"], tmp_path / "repo")
    before = sorted(p.name for p in repo.rglob("*"))
    bhs("release", "sign", repo, "--version", "1.1.0", "--key", keys.pub("rel1"), expect=2)
    bhs("release", "publish", repo, "--version", "1.1.0", "--index-key", keys.pub("index"),
        expect=2)  # fmt: skip
    bhs("repo", "refresh", repo, "--index-key", keys.pub("index"), expect=2)
    bhs("release", "yank", repo, "--version", "1.0.0", "--index-key", keys.pub("index"),
        expect=2)  # fmt: skip
    bhs("repo", "rotate", repo, "--sign-with", keys.pub("root1"), "--sign-with",
        keys.pub("root2"), expect=2)  # fmt: skip
    bhs("repo", "rotate", repo, "--root-key", keys.key("root1"), "--sign-with",
        keys.key("root1"), "--sign-with", keys.key("root2"), expect=2)  # fmt: skip
    assert sorted(p.name for p in repo.rglob("*")) == before
    fresh = tmp_path / "fresh"
    bhs("repo", "init", fresh, "--root-key", keys.key("root1"), "--root-threshold", "1",
        "--release-key", keys.pub("rel1"), "--release-threshold", "1",
        "--index-key", keys.pub("index"), "--sign-with", keys.key("root1"), expect=2)  # fmt: skip
    bhs("repo", "init", fresh, "--root-key", keys.pub("root1"), "--root-threshold", "1",
        "--release-key", keys.pub("rel1"), "--release-threshold", "1",
        "--index-key", keys.pub("index"), "--sign-with", keys.pub("root1"), expect=2)  # fmt: skip
    assert not (fresh / "root.json").exists()


# -- repo ---------------------------------------------------------------------------------------------


def test_repo_rotate_below_the_old_or_the_new_threshold_writes_nothing(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    repo = _copy(world["repo"], tmp_path / "repo")
    new = make_keys(tmp_path / "new", ("new1", "new2"))

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}

    before = files()
    new_root = ["--root-key", new.pub("new1"), "--root-key", new.pub("new2")]
    # only the new keys: below the old threshold
    bhs("repo", "rotate", repo, *new_root, "--sign-with", new.key("new1"), "--sign-with",
        new.key("new2"), expect=3)  # fmt: skip
    # one old key and both new: still below the old threshold
    bhs("repo", "rotate", repo, *new_root, "--sign-with", keys.key("root1"), "--sign-with",
        new.key("new1"), "--sign-with", new.key("new2"), expect=3)  # fmt: skip
    # both old keys, one new: below the new threshold
    bhs("repo", "rotate", repo, *new_root, "--sign-with", keys.key("root1"), "--sign-with",
        keys.key("root2"), "--sign-with", new.key("new1"), expect=3)  # fmt: skip
    assert files() == before
    # all four: accepted, and a node follows the chain
    out = bhs_json("repo", "rotate", repo, *new_root, "--sign-with", keys.key("root1"),
                   "--sign-with", keys.key("root2"), "--sign-with", new.key("new1"),
                   "--sign-with", new.key("new2"))  # fmt: skip
    assert out["root_version"] == 2
    assert (repo / "2.root.json").read_bytes() == (repo / "root.json").read_bytes()
    node = tmp_path / "node"
    init_node(node, world["repo"] / "root.json", repo)  # trusts root v1
    assert bhs_json("node", "check", node)["root_version"] == 2
    assert status(node)["root_version"] == 2
    # a node can be initialised with the newest root directly
    init_node(tmp_path / "node2", repo / "root.json", repo)
    assert bhs_json("node", "update", tmp_path / "node2")["version"] == "1.1.0"


def test_repo_rotate_revoke_removes_the_key_and_keeps_other_roles(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    repo = _copy(world["repo"], tmp_path / "repo")
    old = json.loads((repo / "root.json").read_bytes())["signed"]
    revoked = keys.ids["rel3"]
    bhs("repo", "rotate", repo, "--revoke", revoked, "--sign-with", keys.key("root1"),
        "--sign-with", keys.key("root2"))  # fmt: skip
    new = json.loads((repo / "root.json").read_bytes())["signed"]
    assert new["version"] == old["version"] + 1
    assert revoked not in new["roles"]["release"]["keyids"]
    assert revoked not in new["keys"]
    assert new["roles"]["release"]["threshold"] == 2
    for role in ("root", "index"):
        assert new["roles"][role] == old["roles"][role]
    # the revoked holder can no longer sign
    release(repo, keys, "1.2.0", world["v1"], signers=(), publish=False)
    bhs("release", "sign", repo, "--version", "1.2.0", "--key", keys.key("rel3"), expect=3)
    # revoking below a role's threshold writes nothing
    before = (repo / "root.json").read_bytes()
    bhs("repo", "rotate", repo, "--revoke", keys.ids["rel2"], "--sign-with", keys.key("root1"),
        "--sign-with", keys.key("root2"), expect=3)  # fmt: skip
    assert (repo / "root.json").read_bytes() == before
    assert not (repo / "3.root.json").exists()


# -- release ----------------------------------------------------------------------------------------


def test_release_build_names_modes_and_existing_versions(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    repo = _copy(world["repo"], tmp_path / "repo")
    twin = tmp_path / "other" / "app"
    twin.parent.mkdir()
    twin.write_bytes(b"another app")
    bhs("release", "build", repo, "--version", "2.0.0", "--artifact", world["v1"],
        "--artifact", twin, expect=2)  # fmt: skip
    bhs("release", "build", repo, "--version", "1.1.0", "--artifact", twin, expect=1)
    release(repo, keys, "2.0.0", twin, publish=False)
    bhs("release", "build", repo, "--version", "2.0.0", "--artifact", twin, expect=1)
    shown = bhs_json("release", "show", repo, "--version", "1.0.0")
    text = json.dumps(shown)
    assert '"mode": 489' in text or "0o751" in text  # 0o751 == 489
    listed = bhs_json("release", "list", repo)["releases"]
    assert {r["version"] for r in listed} >= {"1.0.0", "1.1.0", "2.0.0"}


def test_release_sign_outside_the_role_exit_3_and_twice_is_a_no_op(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    repo = _copy(world["repo"], tmp_path / "repo")
    release(repo, keys, "1.2.0", world["v1"], signers=("rel1",), publish=False)
    draft = repo / ".bhsync" / "drafts" / "1.2.0" / "manifest.json"
    before = draft.read_bytes() if draft.exists() else None
    for outsider in ("root1", "index"):
        bhs("release", "sign", repo, "--version", "1.2.0", "--key", keys.key(outsider), expect=3)
    bhs("release", "sign", repo, "--version", "1.2.0", "--key", keys.key("rel1"))
    if before is not None:
        assert draft.read_bytes() == before
    bhs("release", "publish", repo, "--version", "1.2.0", "--index-key", keys.key("index"),
        expect=3)  # one holder signed twice is still one signature  # fmt: skip
    bhs("release", "sign", repo, "--version", "1.2.0", "--key", keys.key("rel2"))
    index = bhs_json("release", "publish", repo, "--version", "1.2.0", "--index-key",
                     keys.key("index"))  # fmt: skip
    index_bytes = (repo / "index.json").read_bytes()
    bhs("release", "publish", repo, "--version", "1.2.0", "--index-key", keys.key("index"),
        expect=1)  # fmt: skip
    assert (repo / "index.json").read_bytes() == index_bytes
    assert index["version"] == "1.2.0"


# -- serve --------------------------------------------------------------------------------------------


def test_serve_defaults_to_port_8080_and_port_0_prints_its_url(world: dict[str, Any]) -> None:
    from blackhole_sync.cli.main import build_parser

    args = build_parser().parse_args(["serve", str(world["repo"])])
    assert args.port == 8080
    assert args.host == "127.0.0.1"
    import urllib.request

    with serve(world["repo"]) as server:
        with urllib.request.urlopen(server.url + "/root.json", timeout=scaled(10)) as response:
            assert response.read() == (world["repo"] / "root.json").read_bytes()
        # drafts and private material are never served
        for private in ("/.bhsync/config.json", "/.bhsync/drafts/", "/../keys/index"):
            try:
                urllib.request.urlopen(server.url + private, timeout=scaled(10)).close()
            except urllib.error.HTTPError as exc:
                exc.close()
                assert exc.code in (403, 404)
            else:
                raise AssertionError(f"{private} was served")
        assert server.stop() == 0


# -- node init / check ------------------------------------------------------------------------------


def test_node_init_twice_exit_1_and_a_forged_root_exit_3(
    world: dict[str, Any], tmp_path: Path
) -> None:
    node = tmp_path / "node"
    init_node(node, world["repo"] / "root.json", world["repo"])
    config = (node / "config.toml").read_bytes()
    bhs("node", "init", node, "--trust", world["repo"] / "root.json", "--source",
        world["repo"], expect=1)  # fmt: skip
    assert (node / "config.toml").read_bytes() == config
    forged = json.loads((world["repo"] / "root.json").read_bytes())
    forged["signed"]["expires"] = "2099-01-01T00:00:00Z"
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    bhs("node", "init", tmp_path / "n2", "--trust", tmp_path / "forged.json", "--source",
        world["repo"], expect=3)  # fmt: skip
    assert not (tmp_path / "n2" / "state.db").exists()
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    bhs("node", "init", tmp_path / "n3", "--trust", garbage, "--source", world["repo"],
        expect=3)  # fmt: skip


def test_node_init_takes_file_urls_and_paths_and_touches_no_network(
    world: dict[str, Any], tmp_path: Path
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        node = tmp_path / "node"
        init_node(node, world["repo"] / "root.json", f"http://127.0.0.1:{port}/repo",
                  world["repo"].as_uri())  # fmt: skip
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    # with the HTTP source dead, the file:// source serves
    assert bhs_json("node", "update", node)["version"] == "1.1.0"
    relative = tmp_path / "rel"
    os.symlink(world["repo"], tmp_path / "repo-link")
    run(
        [BIN, "node", "init", str(relative), "--trust", str(world["repo"] / "root.json"),
         "--source", "repo-link"], cwd=tmp_path, check=True, env=ENV, timeout=60,
    )  # fmt: skip
    assert bhs_json("node", "update", relative, "--version", "1.0.0")["version"] == "1.0.0"


def test_node_check_exits_0_with_and_without_an_update_and_saves_metadata(
    world: dict[str, Any], tmp_path: Path
) -> None:
    node = tmp_path / "node"
    init_node(node, world["repo"] / "root.json", world["repo"])
    assert not (node / "trust" / "index.json").exists()
    checked = bhs_json("node", "check", node)
    assert checked["update_available"] is True
    assert checked["available"][0]["version"] == "1.1.0"
    assert (node / "trust" / "index.json").read_bytes() == (
        world["repo"] / "index.json"
    ).read_bytes()
    assert status(node)["index_version"] is not None
    assert status(node)["current_version"] is None
    bhs("node", "update", node)
    assert bhs_json("node", "check", node)["update_available"] is False
    bhs("node", "check", node)  # the text form, too


# -- node update --------------------------------------------------------------------------------------


def test_node_update_to_a_version_below_the_current_one_exit_3(node: Path) -> None:
    before = snapshot(node)
    bhs("node", "update", node, "--version", "1.0.0", expect=3)
    bhs("node", "update", node, "--version", "0.0.1", expect=3)
    assert snapshot(node) == before
    assert bhs_json("node", "update", node, "--version", "1.1.0")["version"] == "1.1.0"


def test_node_update_with_unreachable_sources_exit_1(world: dict[str, Any], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connection refused
    node = tmp_path / "node"
    gone = tmp_path / "unmounted"  # a path source must exist at init; it vanished since
    gone.mkdir()
    init_node(node, world["repo"] / "root.json", f"http://127.0.0.1:{port}", gone)
    gone.rmdir()
    before = snapshot(node)
    bhs("node", "update", node, expect=1)
    bhs("node", "check", node, expect=1)
    assert snapshot(node) == before


def test_failed_health_check_rolls_back_and_exits_1(
    world: dict[str, Any], node: Path, tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    repo = _copy(world["repo"], tmp_path / "repo")
    (node / "config.toml").write_text(
        (node / "config.toml").read_text().replace(str(world["repo"]), str(repo))
    )
    v3 = small_change(world["v2"], tmp_path / "v3" / "app", at=10)
    # the publisher's sandbox would run the health command too: skip it for this broken one
    release(repo, keys, "1.2.0", v3, build=["--no-sandbox", "--health", "false"])
    result = bhs("node", "update", node, "--json", expect=1)
    assert "health" in result.err.lower()
    after = status(node)
    assert after["current_version"] == "1.1.0"
    assert (node / "current" / "app").read_bytes() == world["v2"].read_bytes()
    history = bhs_json("node", "history", node)["history"]
    assert any(h.get("to_version") == "1.2.0" and h.get("error") for h in history) or any(
        "1.2.0" in json.dumps(h) for h in history
    )
    assert "1.2.0" in after["bad_versions"] or "1.2.0" not in after["installed_versions"]


def test_second_command_on_a_locked_node_waits_briefly_then_exits_1(node: Path) -> None:
    with spawn(
        [sys.executable, "-c",
         "import sys, time\n"
         "from blackhole_sync.node.store import NodeStore\n"
         "store = NodeStore.open(sys.argv[1])\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n", str(node)],
        stdin=subprocess.PIPE, stderr=None,
    ) as holder:  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = bhs("node", "update", node, "--version", "1.1.0", expect=1)
        waited = time.monotonic() - started
        assert 0.5 <= waited <= scaled(30), waited  # it waited, then gave up (not a speed test)
        assert "lock" in result.err.lower() or "busy" in result.err.lower()
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=scaled(10))
    assert status(node)["current_version"] == "1.1.0"


# -- prune, verify, yank, plugins ---------------------------------------------------------------------


def test_node_prune_keep_1_leaves_only_the_current_version(node: Path) -> None:
    assert status(node)["installed_versions"] == ["1.0.0", "1.1.0"]
    bhs("node", "prune", node, "--keep", "1")
    after = status(node)
    assert after["installed_versions"] == ["1.1.0"]
    assert after["current_version"] == "1.1.0"
    assert sorted(p.name for p in (node / "versions").iterdir()) == ["1.1.0"]
    bhs("node", "rollback", node, expect=None)  # nothing to go back to: a clean failure
    assert status(node)["current_version"] == "1.1.0"


@pytest.mark.parametrize("where", ["current", "previous"])
def test_node_verify_reports_a_tampered_installed_file(node: Path, where: str) -> None:
    assert bhs_json("node", "verify", node)["ok"] is True
    version = "1.1.0" if where == "current" else "1.0.0"
    target = node / "versions" / version / "app"
    target.chmod(0o755)
    data = bytearray(target.read_bytes())
    data[100] ^= 1
    target.write_bytes(bytes(data))
    result = bhs("node", "verify", node, "--json", expect=None)
    assert result.code != 0
    report = result.json()
    assert report["ok"] is False
    assert "app" in json.dumps(report)


def test_yanked_release_is_not_installed(world: dict[str, Any], tmp_path: Path) -> None:
    keys: Keys = world["keys"]
    repo = _copy(world["repo"], tmp_path / "repo")
    bhs("release", "yank", repo, "--version", "1.1.0", "--index-key", keys.key("index"))
    states = {r["version"]: r["state"] for r in bhs_json("release", "list", repo)["releases"]}
    assert states["1.1.0"] != "published"
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo)
    assert bhs_json("node", "update", node)["version"] == "1.0.0"
    bhs("node", "update", node, "--version", "1.1.0", expect=None)
    assert status(node)["current_version"] == "1.0.0"
    assert bhs_json("node", "check", node)["update_available"] is False


def test_plugins_list_shows_the_http_plugin_and_the_local_transport() -> None:
    listed = bhs_json("plugins", "list")
    text = json.dumps(listed)
    assert "http" in text
    transports = {t["name"]: t for t in listed["transports"]}
    assert any("file" in t["schemes"] for t in transports.values())
    assert any("http" in t["schemes"] for t in transports.values())
    assert listed["failed"] == []
