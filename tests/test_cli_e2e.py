"""End to end through the command line, as a release engineer and an operator run it.

Keys for a 2-of-2 root, a 2-of-3 release role and an index key; a repository; release 1.0.0
built, signed by two holders separately, published and served over HTTP by
``blackhole-sync serve``; a node initialised against the served URL and updated; 1.1.0 (a small
change) published with a delta and installed by patch; status, history and rollback.
"""

from __future__ import annotations

from pathlib import Path

from cli_helpers import (
    bhs,
    bhs_json,
    init_node,
    init_repo,
    make_keys,
    release,
    serve,
    small_change,
    status,
    write_artifact,
)

ARTIFACT_SIZE = 2_000_000


def test_release_published_served_installed_patched_and_rolled_back(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    assert all(len(k) == 64 for k in keys.ids.values())
    repo = tmp_path / "repo"
    init_repo(repo, keys)
    assert (repo / "root.json").is_file()

    v1 = write_artifact(tmp_path / "v1" / "blackhole-node", ARTIFACT_SIZE, mode=0o750)
    built = release(repo, keys, "1.0.0", v1)
    assert built["artifacts"][0]["name"] == "blackhole-node"

    with serve(repo) as server:
        node = tmp_path / "node"
        init = init_node(node, repo / "root.json", server.url)
        before = status(node)
        assert before["current_version"] is None
        assert before["installed_versions"] == []
        assert before["node_public_key"] == init["node_public_key"]

        first = bhs_json("node", "update", node)
        assert first["version"] == "1.0.0"
        assert first["method"] == "full"
        assert first["bytes_fetched"] >= ARTIFACT_SIZE
        installed = node / "current" / "blackhole-node"
        assert installed.read_bytes() == v1.read_bytes()
        assert installed.stat().st_mode & 0o777 == 0o750

        # a small change, with a delta from 1.0.0, signed by a different pair of holders
        v2 = small_change(v1, tmp_path / "v2" / "blackhole-node")
        built = release(repo, keys, "1.1.0", v2, build=["--delta-from", "1.0.0"],
                        signers=("rel3", "rel1"))  # fmt: skip
        assert [d["from_version"] for d in built["deltas"]] == ["1.0.0"]

        assert bhs_json("node", "check", node)["update_available"] is True
        patched = bhs_json("node", "update", node)
        assert patched["version"] == "1.1.0"
        assert patched["method"] == "delta"
        assert 0 < patched["bytes_fetched"] < ARTIFACT_SIZE // 50, patched
        assert installed.read_bytes() == v2.read_bytes()
        assert installed.stat().st_mode & 0o777 == 0o750

        again = bhs_json("node", "update", node)  # already up to date: exit 0
        assert again["version"] == "1.1.0"
        assert again["bytes_fetched"] == 0

    after = status(node)
    assert after["current_version"] == "1.1.0"
    assert after["installed_versions"] == ["1.0.0", "1.1.0"]
    assert after["node_public_key"] == init["node_public_key"]
    assert len(after["node_public_key"]) == 64

    history = bhs_json("node", "history", node)
    assert set(history) == {"history"}
    installs = [h for h in history["history"] if h.get("to_version") in ("1.0.0", "1.1.0")]
    assert [(h["to_version"], h["method"]) for h in installs] == [
        ("1.0.0", "full"),
        ("1.1.0", "delta"),
    ]

    # rollback needs no network: the server is gone
    bhs("node", "rollback", node)
    assert status(node)["current_version"] == "1.0.0"
    assert installed.read_bytes() == v1.read_bytes()
    assert (node / "current").resolve() == (node / "versions" / "1.0.0").resolve()
    assert bhs_json("node", "history", node)["history"][-1]["to_version"] == "1.0.0"
