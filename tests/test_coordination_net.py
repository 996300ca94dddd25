"""Network coordination across real processes over the gossip plugin (libp2p GossipSub on
127.0.0.1): an origin (``blackhole-sync serve``) and seven node agents (``node run``, each in
its own process with the test chain's height: ``coord_agent.py``).

Five agents are the validator set and run protocols [1, 2]; four of them vote for the
protocol release (80 % >= the proposal's 75 %). They lock it in at the end of the signalling
window and switch ``current`` when the chain reaches the activation height -- the same height
on every node, also on a sixth node that starts only after the lock-in (it learns it from the
certificate) -- and the seventh node, which runs protocol [9] only, is refused at every
handshake: its status reaches nobody and nobody's reaches it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from coord_world import BLOCK, CoordWorld, current

from blackhole_sync.codecs import libp2p_peer_id, load_private_key, write_key_pair
from blackhole_sync.testing import run as run_process
from blackhole_sync.testing.timeouts import scaled

pytest.importorskip("blackhole_sync_gossip")

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(600)]

HERE = Path(__file__).parent
AGENT = HERE / "coord_agent.py"
GOSSIP = {"dial_backoff_initial": 0.3, "dial_backoff_max": 2.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


class Proc:
    """A long-running process whose output lines are kept in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def cli(*args: str) -> Any:
    out = run_process(
        [sys.executable, "-m", "blackhole_sync.cli.main", *args], timeout=120, text=False
    )  # the timeout is scaled by run_process
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout) if "--json" in args else out.stdout.decode()


def configure(node: Path, port: int, bootstrap: list[str], protocols: list[int]) -> None:
    text = (node / "config.toml").read_text()
    text = text.replace("loopback_only = false", "loopback_only = true")
    text = text.replace("\nblock = []", '\nblock = ["ipfs", "bittorrent"]')
    text = text.replace("protocol_versions = []", f"protocol_versions = {protocols}")
    text += "\n[gossip]\n" + f'listen = "/ip4/127.0.0.1/tcp/{port}"\n'
    text += f"bootstrap = {json.dumps(bootstrap)}\n"
    text += "".join(f"{k} = {v}\n" for k, v in GOSSIP.items())
    (node / "config.toml").write_text(text)


def peer_id(node: Path) -> str:
    return libp2p_peer_id(load_private_key(node / "identity.key").public_key)


def tracker(node: Path, pid: str) -> dict[str, Any]:
    import sqlite3

    with sqlite3.connect(node / "state.db", timeout=30) as conn:
        row = conn.execute(
            "SELECT value FROM meta WHERE key=?", (f"coordination:tracker:{pid}:1",)
        ).fetchone()
    return {} if row is None else dict(json.loads(row[0]))


