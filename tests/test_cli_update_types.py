"""Binary, configuration, schema and protocol releases through the command line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import bhs, bhs_json, init_node, init_repo, make_keys, release, write_artifact


@pytest.fixture
def repo(tmp_path: Path):  # type: ignore[no-untyped-def]
    keys = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    init_repo(repo, keys)
    release(repo, keys, "1.0.0", write_artifact(tmp_path / "v1" / "blackhole-node", 40_000))
    release(
        repo, keys, "1.1.0",
        build=["--type", "configuration", "--config", "network.max_peers=64",
               "--config", 'network.name="main net"', "--config", "network.relay=true",
               "--config-scope", "regional", "--config-selector", "eu"],
    )  # fmt: skip
    (tmp_path / "001-peers.sql").write_text("CREATE TABLE peers (id TEXT PRIMARY KEY);\n")
    (tmp_path / "002-score.sql").write_text("ALTER TABLE peers ADD COLUMN score INTEGER;\n")
    release(
        repo, keys, "1.2.0",
        build=["--type", "schema", "--migration", str(tmp_path / "001-peers.sql"),
               "--migration", str(tmp_path / "002-score.sql")],
    )  # fmt: skip
    release(
        repo, keys, "1.3.0",
        build=["--type", "protocol", "--protocol-version", "4", "--breaking",
               "--consensus-threshold", "7500"],
    )  # fmt: skip
    return repo


def test_typed_releases_keep_the_binary_and_apply_their_own_changes(
    tmp_path: Path, repo: Path
) -> None:
    shown = bhs_json("release", "show", repo, "--version", "1.3.0")["manifest"]
    assert shown["protocol"]["version"] == 4 and shown["protocol"]["consensus_threshold_bp"] == 7500
    assert shown["compatibility"]["protocol_versions"] == [4]
    schema = bhs_json("release", "show", repo, "--version", "1.2.0")["manifest"]
    assert [m["id"] for m in schema["migrations"]] == ["001-peers", "002-score"]

    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo, extra=["--region", "eu"])
    first = bhs_json("node", "update", node, "--version", "1.0.0")
    binary = (node / "current" / "blackhole-node").read_bytes()
    steps = [bhs_json("node", "update", node, "--version", v) for v in ("1.1.0", "1.2.0", "1.3.0")]
    assert first["bytes_fetched"] == 40_000
    assert [s["bytes_fetched"] for s in steps] == [0, 0, 0]  # the binary was already here
    assert (node / "current" / "blackhole-node").read_bytes() == binary
    config = json.loads((node / "data" / "config.json").read_text())
    assert config["network"] == {"max_peers": 64, "name": "main net", "relay": True}
    conn = sqlite3.connect(node / "data" / "node.db")
    assert [r[1] for r in conn.execute("PRAGMA table_info(peers)")] == ["id", "score"]
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    conn.close()
    assert bhs("node", "verify", node).code == 0


def test_a_node_that_skips_releases_ends_where_one_that_took_each_does(
    tmp_path: Path, repo: Path
) -> None:
    eu, elsewhere = tmp_path / "eu", tmp_path / "us"
    init_node(eu, repo / "root.json", repo, extra=["--region", "eu"])
    init_node(elsewhere, repo / "root.json", repo, extra=["--region", "us"])
    assert bhs_json("node", "update", eu)["current_version"] == "1.3.0"  # straight to the newest
    assert bhs_json("node", "update", elsewhere)["current_version"] == "1.3.0"
    assert json.loads((eu / "data" / "config.json").read_text())["network"]["max_peers"] == 64
    other = elsewhere / "data" / "config.json"  # nothing applied to region "us"
    assert not other.exists() or "max_peers" not in json.loads(other.read_text()).get("network", {})
    for node in (eu, elsewhere):
        conn = sqlite3.connect(node / "data" / "node.db")
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        conn.close()


def test_bad_typed_flags_are_usage_errors(tmp_path: Path, repo: Path) -> None:
    bhs(
        "release",
        "build",
        repo,
        "--version",
        "2.0.0",
        "--type",
        "configuration",
        "--config",
        "x=1.5",
        expect=2,
    )  # floats are not allowed in signed documents
    bhs(
        "release",
        "build",
        repo,
        "--version",
        "2.0.0",
        "--type",
        "configuration",
        "--config",
        "novalue",
        expect=2,
    )
    bhs(
        "release",
        "build",
        repo,
        "--version",
        "2.0.0",
        "--config",
        "a=1",
        "--config-scope",
        "regional",
        expect=2,
    )  # a regional change needs its region
    bhs("release", "build", repo, "--version", "2.0.0", expect=2)  # a binary release needs files
