"""Attacks on a node and a repository through the command line: each one exit 3, nothing changed.

For every refusal the node's ``status --json`` and its ``versions/``, ``current`` and
``trust/`` are compared before and after.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import time
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
    serve,
    small_change,
    snapshot,
    status,
    write_artifact,
)

from blackhole_sync.codecs import load_private_key
from blackhole_sync.documents import Envelope
from blackhole_sync.documents.signing import PrivateKey


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Keys and a repository with 1.0.0 published (never modified: tests copy it)."""
    base = tmp_path_factory.mktemp("refusals")
    keys = make_keys(base / "keys")
    repo = base / "repo"
    init_repo(repo, keys)
    v1 = write_artifact(base / "v1" / "app", 300_000)
    release(repo, keys, "1.0.0", v1)
    v2 = small_change(v1, base / "v2" / "app")
    return {"keys": keys, "repo": repo, "v1": v1, "v2": v2}


def _copy_repo(world: dict[str, Any], tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(world["repo"], repo, symlinks=True)
    return repo


def _node_on_1_0_0(repo: Path, tmp_path: Path, source: str | None = None) -> Path:
    node = tmp_path / "node"
    init_node(node, repo / "root.json", source or repo)
    assert bhs_json("node", "update", node, "--version", "1.0.0")["version"] == "1.0.0"
    return node


def _refused(node: Path, *args: str) -> str:
    """Run ``node ARGS NODE`` expecting exit 3 and no change at all; returns stderr."""
    before = snapshot(node)
    result = bhs("node", args[0], node, *args[1:], expect=3)
    assert snapshot(node) == before
    assert not any((node / "staging").iterdir()), "staging left behind"
    return result.err


def _sign_index(repo: Path, keys: Keys, change: Any) -> None:
    """Re-sign REPO/index.json (version + 1) after ``change(signed)``, with the real index key."""
    signed = json.loads((repo / "index.json").read_bytes())["signed"]
    signed["version"] += 1
    change(signed)
    env = Envelope.sign(signed, [load_private_key(keys.key("index"))])
    (repo / "index.json").write_bytes(env.raw)


# -- threshold ----------------------------------------------------------------------------------


def test_release_signed_by_one_of_three_keys_is_not_published(
    world: dict[str, Any], tmp_path: Path
) -> None:
    repo = _copy_repo(world, tmp_path)
    keys: Keys = world["keys"]
    index_before = (repo / "index.json").read_bytes()
    release(repo, keys, "1.1.0", world["v2"], signers=("rel2",), publish=False)
    err = bhs("release", "publish", repo, "--version", "1.1.0", "--index-key",
              keys.key("index"), expect=3).err  # fmt: skip
    assert "1 of the required 2" in err or "threshold" in err
    assert (repo / "index.json").read_bytes() == index_before
    assert not (repo / "manifests" / "1.1.0.json").exists()
    listed = {r["version"]: r for r in bhs_json("release", "list", repo)["releases"]}
    assert listed["1.1.0"]["state"] != "published"


def test_under_signed_manifest_behind_a_valid_index_is_refused_by_the_node(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """A hand-crafted repository: a 1-of-3 manifest listed by a correctly signed index."""
    repo = _copy_repo(world, tmp_path)
    keys: Keys = world["keys"]
    node = _node_on_1_0_0(repo, tmp_path)
    release(repo, keys, "1.1.0", world["v2"], signers=("rel1",), publish=False)
    draft = repo / ".bhsync" / "drafts" / "1.1.0"
    manifest = (draft / "manifest.json").read_bytes()
    assert len(json.loads(manifest)["signatures"]) == 1
    (repo / "manifests" / "1.1.0.json").write_bytes(manifest)
    for blob in (draft / "blobs").iterdir():
        shutil.copy(blob, repo / "blobs" / blob.name)

    def list_it(signed: dict[str, Any]) -> None:
        signed["channels"]["stable"]["releases"]["1.1.0"] = {
            "hashes": {"sha256": hashlib.sha256(manifest).hexdigest()},
            "length": len(manifest),
        }

    _sign_index(repo, keys, list_it)
    err = _refused(node, "update")
    assert "signature" in err
    _refused(node, "update", "--version", "1.1.0")
    assert (node / "current" / "app").read_bytes() == world["v1"].read_bytes()


# -- bytes on the wire ------------------------------------------------------------------------------


def test_served_artifact_replaced_by_other_bytes_is_refused(
    world: dict[str, Any], tmp_path: Path
) -> None:
    repo = _copy_repo(world, tmp_path)
    keys: Keys = world["keys"]
    built = release(repo, keys, "1.1.0", world["v2"])
    with serve(repo) as server:
        node = _node_on_1_0_0(repo, tmp_path, server.url)
        bhs("node", "check", node)  # the signed metadata is genuine; only the bytes are not
        # replace the artifact and every patch with other bytes of the same length
        v1_sha = hashlib.sha256(world["v1"].read_bytes()).hexdigest()
        for blob in (repo / "blobs").iterdir():  # the 1.1.0 artifact and its patch
            if blob.name != v1_sha:
                blob.write_bytes(bytes(b ^ 0x5A for b in blob.read_bytes()))
        err = _refused(node, "update")
        assert "sha256" in err or "hash" in err
        _refused(node, "update", "--no-delta")
        # a shorter body is refused as well
        artifact = repo / "blobs" / built["artifacts"][0]["sha256"]
        artifact.write_bytes(artifact.read_bytes()[:1000])
        _refused(node, "update", "--no-delta")
    assert status(node)["current_version"] == "1.0.0"


# -- freshness ---------------------------------------------------------------------------------------


def test_older_index_served_after_a_newer_one_was_seen_is_refused(
    world: dict[str, Any], tmp_path: Path
) -> None:
    repo = _copy_repo(world, tmp_path)
    keys: Keys = world["keys"]
    old_index = (repo / "index.json").read_bytes()
    release(repo, keys, "1.1.0", world["v2"])
    with serve(repo) as server:
        node = tmp_path / "node"
        init_node(node, repo / "root.json", server.url)
        bhs("node", "check", node)  # sees index version 2
        (repo / "index.json").write_bytes(old_index)  # an attacker replays version 1
        _refused(node, "check")
        err = _refused(node, "update")
        assert "older" in err or "rollback" in err or "version" in err
    assert status(node)["current_version"] is None


def test_index_past_its_expiry_is_refused(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys", ("root1", "root2", "rel1", "rel2", "rel3", "index"))
    repo = tmp_path / "repo"
    init_repo(repo, keys, "--index-expires", "2")
    release(repo, keys, "1.0.0", write_artifact(tmp_path / "a" / "app", 1000))
    signed = json.loads((repo / "index.json").read_bytes())["signed"]
    expires = _dt.datetime.strptime(signed["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)
    assert expires - _dt.datetime.now(_dt.UTC) <= _dt.timedelta(seconds=3)  # publish reused it
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo.as_uri())  # a file:// source
    time.sleep(max(0.0, (expires - _dt.datetime.now(_dt.UTC)).total_seconds()) + 1.1)
    err = _refused(node, "update")
    assert "expire" in err
    _refused(node, "check")
    assert status(node)["installed_versions"] == []


def test_index_expired_while_installed_is_refused_then_repo_refresh_heals(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Crafted with the Python API: the index key re-signs with an expiry in the past."""
    from blackhole_sync.release import Repository

    repo = _copy_repo(world, tmp_path)
    keys: Keys = world["keys"]
    node = _node_on_1_0_0(repo, tmp_path)
    release(repo, keys, "1.1.0", world["v2"], publish=False)
    index_key = load_private_key(keys.key("index"))
    past = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=3)
    Repository.open(repo).publish_release("1.1.0", index_key, now=past)
    _refused(node, "update")
    bhs("repo", "refresh", repo, "--index-key", keys.key("index"))
    assert bhs_json("node", "update", node)["version"] == "1.1.0"


# -- root rotation --------------------------------------------------------------------------------


def _rotated_root(repo: Path, new_keys: list[PrivateKey], signers: list[PrivateKey]) -> bytes:
    signed = json.loads((repo / "root.json").read_bytes())["signed"]
    signed["version"] += 1
    for key in new_keys:
        signed["keys"][key.keyid] = {
            "keytype": "ed25519",
            "public": key.public_key.hex,
            "scheme": "ed25519",
        }
    signed["roles"]["root"] = {"keyids": sorted(k.keyid for k in new_keys), "threshold": 2}
    return Envelope.sign(signed, signers).raw


def test_root_rotated_without_the_old_keys_is_refused(
    world: dict[str, Any], tmp_path: Path
) -> None:
    repo = _copy_repo(world, tmp_path)
    keys: Keys = world["keys"]
    with serve(repo) as server:
        node = _node_on_1_0_0(repo, tmp_path, server.url)
        release(repo, keys, "1.1.0", world["v2"])  # a genuine update is waiting, too
        attacker = [PrivateKey.generate(), PrivateKey.generate()]
        forged = _rotated_root(repo, attacker, attacker)
        (repo / "2.root.json").write_bytes(forged)
        (repo / "root.json").write_bytes(forged)
        err = _refused(node, "update")
        assert "root" in err
        _refused(node, "check")
        # one old key plus the new ones is still below the old threshold
        half = _rotated_root(repo, attacker, [*attacker, load_private_key(keys.key("root1"))])
        (repo / "2.root.json").write_bytes(half)
        _refused(node, "check")
    assert status(node)["current_version"] == "1.0.0"
