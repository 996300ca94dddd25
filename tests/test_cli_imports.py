"""The command line imports lazily: building the parser loads none of the library's layers, and
a command loads only what it uses (``node status`` neither the release builder nor a network
stack). Each check runs the real entry point in a fresh interpreter and lists ``sys.modules``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli_helpers import loaded_by

from blackhole_sync.documents import PrivateKey
from blackhole_sync.testing import run

LAYERS = (
    "blackhole_sync.documents",
    "blackhole_sync.codecs",
    "blackhole_sync.fetch",
    "blackhole_sync.node",
    "blackhole_sync.release",
    "blackhole_sync.manager",
)

@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from blackhole_sync.release import Repository

    base = tmp_path_factory.mktemp("lazy")
    key = PrivateKey.generate()
    repo = Repository.init(
        base / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key, sign_with=[key],
    )  # fmt: skip
    node = base / "node"
    proc = run(
        [sys.executable, "-m", "blackhole_sync", "node", "init", str(node),
         "--trust", str(repo.root_path()), "--source", str(repo.path)],
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return node


def test_building_the_parser_loads_no_layer(tmp_path: Path) -> None:
    modules = loaded_by(tmp_path)
    assert not {m for m in modules for layer in LAYERS if m.startswith(layer)}
    assert "anyio" not in modules


def test_node_status_loads_neither_the_release_side_nor_a_network_stack(
    tmp_path: Path, node: Path
) -> None:
    modules = loaded_by(tmp_path, "node", "status", str(node), "--json")
    assert "blackhole_sync.manager" in modules  # the probe really ran the command
    assert not {m for m in modules if m.startswith("blackhole_sync.release")}
    assert not {m for m in modules if m.split(".")[0] in ("aiohttp", "blackhole_sync_http")}


def test_node_status_loads_no_delta_codec(tmp_path: Path, node: Path) -> None:
    modules = loaded_by(tmp_path, "node", "status", str(node), "--json")
    assert "blackhole_sync.codecs.delta" not in modules
    assert "bsdiff4" not in modules
