"""The engine in this process: under trio, through the asyncio bridge, and its settings.

Each test runs one GossipHost here (never more than one per process) against
real peers in child processes.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psutil
import pytest
import trio
from blackhole_sync_gossip import (
    AsyncioGossipBridge,
    GossipConfig,
    GossipHost,
    InboundMessage,
    NotRunningError,
    PublishRefusedError,
    Verdict,
)
from netutil import PUBLISHER_PUB, Network, NodeProcess, seed, signed, wait_until

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(90)]

KIND = "announcement"


class Validator:
    """The same publisher-signed, seq-floored validator as the node script."""

    def __init__(self) -> None:
        from nacl.signing import VerifyKey

        self.key = VerifyKey(bytes.fromhex(PUBLISHER_PUB))
        self.floor: dict[str, int] = {}

    def __call__(self, kind: str, payload: bytes, from_peer: str) -> Verdict:
        from nacl.exceptions import BadSignatureError

        try:
            body = self.key.verify(payload)
        except (BadSignatureError, ValueError):
            return Verdict.REJECT
        seq = int.from_bytes(body[:8], "big")
        if seq <= self.floor.get(kind, 0):
            return Verdict.IGNORE
        self.floor[kind] = seq
        return Verdict.ACCEPT


def config(peer: NodeProcess | None, **kwargs: Any) -> GossipConfig:
    return GossipConfig(
        network="testnet",
        identity_seed=bytes.fromhex(seed(200)),
        loopback_only=True,
        bootstrap=(peer.addr,) if peer is not None else (),
        dial_backoff_initial=0.5,
        **kwargs,
    )


def gossip_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gossip-trio")]


def listening_on(port: int) -> bool:
    return any(
        c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        for c in psutil.Process().net_connections(kind="tcp")
    )


def test_engine_runs_in_the_callers_trio_task_group(net: Network) -> None:
    [peer] = net.start({"seed": seed(201)})
    threads_before = set(threading.enumerate())
    port_seen: list[int] = []
    received: list[InboundMessage] = []

    async def main() -> None:
        host = GossipHost(config(peer), validate=Validator())
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            port_seen.append(int(host.listen_addrs[0].split("/")[4]))
            assert await host.wait_for_mesh(KIND, timeout=20)
            ok = await trio.to_thread.run_sync(
                lambda: peer.call("wait_mesh", kind=KIND, within=20)["ok"]
            )
            assert ok
            await trio.to_thread.run_sync(
                lambda: peer.call("publish", kind=KIND, payload=signed(1, "from peer").hex())
            )
            with trio.fail_after(15):
                received.append(await host.messages.receive())
            await host.publish(KIND, signed(2, "from trio"))
            with pytest.raises(PublishRefusedError):
                await host.publish(KIND, signed(2, "from trio"))  # stale now: IGNORE locally
            got = await trio.to_thread.run_sync(
                lambda: wait_until(
                    lambda: signed(2, "from trio").hex() in peer.received_payloads(), 15
                )
            )
            assert got
            counters = host.counters()
            assert counters["messages_accepted"] == 1
            assert counters["peers_connected"] == 1
            host.stop()
        with pytest.raises(NotRunningError):
            await host.publish(KIND, signed(3))

    trio.run(main)
    assert received[0].payload == signed(1, "from peer")
    assert received[0].origin == peer.peer_id == received[0].from_peer
    assert not listening_on(port_seen[0])
    leftover = [
        t
        for t in set(threading.enumerate()) - threads_before
        if not t.name.startswith("Trio thread")
    ]  # trio's idle worker cache
    assert leftover == []


def test_engine_through_the_asyncio_bridge(net: Network) -> None:
    [peer] = net.start({"seed": seed(202)})
    threads_before = threading.active_count()
    port_seen: list[int] = []

    async def main() -> None:
        async with AsyncioGossipBridge(config(peer), validate=Validator()) as bridge:
            addrs = await bridge.listen_addrs()
            port_seen.append(int(addrs[0].split("/")[4]))
            assert gossip_threads()
            assert await bridge.wait_for_mesh(KIND, timeout=20)
            await asyncio.to_thread(peer.call, "wait_mesh", kind=KIND, within=20)
            await asyncio.to_thread(
                peer.call, "publish", kind=KIND, payload=signed(1, "to asyncio").hex()
            )
            msg = await asyncio.wait_for(bridge.receive(), 15)
            assert msg.payload == signed(1, "to asyncio")
            await bridge.publish(KIND, signed(2, "from asyncio"))
            assert await asyncio.to_thread(
                wait_until, lambda: signed(2, "from asyncio").hex() in peer.received_payloads(), 15
            )
            answers = await bridge.query(KIND)
            assert [a.payloads for a in answers] == [(signed(2, "from asyncio"),)]
            counters = await bridge.counters()
            assert counters["messages_accepted"] == 1
            assert counters["queries_sent"] == 1
            assert (await bridge.effective_settings())["loopback_only"] is True
        with pytest.raises(NotRunningError):
            await bridge.publish(KIND, signed(3))
        with pytest.raises(NotRunningError):
            await bridge.receive()

    asyncio.run(main())
    assert gossip_threads() == []
    assert threading.active_count() == threads_before
    assert not listening_on(port_seen[0])


def test_loopback_only_settings_are_what_the_host_does() -> None:
    settings: dict[str, Any] = {}

    async def main() -> None:
        cfg = GossipConfig(
            network="testnet",
            identity_seed=bytes.fromhex(seed(203)),
            loopback_only=True,
            listen_host="0.0.0.0",
            bootstrap=(
                "/ip4/192.0.2.7/tcp/4001/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq",
                "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWRndVhVZPCiQwHBBBdg769GyrPUW13zxwqQyf9r3ANaba",
            ),
        )
        host = GossipHost(cfg, validate=Validator())
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            settings.update(host.effective_settings())
            host.stop()

    trio.run(main)
    assert settings["loopback_only"] is True
    assert settings["listen_host"] == "127.0.0.1"
    assert settings["listen_addrs"]
    assert all(a.startswith("/ip4/127.0.0.1/tcp/") for a in settings["listen_addrs"])
    assert settings["mdns"] is False and settings["upnp"] is False
    assert settings["public_bootstrap"] is False
    assert settings["bootstrap"] == [
        "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWRndVhVZPCiQwHBBBdg769GyrPUW13zxwqQyf9r3ANaba"
    ]
    assert settings["bootstrap_rejected"][0].startswith("/ip4/192.0.2.7/")
    assert settings["connection_gate_allow"] == ["127.0.0.0/8", "::1/128"]
    assert settings["dial_policy"] == "loopback addresses only"
    assert settings["security"] == ["/noise"]
    assert settings["pubsub_protocols"] == ["/meshsub/1.1.0"]
    assert settings["topics"]["announcement"] == "/blackhole/testnet/announcement/1"
    assert settings["mesh"] == {"D": 6, "D_lo": 5, "D_hi": 12, "heartbeat_s": 1}
    assert settings["score"]["graylist_threshold"] > float("-inf")


def test_received_messages_are_credited_back_in_half_window_updates(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    # py-libp2p credits every read back with a WINDOW_UPDATE frame (two or three per pubsub
    # message); go-yamux, and our host, only once half the 256 KiB window has been read.
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    updates: list[int] = []
    send_window_update = YamuxStream.send_window_update

    async def counted(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await send_window_update(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    [peer] = net.start({"seed": seed(203)})
    count, text = 400, "x" * 600  # about 320 KiB on the wire: past half the window twice
    received: list[InboundMessage] = []

    async def main() -> None:
        cfg = config(peer, peer_rate_per_second=1000.0, peer_rate_burst=1000)
        host = GossipHost(cfg, validate=Validator())
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            assert await host.wait_for_mesh(KIND, timeout=20)
            await trio.to_thread.run_sync(lambda: peer.call("wait_mesh", kind=KIND, within=20))
            before = len(updates)

            async def receive() -> None:
                with trio.fail_after(60):
                    while len(received) < count:
                        received.append(await host.messages.receive())

            async with trio.open_nursery() as inner:
                inner.start_soon(receive)
                for seq in range(1, count + 1):
                    payload = signed(seq, text)
                    await trio.to_thread.run_sync(
                        lambda p=payload: peer.call("publish", kind=KIND, payload=p.hex())
                    )
            sent = updates[before:]
            host.stop()
        # every message arrived, and the window was credited back in large steps
        assert [m.payload for m in received] == [signed(s, text) for s in range(1, count + 1)]
        assert 1 <= len(sent) <= 4, sent
        assert min(sent) >= 128 * 1024

    trio.run(main)
