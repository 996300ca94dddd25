"""Command-line behaviours beyond the bare contract: what an operator relies on."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
from cli_helpers import (
    BIN,
    ENV,
    bhs,
    bhs_json,
    init_node,
    init_repo,
    make_keys,
    release,
    serve,
    snapshot,
    status,
    write_artifact,
)

from blackhole_sync.testing import run, scaled, spawn


@pytest.fixture
def repo_with_two(tmp_path: Path):  # type: ignore[no-untyped-def]
    keys = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    init_repo(repo, keys)
    release(repo, keys, "1.0.0", write_artifact(tmp_path / "v1" / "app", 50_000, seed=1))
    release(repo, keys, "1.1.0", write_artifact(tmp_path / "v2" / "app", 50_000, seed=2))
    return keys, repo


def test_update_refused_for_replaced_artifact_leaves_trust_exactly_as_it_was(
    tmp_path: Path,
    repo_with_two,  # type: ignore[no-untyped-def]
) -> None:
    _, repo = repo_with_two
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo)
    bhs("node", "update", node, "--version", "1.0.0")
    before = snapshot(node)
    manifest = bhs_json("release", "show", repo, "--version", "1.1.0")["manifest"]
    blob = repo / "blobs" / manifest["artifacts"][0]["hashes"]["sha256"]
    blob.write_bytes(b"evil" * 12_500)  # same length, other bytes
    bhs("node", "update", node, expect=3)  # no `node check` first: nothing was saved yet
    assert snapshot(node) == before


def test_rollback_holds_the_version_left_until_an_explicit_update(
    tmp_path: Path,
    repo_with_two,  # type: ignore[no-untyped-def]
) -> None:
    _, repo = repo_with_two
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo)
    bhs("node", "update", node, "--version", "1.0.0")
    bhs("node", "update", node)
    assert status(node)["current_version"] == "1.1.0"
    bhs("node", "rollback", node)
    assert status(node)["held_versions"] == ["1.1.0"]
    bhs("node", "run", node, "--once")  # the automatic policy must not undo the rollback
    assert status(node)["current_version"] == "1.0.0"
    bhs("node", "update", node)  # the operator asks explicitly
    st = status(node)
    assert st["current_version"] == "1.1.0" and st["held_versions"] == []


def test_health_command_with_arguments_runs_split_like_a_shell(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    init_repo(repo, keys)
    app = write_artifact(tmp_path / "v1" / "app", 1000)
    health = "sh -c 'test -x ./app && echo \"healthy app\"'"
    built = release(repo, keys, "1.0.0", app, build=["--health", health])
    assert built["version"] == "1.0.0"
    shown = bhs_json("release", "show", repo, "--version", "1.0.0")["manifest"]
    assert shown["health"]["argv"] == ["sh", "-c", 'test -x ./app && echo "healthy app"']
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo)
    assert bhs_json("node", "update", node)["updated"] is True
    bad = release(
        repo, keys, "1.1.0", write_artifact(tmp_path / "v2" / "app", 1000, seed=3),
        build=["--health", "sh -c 'exit 1'", "--no-sandbox"],
    )  # fmt: skip
    assert bad["version"] == "1.1.0"
    bhs("node", "update", node, expect=1)  # failed health check: rolled back
    assert status(node)["current_version"] == "1.0.0"
    assert "1.1.0" in status(node)["bad_versions"]


def test_revoking_a_release_key_warns_about_releases_nodes_will_refuse(
    tmp_path: Path,
    repo_with_two,  # type: ignore[no-untyped-def]
) -> None:
    keys, repo = repo_with_two  # both releases are signed by rel1 and rel2
    result = bhs(
        "repo", "rotate", repo, "--revoke", keys.ids["rel2"], "--release-threshold", "2",
        "--release-key", keys.pub("rel1"), "--release-key", keys.pub("rel3"),
        "--sign-with", keys.key("root1"), "--sign-with", keys.key("root2"), "--json",
    )  # fmt: skip
    assert result.json()["unverifiable_releases"] == ["1.0.0", "1.1.0"]
    assert "warning: published release(s) 1.0.0, 1.1.0 no longer meet" in result.err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test PKI")
def test_node_updates_over_https_with_its_own_ca_and_refuses_without_it(
    tmp_path: Path,
    repo_with_two,  # type: ignore[no-untyped-def]
) -> None:
    _, repo = repo_with_two
    pki = tmp_path / "pki"
    pki.mkdir()
    run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(pki / "key.pem"), "-out", str(pki / "cert.pem")],
        check=True, timeout=120,
    )  # fmt: skip
    with serve(
        repo, "--tls-cert", str(pki / "cert.pem"), "--tls-key", str(pki / "key.pem")
    ) as origin:
        assert origin.url.startswith("https://127.0.0.1:")
        trusting, stranger = tmp_path / "trusting", tmp_path / "stranger"
        init_node(trusting, repo / "root.json", origin.url)
        init_node(stranger, repo / "root.json", origin.url)
        config = trusting / "config.toml"
        config.write_text(
            config.read_text().replace('ca_file = ""', f'ca_file = "{pki / "cert.pem"}"')
        )
        assert bhs_json("node", "update", trusting)["current_version"] == "1.1.0"
        refused = bhs("node", "update", stranger, expect=1)  # an unverifiable origin: unreachable
        assert "certificate" in refused.err


def test_node_serve_mirrors_a_node_for_its_neighbours(
    tmp_path: Path,
    repo_with_two,  # type: ignore[no-untyped-def]
) -> None:
    _, repo = repo_with_two
    alpha, beta = tmp_path / "alpha", tmp_path / "beta"
    with serve(repo) as origin:
        init_node(alpha, repo / "root.json", origin.url)
        bhs("node", "update", alpha)
    with serve(alpha, command=("node", "serve")) as mirror:
        init_node(beta, alpha / "trust" / "root.json", mirror.url)
        assert bhs_json("node", "update", beta)["current_version"] == "1.1.0"


def test_release_encrypted_to_one_node_by_its_status_hex_installs_only_there(
    tmp_path: Path,
) -> None:
    keys = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    init_repo(repo, keys)
    recipient, outsider = tmp_path / "recipient", tmp_path / "outsider"
    init_node(recipient, repo / "root.json", repo)
    init_node(outsider, repo / "root.json", repo)
    node_key = status(recipient)["node_public_key"]
    secret = write_artifact(tmp_path / "v1" / "secret-build", 30_000)
    release(repo, keys, "1.0.0", secret, build=["--encrypt-to", node_key])
    assert all(p.read_bytes() != secret.read_bytes() for p in (repo / "blobs").iterdir())
    assert bhs_json("node", "update", recipient)["current_version"] == "1.0.0"
    assert (recipient / "current" / "secret-build").read_bytes() == secret.read_bytes()
    refused = bhs("node", "update", outsider, expect=3)
    assert "recipient" in refused.err or "not one of them" in refused.err
    assert status(outsider)["current_version"] is None


def test_agent_stops_promptly_on_sigterm_during_a_download_and_changes_nothing(
    tmp_path: Path,
) -> None:
    keys = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    init_repo(repo, keys)
    release(repo, keys, "1.0.0", write_artifact(tmp_path / "v1" / "app", 4_000_000))
    node = tmp_path / "node"
    with serve(repo) as origin:
        init_node(node, repo / "root.json", origin.url)
        config = node / "config.toml"
        # the download's own stop is measured: no peer-to-peer stacks (stopping gossip,
        # BitTorrent and IPFS beside it took 5.5 s on a quiet 2-core machine)
        config.write_text(
            config.read_text()
            .replace("bandwidth_limit = 0", "bandwidth_limit = 100000")
            .replace("peer_to_peer = true", "peer_to_peer = false")
        )
        assert "peer_to_peer = false" in config.read_text()
        with spawn([BIN, "node", "run", str(node)], env=ENV) as agent:
            deadline = time.monotonic() + scaled(20)
            while time.monotonic() < deadline:  # wait until the download is under way
                # a blob download writes NODE/partial/<sha256> (resumable), then moves it
                staged = [p for p in (node / "partial").glob("*") if p.stat().st_size > 0]
                if staged:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the download never started")
            started = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=scaled(10)) == 0
            # promptly: 4 MB at 100 kB/s would take 40 s
            assert time.monotonic() - started < min(scaled(5), 30)
    st = status(node)
    assert st["current_version"] is None and st["installed_versions"] == []
    assert list((node / "staging").iterdir()) == []  # the next open emptied it
    assert [p.stat().st_size > 0 for p in (node / "partial").iterdir()] == [True]  # resumable
