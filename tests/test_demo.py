"""The main job's demo, whole, as a user runs it: ``blackhole-sync demo --nodes 5 --json``.

An origin and five node agents in their own processes on 127.0.0.1 (gossip, BitTorrent, IPFS).
The last stdout line is one JSON object: every step of the story must have happened, the
origin's own counters must show at most two copies of each artifact it sent, the returning node
must have fetched over IPFS, and no process the demo started may outlive it. The plugins are
imported, not skipped: the main-job install has them all.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import blackhole_sync_bittorrent  # noqa: F401
import blackhole_sync_gossip  # noqa: F401
import blackhole_sync_ipfs  # noqa: F401
import pytest
import rich  # noqa: F401

from blackhole_sync.testing import run

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(900)]

STEPS = (
    "release_1_0_0_on_every_node",
    "origin_sent_about_one_copy",
    "rollout_1_1_0_in_phases",
    "bad_1_2_0_halted_and_rolled_back",
    "no_later_phase_installed_1_2_0",
    "protocol_active_same_height",
    "offline_node_caught_up",
)


def command() -> list[str]:
    exe = shutil.which("blackhole-sync", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "blackhole_sync.cli.main"]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def test_the_demo_plays_the_whole_story_with_five_nodes(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    out = run(
        [*command(), "demo", "--nodes", "5", "--json", "--workdir", str(work)],
        timeout=600,  # scaled by run()
        env={**os.environ, "COLUMNS": "120"},
        text=False,
    )
    stderr = out.stderr.decode(errors="replace")
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result["steps"].keys() >= set(STEPS), result["steps"]
    failed = [step for step in STEPS if result["steps"][step] is not True]
    assert not failed, f"{failed}\n{stderr[-4000:]}"
    assert result["ok"] is True
    assert out.returncode == 0, stderr[-4000:]
    figures = result["figures"]

    # the origin's own counters (HTTP bytes per blob + BitTorrent seed uploads): the swarm
    # carried the artifacts, the origin sent at most two copies of each
    artifacts = [b for b in figures["origin_blobs"] if b["kind"] == "artifact"]
    first = [b for b in artifacts if b["version"] == "1.0.0"]
    assert first and first[0]["bittorrent"] > 0, figures["origin_blobs"]
    for blob in artifacts:
        assert blob["http"] + blob["bittorrent"] <= 2 * blob["length"], blob
    assert figures["peer_bytes"] > 0
    # the returning node (no BitTorrent, peers first) took its releases over IPFS from the
    # other nodes' embedded Kubo nodes
    assert figures["offline_ipfs_bytes"] > 0, figures["offline_bytes_by_source"]

    # one activation height on every online node, the one the proposal named
    heights = figures["activation_heights"]
    assert len(heights) == 4 and set(heights.values()) == {figures["activation_height"]}
    # the coverage series ends with all five nodes on the protocol release
    assert figures["coverage"][-1]["versions"] == {"2.0.0": 5}
    assert figures["rollbacks"] >= 1 and figures["votes"] == 4

    # every process the demo started is gone
    assert processes_mentioning(str(work)) == []
