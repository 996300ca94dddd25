"""A node's agent (``node run``) in its own process, with the host's chain height.

``python coord_agent.py NODE T0``: the real agent with every installed plugin (the gossip
transport among them) plus the test chain's ``blackhole_sync_chain_height`` (one block every
``coord_world.BLOCK`` seconds since ``T0``: the same height in every process). SIGTERM stops it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from coord_world import HeightPlugin

from blackhole_sync.agent import run_agent
from blackhole_sync.fetch import make_plugin_manager
from blackhole_sync.node import NodeConfig, NodeLayout


def main() -> None:
    node, t0 = Path(sys.argv[1]), float(sys.argv[2])
    config = NodeConfig.from_file(NodeLayout(node).config)
    plugins = make_plugin_manager(load_entrypoints=True, block=config.plugins.block)
    plugins.register(HeightPlugin(t0))
    anyio.run(lambda: run_agent(node, plugins=plugins))


if __name__ == "__main__":
    main()
