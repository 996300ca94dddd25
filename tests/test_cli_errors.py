"""Errors as the command-line contract has them (ARCHITECTURE.md section 6, docs/cli.rst).

Exit statuses follow the contract whichever flag is at fault; with ``--json`` an error is the
one JSON object on stdout; ``node init --source`` takes any registered scheme and refuses the
rest with the plugin to install; every error is one ``blackhole-sync:`` line in words, without
Python class names. (``cli_helpers.bhs`` checks the JSON key sets of every run.)
"""

from __future__ import annotations

import importlib.metadata
import re
import socket
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
    write_artifact,
)

from blackhole_sync.cli.common import UsageError
from blackhole_sync.cli.main import error_kind, scrub
from blackhole_sync.errors import SignatureError

#: A Python class name in a message: ``FooError``, ``BarException``, ``KeyError``...
CLASS_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]*)*(?:Error|Exception|Warning)\b")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("errors")
    keys = make_keys(base / "keys")
    repo = base / "repo"
    init_repo(repo, keys)
    release(repo, keys, "1.0.0", write_artifact(base / "v1" / "app", 10_000))
    return {"base": base, "keys": keys, "repo": repo}


def _error(*args: Any, expect: int) -> dict[str, Any]:
    """Run with ``--json``; the one object on stdout is the error, and stderr says the same."""
    result = bhs(*args, "--json", expect=expect)
    error = result.json()["error"]
    assert set(error) == {"kind", "message", "exit"}
    assert error["exit"] == expect
    assert result.err.strip() == f"blackhole-sync: {error['message']}"
    return dict(error)


# -- --json errors ------------------------------------------------------------------------------


def test_with_json_every_kind_of_error_is_one_json_object_on_stdout(
    world: dict[str, Any], tmp_path: Path
) -> None:
    assert _error("node", "status", tmp_path / "nowhere", expect=1)["kind"] == "configuration"
    usage = _error("node", "prune", tmp_path, "--keep", "many", expect=2)
    assert usage["kind"] == "usage" and "--keep" in usage["message"]
    assert _error("no-such-group", expect=2)["kind"] == "usage"
    forged = tmp_path / "forged-root.json"
    forged.write_bytes(
        (world["repo"] / "root.json").read_bytes().replace(b'"version":1', b'"version":2')
    )
    refused = _error("node", "init", tmp_path / "n", "--trust", forged, "--source", world["repo"],
                     expect=3)  # fmt: skip
    assert refused["message"].startswith("refused: ") and refused["kind"] in ("signature", "format")
    missing = _error("release", "show", world["repo"], "--version", "9.9.9", expect=1)
    assert "9.9.9" in missing["message"]


def test_without_json_an_error_prints_nothing_on_stdout(tmp_path: Path) -> None:
    result = bhs("node", "status", tmp_path / "nowhere", expect=1)
    assert result.out == ""
    assert result.err.count("\n") == 1


# -- exit statuses whichever flag is at fault ------------------------------------------------------


def test_an_impossible_threshold_is_a_usage_error(world: dict[str, Any], tmp_path: Path) -> None:
    keys: Keys = world["keys"]
    result = bhs(
        "repo", "init", tmp_path / "r", "--root-key", keys.pub("root1"), "--root-threshold", "2",
        "--release-key", keys.pub("rel1"), "--release-threshold", "1",
        "--index-key", keys.pub("index"), "--sign-with", keys.key("root1"), expect=2,
    )  # fmt: skip
    assert "threshold" in result.err
    assert not (tmp_path / "r" / "root.json").exists()


@pytest.mark.parametrize("flag", ["--root-key", "--release-key", "--index-key", "--sign-with"])
def test_a_key_file_that_does_not_exist_is_exit_1_whichever_flag_named_it(
    world: dict[str, Any], tmp_path: Path, flag: str
) -> None:
    keys: Keys = world["keys"]
    args = {
        "--root-key": keys.pub("root1"),
        "--release-key": keys.pub("rel1"),
        "--index-key": keys.pub("index"),
        "--sign-with": keys.key("root1"),
    }
    args[flag] = tmp_path / "absent.key"
    error = _error(
        "repo", "init", tmp_path / "r", "--root-key", args["--root-key"], "--root-threshold", "1",
        "--release-key", args["--release-key"], "--release-threshold", "1",
        "--index-key", args["--index-key"], "--sign-with", args["--sign-with"], expect=1,
    )  # fmt: skip
    assert error["kind"] == "not_found" and "absent.key" in error["message"]


def test_missing_artifact_migration_and_trust_files_are_exit_1(
    world: dict[str, Any], tmp_path: Path
) -> None:
    repo = world["repo"]
    error = _error("release", "build", repo, "--version", "3.0.0", "--artifact",
                   tmp_path / "absent", expect=1)  # fmt: skip
    assert error["message"] == f"--artifact {tmp_path / 'absent'}: no such file"
    _error("release", "build", repo, "--version", "3.0.0", "--type", "schema",
           "--migration", tmp_path / "absent.sql", expect=1)  # fmt: skip
    _error("node", "init", tmp_path / "n", "--trust", tmp_path / "absent.json",
           "--source", repo, expect=1)  # fmt: skip


