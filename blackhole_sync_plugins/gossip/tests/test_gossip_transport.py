"""The gossip transport plugin in this process: conformance under asyncio and trio, what it
leaves behind after stop, its settings (the loopback-only switch, [gossip] keys), and the
plugin's registration with the core."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from blackhole_sync_gossip.transport import GossipTransport

from blackhole_sync import ConfigurationError, PeerMessage, Verdict, make_plugin_manager
from blackhole_sync.codecs import SecureDistribution
from blackhole_sync.documents import PrivateKey
from blackhole_sync.testing import ScriptedValidator, TransportUnderTest, check_transport

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(180)]

FAST = {"gossip": {"dial_backoff_initial": 0.2, "dial_backoff_max": 1.0, "hello_timeout": 3.0}}


#: Under trio both test transports' hosts share the test's one trio loop, which py-libp2p does
#: not do reliably (one host per process: see the README); the run fails about one time in four
#: there, so the trio variant runs in the soak session. Trio hosts are in CI through the
#: network tests, where every other node process runs its host under trio.
@pytest.fixture(params=["asyncio", pytest.param("trio", marks=pytest.mark.slow)])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def transport(validator: Any, **options: Any) -> GossipTransport:
    return GossipTransport(
        message_validator=validator,
        network_id="conformance",
        identity_key=os.urandom(32),
        loopback_only=True,
        node_config=FAST,
        **options,
    )


@asynccontextmanager
async def connected_pair() -> AsyncIterator[TransportUnderTest]:
    validator = ScriptedValidator()
    async with transport(validator) as a:
        async with transport(validator, bootstrap=a.addresses()) as b:
            with anyio.fail_after(20):
                while not (await a.connected_peers() and await b.connected_peers()):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            yield TransportUnderTest(a, peer=b, validator=validator)


def gossip_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gossip-trio")]


def listening_ports() -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.laddr and c.status == psutil.CONN_LISTEN
    }


@pytest.mark.anyio
async def test_the_transport_passes_the_conformance_checks(anyio_backend: str) -> None:
    before = listening_ports()
    ran = await check_transport(connected_pair)
    assert ran == ["announce", "validator", "query", "close"]
    # Nothing left running: no gossip thread (asyncio), no listening socket (both).
    assert gossip_threads() == []
    assert listening_ports() <= before


@pytest.mark.anyio
async def test_the_host_runs_where_the_backend_says_and_stops_completely(
    anyio_backend: str,
) -> None:
    async with transport(lambda m: Verdict.ACCEPT) as t:
        settings = await t.effective_settings()
        port = int(t.addresses()[0].split("/")[4])
        assert port in listening_ports()
        assert settings["backend"] == anyio_backend
        if anyio_backend == "asyncio":
            assert len(gossip_threads()) == 1
        else:
            assert gossip_threads() == []
    assert gossip_threads() == []
    assert port not in listening_ports()
    with pytest.raises(RuntimeError):
        await t.announce("announcement", b"x")


@pytest.mark.anyio
async def test_the_peer_id_is_the_node_identity_key(anyio_backend: str) -> None:
    key = PrivateKey.generate()
    async with GossipTransport(
        message_validator=lambda m: Verdict.ACCEPT, identity_key=key.seed, loopback_only=True
    ) as t:
        channel = SecureDistribution(key).establish_secure_channel(key.public_key)
        assert t.peer_id == channel.peer_id
        assert (await t.effective_settings())["security"] == ["/noise"]


@pytest.mark.anyio
async def test_the_loopback_only_switch_is_what_the_host_does(anyio_backend: str) -> None:
    public_boot = "/ip4/192.0.2.7/tcp/4001/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"
    local_boot = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWRndVhVZPCiQwHBBBdg769GyrPUW13zxwqQyf9r3ANaba"
    node_config = {
        "network": {"loopback_only": True},
        "gossip": {"listen": "/ip4/0.0.0.0/tcp/0", "bootstrap": [public_boot, local_boot]},
    }
    async with GossipTransport(
        message_validator=lambda m: Verdict.ACCEPT, network_id="testnet", node_config=node_config
    ) as t:
        s = await t.effective_settings()
    assert s["loopback_only"] is True and s["sources"]["loopback_only"] == "config"
    assert s["listen_host"] == "127.0.0.1"
    assert all(a.startswith("/ip4/127.0.0.1/tcp/") for a in s["listen_addrs"])
    assert s["connection_gate_allow"] == ["127.0.0.0/8", "::1/128"]
    assert s["dial_policy"] == "loopback addresses only"
    assert s["bootstrap"] == [local_boot] and s["bootstrap_rejected"] == [public_boot]
    assert (s["mdns"], s["upnp"], s["public_bootstrap"]) == (False, False, False)
    assert s["topics"]["announcement"] == "/blackhole/testnet/announcement/1"
    assert s["admit_without_hello"] is False
    assert s["score"]["graylist_threshold"] > float("-inf")


def test_gossip_settings_come_from_options_then_the_gossip_table() -> None:
    node_config = {
        "gossip": {
            "listen": "/ip4/0.0.0.0/tcp/4999",
            "bootstrap": [
                "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWRndVhVZPCiQwHBBBdg769GyrPUW13zxwqQyf9r3ANaba"
            ],
            "max_inbound_peers": 9,
            "admit_without_hello": True,
            "score": {"graylist_threshold": -80.0},
        }
    }
    t = GossipTransport(node_config=node_config, network_id="n1", listen="/ip4/127.0.0.1/tcp/5000")
    cfg = t.settings.engine
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 5000)  # the option wins
    assert len(cfg.bootstrap) == 1 and cfg.max_inbound_peers == 9
    assert cfg.admit_without_hello is True and cfg.score.graylist_threshold == -80.0
    assert cfg.hello == b"n1"  # default hello: the network id
    for bad in (
        {"gossip": {"max_inbound_peer": 9}},  # a typo is an error, not a silent default
        {"gossip": {"listen": "0.0.0.0:4001"}},
        {"gossip": {"max_inbound_peers": "9"}},
        {"gossip": {"score": {"graylist_threshold": 0.0}}},
    ):
        with pytest.raises(ConfigurationError):
            GossipTransport(node_config=bad)
    GossipTransport(some_future_option=1)  # unknown options are ignored


@pytest.mark.anyio
async def test_without_a_validator_the_transport_refuses_to_start(anyio_backend: str) -> None:
    with pytest.raises(ConfigurationError):
        async with GossipTransport(loopback_only=True):
            pass


@pytest.mark.anyio
async def test_messages_accepted_before_anyone_subscribes_reach_the_first_subscriber(
    anyio_backend: str,
) -> None:
    async with connected_pair() as tut:
        assert tut.peer is not None
        received: list[PeerMessage] = []
        with anyio.fail_after(20):
            while not received:
                await tut.transport.announce("announcement", b"early %d" % len(received))
                await anyio.sleep(0.3)
                sub = tut.peer.subscribe(["announcement"])
                with anyio.move_on_after(0.5):
                    received.append(await sub.__anext__())
                await sub.aclose()  # type: ignore[attr-defined]
        assert received[0].payload.startswith(b"early")
        assert received[0].transport == "gossip"


@pytest.mark.anyio
async def test_peers_are_remembered_across_a_restart(anyio_backend: str, tmp_path: Path) -> None:
    validator = ScriptedValidator()
    async with transport(validator) as a:
        async with transport(validator, bootstrap=a.addresses(), state_dir=tmp_path) as b:
            with anyio.fail_after(20):
                while not await b.connected_peers():  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        cache = (tmp_path / "peers.json").read_text()
        assert a.peer_id in cache
        # Restarted without any bootstrap entry, it finds its peer again.
        async with transport(validator, state_dir=tmp_path) as again:
            with anyio.fail_after(20):
                while a.peer_id not in await again.connected_peers():  # noqa: ASYNC110
                    await anyio.sleep(0.05)


def test_the_plugin_registers_the_transport_through_its_entry_point() -> None:
    plugins = make_plugin_manager(load_entrypoints=True)
    [spec] = [s for s in plugins.transport_specs() if s.name == "gossip"]
    spec.check_api()
    assert spec.backends == {"asyncio", "trio"}
    assert GossipTransport.capabilities == {"announce", "subscribe", "query"}
