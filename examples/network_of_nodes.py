"""A network of nodes driven from Python: a phased rollout, a halt, and the network's view.

Six nodes (real node directories, each with its own identity key and state database) follow
one repository. They are connected in-process by the test kit's memory transport on one
:class:`~blackhole_sync.testing.MemoryHub` -- registered as a plugin, exactly as the gossip
plugin would be -- over which each node spreads its signed status; the first node reads the
others' statuses as they arrive, each verified by its peer-message gate first: the view
``network status`` shows. Swap the hub for the gossip plugin and nothing else changes.

The story, told by governance documents signed by 2 of 3 governance keys:

1. every node installs 1.0.0; the six node keys become the validator set;
2. 1.1.0 goes out under a rollout plan: a "canary" phase (about a third of the network, the
   nodes chosen by ``sha256(node id, release digest, salt)``) opens at once, "everyone" an
   hour later -- each node installs only once its own phase has opened. The canaries look
   healthy, so governance advances the rollout: version 2 of the plan, same salt, its canary
   hour already over -- and the other nodes install;
3. 1.2.0 goes out under a plan whose second phase opens only in an hour; the canaries install
   it, then governance halts it: the canaries roll back (``[network] rollback_on_halt``) and
   no other node ever installs it.

    python examples/network_of_nodes.py [WORKDIR] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from blackhole_sync import (
    TRANSPORT_API,
    HaltDoc,
    NodeStatusDoc,
    PrivateKey,
    Repository,
    RolloutPhase,
    RolloutPlan,
    TransportSpec,
    UpdateManager,
    ValidatorSet,
    hookimpl,
    init_node,
    make_plugin_manager,
    node_position,
)
from blackhole_sync.agent import open_peer_network
from blackhole_sync.codecs import load_private_key
from blackhole_sync.network import PeerNetwork
from blackhole_sync.release import publish_coordination, write_coordination_draft
from blackhole_sync.testing import MemoryHub, MemoryTransport

NODES = 6
CANARY_BP = 3400  # the canary phase: nodes whose position is below 34 %
CANARY_SECONDS = 3600  # how long the canary phase lasts before everyone may install


class HubPlugin:
    """The memory transport on one shared hub, registered as a peer-to-peer plugin would be."""

    def __init__(self, hub: MemoryHub) -> None:
        self.hub = hub

    @hookimpl
    def blackhole_sync_transports(self) -> list[TransportSpec]:
        def factory(**options: Any) -> MemoryTransport:
            return MemoryTransport(hub=self.hub, **options)

        return [
            TransportSpec(
                "memory", factory, api=TRANSPORT_API, backends={"asyncio", "trio"},
                schemes={"memory"},
            )
        ]  # fmt: skip


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Network:
    """The release side (keys, repository, governance) and the nodes."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.key = PrivateKey.generate()  # root, release and index key (one person, for brevity)
        self.governance = [PrivateKey.generate() for _ in range(3)]
        self.repo = Repository.init(
            work / "repo", root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1,
            index_key=self.key.public_key, sign_with=[self.key],
            governance_keys=[k.public_key for k in self.governance], governance_threshold=2,
        )  # fmt: skip
        self.hub = MemoryHub()
        self.nodes: list[Path] = []
        self.peers: dict[Path, PeerNetwork] = {}
        self.plugins: dict[Path, Any] = {}
        self.view: dict[str, str | None] = {}  # node id -> version, from signed statuses
        self.received = 0  # statuses the first node accepted so far
        self.sent = 0  # statuses the others sent so far
        self._arrived = anyio.Event()

    # -- the release side ---------------------------------------------------------------------

    def publish(self, version: str) -> str:
        """Build, sign and publish ``version``; return its release digest."""
        src = self.work / "src" / version / "service"
        src.parent.mkdir(parents=True)
        src.write_bytes(f"service {version}\n".encode() * 500)
        self.repo.build_release(version, [src], delta_from=[])
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)
        index = self.repo.index()
        assert index is not None
        listed = index.listing(version)
        assert listed is not None
        return listed.sha256

    def govern(self, document: Any) -> None:
        """Two of the three governance key holders sign; the index lists the document."""
        for key in self.governance[:2]:
            write_coordination_draft(self.repo, document, key)
        publish_coordination(self.repo, self.key)

    # -- the nodes ----------------------------------------------------------------------------

    def add_node(self, name: str) -> Path:
        node = self.work / name
        init_node(node, root_bytes=self.repo.root_bytes(), sources=[str(self.repo.path)])
        config = (node / "config.toml").read_text()
        # leave a version whose rollout was halted (the default keeps it running)
        config = config.replace("rollback_on_halt = false", "rollback_on_halt = true")
        (node / "config.toml").write_text(config)
        self.nodes.append(node)
        return node

    @staticmethod
    def node_id(node: Path) -> str:
        return load_private_key(node / "identity.key").public_key.hex

    async def start_peers(self, stack: AsyncExitStack) -> None:
        for node in self.nodes:
            plugins = make_plugin_manager()
            plugins.register(HubPlugin(self.hub))
            self.plugins[node] = plugins
            self.peers[node] = await stack.enter_async_context(open_peer_network(node, plugins))

    async def sync(self, node: Path) -> str:
        """One agent cycle on ``node`` (what `node run` does each check interval), then its
        signed status to its peers. Returns what happened."""
        async with UpdateManager(node, plugins=self.plugins[node], peers=self.peers[node]) as m:
            before = m.store.current_version()
            result = await m.sync_with_network()
            after = m.store.current_version()
            await m.broadcast_update_status()
        if result.error is not None:
            raise RuntimeError(f"{node.name}: {result.error}")
        if before != after:
            return f"{before} -> {after}"
        if result.decision is not None and result.decision.action == "wait":
            return f"waits ({result.decision.reason})"
        return f"stays on {after}"

    async def round(self, title: str) -> dict[str, str]:
        print(f"-- {title}")
        outcomes = {}
        for node in self.nodes:
            outcomes[node.name] = await self.sync(node)
            print(f"   {node.name}: {outcomes[node.name]}")
        await self.observe()
        return outcomes

    async def listen(self) -> None:
        """The first node's view of the network: every status its gate accepted (verified
        against the node's own key, newer than the last one from that node)."""
        async for decided in self.peers[self.nodes[0]].messages(["status"]):
            status: NodeStatusDoc = decided.document
            self.view[status.node_id] = status.current_version
            self.received += 1
            self._arrived.set()
            self._arrived = anyio.Event()

    async def observe(self) -> None:
        observer = self.nodes[0]
        self.sent += len(self.nodes) - 1  # each other node spread one status this round
        with anyio.fail_after(30):  # they are on their way over the hub
            while self.received < self.sent:
                await self._arrived.wait()
        mine = {self.node_id(observer): current(observer)}
        counts = Counter(v or "none" for v in {**self.view, **mine}.values())
        print("   network view:", ", ".join(f"{v}: {n}" for v, n in sorted(counts.items())))


