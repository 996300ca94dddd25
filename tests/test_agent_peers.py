"""The agent's peer side, in one process over the in-memory transport (the real gossip plugin
runs the same path across processes in its own tests): an announcement wakes a node whose poll
interval is an hour, a forged one does not, and the node's signed status reaches its peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from blackhole_sync import (
    TRANSPORT_API,
    Envelope,
    NodeStatusDoc,
    PeerMessage,
    PrivateKey,
    Repository,
    TransportSpec,
    UpdateManager,
    Verdict,
    hookimpl,
    init_node,
    make_plugin_manager,
)
from blackhole_sync.agent import run_agent
from blackhole_sync.network import make_announcement
from blackhole_sync.testing import MemoryHub, MemoryTransport


class HubPlugin:
    """Registers the memory transport on one shared hub, as a P2P plugin would."""

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
        ]


class World:
    def __init__(self, tmp: Path) -> None:
        self.key = PrivateKey.generate()
        self.repo = Repository.init(
            tmp / "repo", root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1,
            index_key=self.key.public_key, sign_with=[self.key],
        )  # fmt: skip
        self.tmp = tmp
        self.publish("1.0.0")
        self.node = tmp / "node"
        init_node(self.node, root_bytes=self.repo.root_bytes(), sources=[str(self.repo.path)])
        config = (self.node / "config.toml").read_text()
        config = config.replace("check_interval = 3600", "check_interval = 3600")
        config = config.replace("status_interval = 300", "status_interval = 1")
        (self.node / "config.toml").write_text(config)

    def publish(self, version: str) -> bytes:
        src = self.tmp / version / "service"
        src.parent.mkdir()
        src.write_bytes(f"service {version}\n".encode() * 100)
        self.repo.build_release(version, [src], delta_from=[])
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)
        data = self.repo.index_bytes()
        assert data is not None
        return make_announcement(data, self.repo.root(), "stable", self.key)


def current(node: Path) -> str | None:
    link = node / "current"
    return link.resolve().name if link.is_symlink() else None


async def last_check(node: Path) -> dict[str, Any]:
    async with UpdateManager(node) as manager:
        status = manager.get_update_status().to_dict()
    return status["last_check"]


@pytest.mark.anyio
async def test_an_announcement_wakes_the_agent_and_a_forged_one_does_not(tmp_path: Path) -> None:
    world = World(tmp_path)
    hub = MemoryHub()
    plugins = make_plugin_manager()
    plugins.register(HubPlugin(hub))
    statuses: list[NodeStatusDoc] = []

    def watch(message: PeerMessage) -> Verdict:
        if message.kind == "status":
            statuses.append(Envelope.from_bytes(message.payload).parse(NodeStatusDoc.from_dict))
        return Verdict.ACCEPT

    async with anyio.create_task_group() as tg, MemoryTransport(
        hub=hub, peer_id="origin", message_validator=watch
    ) as origin:
        tg.start_soon(lambda: run_agent(world.node, plugins=plugins))
        with anyio.fail_after(30):
            while current(world.node) != "1.0.0":  # the start-up check installs 1.0.0  # noqa: ASYNC110 - a test polls what another task does
                await anyio.sleep(0.05)
        assert (await last_check(world.node))["trigger"] == "start"

        # a forged announcement (another key) of a newer index: nothing happens
        good = world.publish("1.1.0")
        forged = Envelope.sign(Envelope.from_bytes(good).signed, [PrivateKey.generate()]).raw
        await origin.announce("announcement", forged)
        await anyio.sleep(1.0)
        assert current(world.node) == "1.0.0"
        assert [n for (_, sender), n in hub.penalties.items() if sender == "origin"] == [1]

        # the genuine one: the agent checks at once (its poll interval is an hour)
        await origin.announce("announcement", good)
        with anyio.fail_after(30):
            while current(world.node) != "1.1.0":  # noqa: ASYNC110 - a test polls what another task does
                await anyio.sleep(0.05)
        check = await last_check(world.node)
        assert check["trigger"] == "announce" and check["index_version"] == 3

        with anyio.fail_after(30):  # its signed status reaches the peers
            while not any(s.current_version == "1.1.0" for s in statuses):  # noqa: ASYNC110 - a test polls what another task does
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