def peers_seen(node: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(node / "state.db", timeout=30) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key='coordination:view'").fetchone()
    return set() if row is None else set(json.loads(row[0])["peers"])


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    running: list[Proc] = []
    yield running
    for proc in running:
        proc.stop()


def test_agents_lock_a_protocol_in_activate_it_at_one_height_and_refuse_an_incompatible_fork(
    tmp_path: Path, procs: list[Proc]
) -> None:
    world = CoordWorld(tmp_path)
    key_path = tmp_path / "index.key"
    write_key_pair(key_path, world.key)
    world.publish("1.0.0")
    world.publish("2.0.0", update_type="protocol")
    origin_port = free_port()
    peer_config = tmp_path / "origin-peers.toml"
    peer_config.write_text(
        '[plugins]\nblock = ["ipfs", "bittorrent"]\n\n[gossip]\n'
        f'listen = "/ip4/127.0.0.1/tcp/{origin_port}"\n'
    )
    origin = Proc(
        [sys.executable, "-m", "blackhole_sync.cli.main", "serve", str(world.repo.path),
         "--port", "0", "--index-key", str(key_path), "--loopback-only",
         "--peer-config", str(peer_config)],
        tmp_path / "origin.log",
    )  # fmt: skip
    procs.append(origin)
    assert wait_until(lambda: any(ln.startswith("peer gossip ") for ln in origin.lines()), 120)
    url = next(ln for ln in origin.lines() if ln.startswith("http://"))
    origin_addr = next(ln for ln in origin.lines() if ln.startswith("peer gossip ")).split()[2]

    names = ["v0", "v1", "v2", "v3", "v4", "late", "fork"]
    nodes: dict[str, Path] = {}
    addrs: list[str] = []
    for name in names:
        node = world.node(name, check_interval="3600")
        (node / "config.toml").write_text(
            (node / "config.toml").read_text().replace(str(world.repo.path), url)
        )
        port = free_port()
        compatible = name != "fork"
        # the fork dials compatible nodes only (the origin relays for anyone of its network)
        boot = [origin_addr, *addrs[-2:]] if compatible else addrs[:3]
        configure(node, port, boot, [1, 2] if compatible else [9])
        nodes[name] = node
        if compatible:
            addrs.append(f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id(node)}")
    validators = [nodes[n] for n in names[:5]]
    world.validators(validators)
    world.repo.refresh(world.key)
    t0 = time.time()
    for name in names:
        if name != "late":
            procs.append(Proc([sys.executable, str(AGENT), str(nodes[name]), str(t0)],
                              tmp_path / f"{name}.log"))  # fmt: skip
    compatible = [nodes[n] for n in names[:5]]
    assert wait_until(lambda: all(current(n) == "1.0.0" for n in compatible), 180)
    # the mesh carries everyone's signed status (each node's network view)
    ids = {n: load_private_key(n / "identity.key").public_key.hex for n in nodes.values()}
    assert wait_until(
        lambda: all({ids[m] for m in compatible if m != n} <= peers_seen(n) for n in compatible),
        180,
    ), {n.name: len(peers_seen(n)) for n in compatible}

    # governance proposes 2.0.0; four of five validators vote for it
    height_now = int((time.time() - t0) / BLOCK)
    activation = height_now + 100  # ~200 s: the window (40 s), then time for the late node
    proposal = world.proposal("2.0.0", timeout=40, grace=60, height=activation)
    for node in validators[:4]:
        assert cli("node", "vote", str(node), "--proposal", proposal.id, "--json")["support"]
    # a node that missed every vote starts once the window has ended: it adopts a certificate
    time.sleep(max(0.0, (proposal.timeout - dt.datetime.now(dt.UTC)).total_seconds() + 1))
    procs.append(Proc([sys.executable, str(AGENT), str(nodes["late"]), str(t0)],
                      tmp_path / "late.log"))  # fmt: skip
    assert wait_until(lambda: all(tracker(n, proposal.id).get("locked_in_by") for n in compatible),
                      180), {n.name: tracker(n, proposal.id) for n in compatible}  # fmt: skip
    assert all(current(n) == "1.0.0" for n in compatible)  # locked in, not active yet
    status = cli("node", "status", str(validators[4]), "--json")
    [pending] = status["coordination"]["pending_activations"]
    assert pending["height"] == activation
    everyone = [*compatible, nodes["late"]]
    assert wait_until(lambda: all(current(n) == "2.0.0" for n in everyone), 300), {
        # the ones that did not switch: what they run and their agent's last words
        n.name: (current(n), (tmp_path / f"{n.name}.log").read_text(errors="replace")[-1500:])
        for n in everyone
        if current(n) != "2.0.0"
    }
    for node in everyone:
        assert tracker(node, proposal.id)["active_height"] == activation, node.name
    assert tracker(nodes["late"], proposal.id)["locked_in_by"] == "certificate"
    # the incompatible fork was refused at every handshake: no status either way
    fork = nodes["fork"]
    assert ids[fork] not in set().union(*(peers_seen(n) for n in compatible))
    assert not {ids[n] for n in compatible} & peers_seen(fork)
    print(f"\nactivated at height {activation}; {dt.datetime.now(dt.UTC):%H:%M:%S}")