def current(node: Path) -> str | None:
    link = node / "current"
    return link.resolve().name if link.is_symlink() else None


def salt_for(ids: list[str], digest: str, share_bp: int, wanted: int) -> str:
    """The first salt that puts exactly ``wanted`` nodes below ``share_bp`` (the plan's
    authors pick one so the canary phase has nodes in it)."""
    return next(
        f"s{i}" for i in range(10_000)
        if sum(node_position(x, digest, f"s{i}") < share_bp for x in ids) == wanted
    )  # fmt: skip


def plan(release: str, salt: str, *, version: int = 1, started: int = 1) -> RolloutPlan:
    """The plan: canaries for CANARY_SECONDS, then everyone; ``started`` seconds ago."""
    return RolloutPlan(
        release, version, now() + dt.timedelta(days=1), now() - dt.timedelta(seconds=started),
        (RolloutPhase("canary", CANARY_BP, CANARY_SECONDS), RolloutPhase("everyone", 10_000, 0)),
        salt, 0,
    )  # fmt: skip


async def main(work: Path) -> None:
    net = Network(work)
    net.publish("1.0.0")
    for i in range(NODES):
        net.add_node(f"node{i}")
    ids = [net.node_id(n) for n in net.nodes]
    net.govern(ValidatorSet(1, now() + dt.timedelta(days=1), dict.fromkeys(ids, 1)))

    async with AsyncExitStack() as stack:
        await net.start_peers(stack)
        tg = await stack.enter_async_context(anyio.create_task_group())
        tg.start_soon(net.listen)
        await net.round("1.0.0 published")
        assert all(current(n) == "1.0.0" for n in net.nodes)

        # -- 1.1.0, phased: the canaries first, then everyone ---------------------------------
        digest = net.publish("1.1.0")
        salt = salt_for(ids, digest, CANARY_BP, wanted=2)
        net.govern(plan("1.1.0", salt))
        canaries = {
            n.name
            for n, x in zip(net.nodes, ids, strict=True)
            if node_position(x, digest, salt) < CANARY_BP
        }
        print(f"1.1.0 rollout: salt {salt!r}, canary phase: {sorted(canaries)}")
        await net.round("1.1.0, canary phase")
        on_new = {n.name for n in net.nodes if current(n) == "1.1.0"}
        assert on_new == canaries, (on_new, canaries)
        net.govern(plan("1.1.0", salt, version=2, started=CANARY_SECONDS + 1))
        print("1.1.0 rollout advanced: plan version 2, the canary phase is over")
        await net.round("1.1.0, everyone")
        assert all(current(n) == "1.1.0" for n in net.nodes)

        # -- 1.2.0: the canaries install it, governance halts it ------------------------------
        digest = net.publish("1.2.0")
        salt = salt_for(ids, digest, CANARY_BP, wanted=2)
        net.govern(plan("1.2.0", salt))
        canaries = {
            n.name
            for n, x in zip(net.nodes, ids, strict=True)
            if node_position(x, digest, salt) < CANARY_BP
        }
        await net.round("1.2.0, canary phase")
        assert {n.name for n in net.nodes if current(n) == "1.2.0"} == canaries
        net.govern(HaltDoc("1.2.0", "canaries report errors", 1, now() + dt.timedelta(days=1)))
        net.repo.refresh(net.key)
        print("1.2.0 halted by governance")
        await net.round("after the halt")
        assert all(current(n) == "1.1.0" for n in net.nodes)
        assert Counter(net.view.values()) == {"1.1.0": NODES - 1}  # and the observer itself
        tg.cancel_scope.cancel()
    print(f"done: {NODES} nodes on 1.1.0, 1.2.0 halted and rolled back on {len(canaries)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", nargs="?", type=Path, help="default: a temporary directory")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        anyio.run(main, args.workdir, backend=args.backend)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(main, Path(tmp), backend=args.backend)
