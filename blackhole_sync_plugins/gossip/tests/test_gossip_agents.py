"""The whole path through the real command line: an origin announces a new index over gossip
and every agent checks at once (its poll interval is an hour) and installs the release.

Processes: ``blackhole-sync serve REPO --index-key KEY --loopback-only --peer-config TOML``
(the origin: HTTP and gossip), four ``blackhole-sync node run NODE`` agents (config.toml:
``[network] loopback_only = true``, ``check_interval = 3600``, ``[gossip] listen/bootstrap``)
and one observer (``peer_node.py``: a node's peer side) that tells when every agent's signed
status reaches it, i.e. when the mesh carries everyone's messages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from corenet import PEER_NODE, World, gossip_table
from netutil import Network, free_port, wait_until

from blackhole_sync.codecs import libp2p_peer_id
from blackhole_sync.testing.timeouts import scaled

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(300)]

AGENTS = 4
GOSSIP = {"dial_backoff_initial": 0.3, "dial_backoff_max": 2.0}
CLI = [sys.executable, "-m", "blackhole_sync.cli.main"]


def cli() -> list[str]:
    exe = shutil.which("blackhole-sync", path=str(Path(sys.executable).parent))
    return [exe] if exe else CLI


class Proc:
    """A long-running command whose stdout lines are kept in a file."""

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
                self.proc.wait(timeout=scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def current(node: Path) -> str | None:
    link = node / "current"
    return link.resolve().name if link.is_symlink() else None


def status(node: Path) -> dict[str, object]:
    out = subprocess.run(
        [*cli(), "node", "status", str(node), "--json"],
        capture_output=True,
        check=True,
        timeout=scaled(60),
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = World(tmp_path_factory.mktemp("gossip-agents"))
    world.publish("1.0.0")
    yield world


def test_an_index_announcement_reaches_every_agent_and_each_checks_and_installs_at_once(
    world: World,
) -> None:
    procs: list[Proc] = []
    observer_net = Network()
    try:
        tmp = world.tmp
        origin_port = free_port()
        peer_config = tmp / "origin-peers.toml"
        peer_config.write_text(
            '[plugins]\nblock = ["ipfs", "bittorrent"]\n\n'
            + gossip_table(listen=f"/ip4/127.0.0.1/tcp/{origin_port}", **GOSSIP)
        )
        serve = [*cli(), "serve", str(world.repo.path), "--port", "0"]
        serve += ["--index-key", str(world.key_path), "--loopback-only"]
        serve += ["--peer-config", str(peer_config)]
        origin = Proc(serve, tmp / "origin.log")
        procs.append(origin)
        assert wait_until(lambda: any(x.startswith("peer gossip ") for x in origin.lines()), 120)
        url = next(x for x in origin.lines() if x.startswith("http://"))
        origin_addr = next(x for x in origin.lines() if x.startswith("peer gossip ")).split()[2]

        nodes: list[Path] = []
        addrs: list[str] = []
        for i in range(AGENTS):
            path, port = world.node(f"agent{i}", sources=[url])
            boot = [origin_addr, *addrs[-1:]]
            World.configure(
                path,
                check_interval=3600,
                listen=f"/ip4/127.0.0.1/tcp/{port}",
                bootstrap=boot,
                **GOSSIP,
            )
            text = (
                (path / "config.toml")
                .read_text()
                .replace("status_interval = 300", "status_interval = 2")
            )
            (path / "config.toml").write_text(text)
            nodes.append(path)
            addrs.append(world.addr(path, port))
        for i, path in enumerate(nodes):
            procs.append(Proc([*cli(), "node", "run", str(path)], tmp / f"agent{i}.log"))
        observer_dir, observer_port = world.node("observer")
        World.configure(
            observer_dir,
            listen=f"/ip4/127.0.0.1/tcp/{observer_port}",
            bootstrap=[origin_addr, addrs[-1]],
            **GOSSIP,
        )
        observer = observer_net.spawn(
            {"node": str(observer_dir), "backend": "trio"}, PEER_NODE
        ).wait_ready()

        # The start-up check installs 1.0.0 (trigger "start") ...
        assert wait_until(lambda: all(current(n) == "1.0.0" for n in nodes), 180)
        # ... and each agent's signed status then reaches the observer: the mesh is up.
        agent_keys = {World.peer_id(n) for n in nodes}
        key_of = {World.peer_id(n): n for n in nodes}

        def statuses_seen() -> set[str]:
            seen = set()
            for m in observer.call("received")["messages"]:
                if m["kind"] == "status":
                    seen.add(m["publisher"])
            return {libp2p_peer_id(p) for p in seen}

        assert wait_until(lambda: agent_keys <= statuses_seen(), 120), sorted(
            key_of[k].name for k in agent_keys - statuses_seen()
        )

        # A new release is published (as `release publish` would, in another process): the
        # origin sees the new index and announces it; every agent checks at once.
        world.publish("1.1.0")
        assert wait_until(lambda: all(current(n) == "1.1.0" for n in nodes), 120), [
            (n.name, current(n)) for n in nodes
        ]
        for proc in procs:  # `node status` while an agent holds the node would wait for it
            proc.stop()
        for path in nodes:
            check = status(path)["last_check"]
            assert isinstance(check, dict)
            assert check["trigger"] == "announce", (path.name, check)
    finally:
        for proc in procs:
            proc.stop()
        observer_net.close()
        if os.environ.get("GOSSIP_TEST_KEEP_LOGS") is None:
            for log in world.tmp.glob("*.log"):
                log.unlink()
