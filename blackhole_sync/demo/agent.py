"""A demo node's agent: ``python -m blackhole_sync.demo.agent NODE T0 BLOCK``.

The real agent (``node run``) with every installed plugin its configuration allows, plus the
demo chain's height (the ``blackhole_sync_chain_height`` hook): one block every ``BLOCK``
seconds since the wall-clock time ``T0`` -- the same height in every process. SIGTERM stops it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ..fetch import hookimpl

__all__ = ["HeightPlugin", "main"]


class HeightPlugin:
    """The host's chain height: one block every ``block`` seconds since ``t0``."""

    def __init__(self, t0: float, block: float) -> None:
        self.t0 = t0
        self.block = block

    @hookimpl
    def blackhole_sync_chain_height(self, node_dir: Path) -> int:
        return int((time.time() - self.t0) / self.block)


def main(argv: list[str] | None = None) -> None:
    import anyio

    from ..agent import run_agent
    from ..fetch import make_plugin_manager
    from ..node import NodeConfig, NodeLayout

    args = sys.argv[1:] if argv is None else argv
    node, t0, block = Path(args[0]), float(args[1]), float(args[2])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("blackhole_sync.agent").setLevel(logging.INFO)  # "announcement of ..."
    config = NodeConfig.from_file(NodeLayout(node).config)
    plugins = make_plugin_manager(load_entrypoints=True, block=config.plugins.block)
    height = HeightPlugin(t0, block)
    plugins.register(height)
    anyio.run(lambda: run_agent(node, plugins=plugins))


if __name__ == "__main__":
    main()