def test_a_public_key_passed_as_trust_is_a_usage_error_with_a_hint(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    error = _error("node", "init", tmp_path / "n", "--trust", keys.pub("root1"),
                   "--source", world["repo"], expect=2)  # fmt: skip
    assert "root.json" in error["message"] and "key" in error["message"]
    assert not (tmp_path / "n").exists()


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# -- node init --source -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "package"),
    [
        ("ipfs://bafyexample/repo", "blackhole-sync-ipfs"),
        ("magnet://x", "blackhole-sync-bittorrent"),
    ],
)
def test_an_unknown_source_scheme_is_exit_2_naming_the_plugin_to_install(
    world: dict[str, Any], tmp_path: Path, source: str, package: str
) -> None:
    if _installed(package):
        pytest.skip(f"{package} is installed here: its scheme is a registered one")
    error = _error("node", "init", tmp_path / "n", "--trust", world["repo"] / "root.json",
                   "--source", source, expect=2)  # fmt: skip
    assert package in error["message"]
    assert not (tmp_path / "n").exists()


def test_a_source_scheme_no_plugin_knows_is_exit_2(world: dict[str, Any], tmp_path: Path) -> None:
    error = _error("node", "init", tmp_path / "n", "--trust", world["repo"] / "root.json",
                   "--source", "gopher://example/repo", expect=2)  # fmt: skip
    assert "gopher" in error["message"] and "plugin" in error["message"]


@pytest.mark.parametrize("source", ["localhost:8080", "origin.example:80/repo", "[::1]:8080"])
def test_a_bare_host_and_port_is_exit_2_with_the_url_it_probably_means(
    world: dict[str, Any], tmp_path: Path, source: str
) -> None:
    error = _error("node", "init", tmp_path / "n", "--trust", world["repo"] / "root.json",
                   "--source", source, expect=2)  # fmt: skip
    assert f"did you mean http://{source}" in error["message"]


def test_a_source_path_must_exist(world: dict[str, Any], tmp_path: Path) -> None:
    root = world["repo"] / "root.json"
    error = _error("node", "init", tmp_path / "n", "--trust", root,
                   "--source", tmp_path / "no-such-repo", expect=1)  # fmt: skip
    assert error["kind"] == "not_found"
    _error("node", "init", tmp_path / "n", "--trust", root,
           "--source", f"file://{tmp_path}/no-such-repo", expect=1)  # fmt: skip
    assert not (tmp_path / "n").exists()


def test_registered_schemes_and_paths_are_taken_without_network_access(
    world: dict[str, Any], tmp_path: Path
) -> None:
    with socket.socket() as listener:  # a port nothing answers on: init must not connect
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    init_node(tmp_path / "n", world["repo"] / "root.json", f"http://127.0.0.1:{port}",
              f"https://127.0.0.1:{port}/repo", world["repo"], f"file://{world['repo']}")  # fmt: skip
    config = (tmp_path / "n" / "config.toml").read_text()
    assert f"http://127.0.0.1:{port}" in config and str(world["repo"]) in config


# -- one prefix, in words -----------------------------------------------------------------------------


def test_errors_have_one_prefix_and_no_python_class_names(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    forged = tmp_path / "forged.json"
    forged.write_text('{"signed": {"_type": "root"}, "signatures": [}')
    failures = [
        bhs("node", "status", tmp_path / "nowhere", expect=1),
        bhs("node", "init", tmp_path / "n", "--trust", forged, "--source", world["repo"],
            expect=3),
        bhs("node", "init", tmp_path / "n", "--trust", keys.pub("root1"), "--source",
            world["repo"], expect=2),
        bhs("release", "sign", world["repo"], "--version", "1.0.0", "--key", keys.pub("rel1"),
            expect=2),
        bhs("release", "publish", world["repo"], "--version", "1.0.0", "--index-key",
            keys.key("index"), expect=1),
        bhs("serve", world["repo"], "--port", "http", expect=2),
        bhs("node", "prune", tmp_path, "--keep", "0", expect=2),
        bhs("key", "generate", keys.key("root1"), expect=1),
    ]  # fmt: skip
    for result in failures:
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, str(result)
        assert lines[0].count("blackhole-sync:") == 1, str(result)
        assert not CLASS_NAME.search(lines[0]), f"a class name in the message\n{result}"


def test_class_names_from_lower_layers_are_turned_into_words() -> None:
    assert scrub("http://x/: ClientConnectorError: Cannot connect to host") == (
        "http://x/: Cannot connect to host"
    )
    assert scrub("TimeoutError") == "timeout error"
    assert scrub("fetch failed: builtins.ConnectionRefusedError") == (
        "fetch failed: connection refused error"
    )
    assert scrub("  two\nlines  ") == "two lines"
    assert error_kind(UsageError("x")) == "usage"
    assert error_kind(SignatureError("x")) == "signature"
    assert error_kind(RuntimeError("x")) == "internal"


# -- history: errors only --------------------------------------------------------------------------


def test_history_error_holds_only_errors_and_a_metric_s_source_is_the_source_url(
    world: dict[str, Any], tmp_path: Path
) -> None:
    keys: Keys = world["keys"]
    repo = tmp_path / "repo"
    init_repo(repo, keys)
    release(repo, keys, "1.0.0", write_artifact(tmp_path / "v1" / "app", 10_000))
    release(repo, keys, "1.1.0", write_artifact(tmp_path / "v2" / "app", 10_000, seed=2))
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo)
    bhs("node", "update", node, "--version", "1.0.0")
    bhs("node", "update", node)
    artifacts = bhs_json("node", "status", node)["metrics"]["download"]["artifacts"]
    assert artifacts, "the last update fetched something"
    for artifact in artifacts:  # the URL of the source that delivered it, not a hash
        assert artifact["source"].rstrip("/") == repo.as_uri(), artifact
    bhs("node", "prune", node, "--keep", "1")
    history = bhs_json("node", "history", node)["history"]
    assert [h["action"] for h in history] == ["install", "install", "prune"]
    assert all(h["error"] is None for h in history), history  # nothing failed
    assert "1.0.0" in history[-1]["note"]  # what the prune removed: a remark, not an error
