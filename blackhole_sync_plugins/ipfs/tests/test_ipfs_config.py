"""The Kubo config the embedded node gets, and source URLs (no node)."""

from __future__ import annotations

from typing import Any

import pytest
from blackhole_sync_ipfs import (
    KUBO_DEFAULT_BOOTSTRAP,
    LOOPBACK_ADDR_FILTERS,
    ConfigError,
    EmbeddedConfig,
    parse_rpc_url,
)
from blackhole_sync_ipfs._config import apply_config, is_loopback_multiaddr

KUBO_INIT: dict[str, Any] = {
    "Addresses": {
        "Swarm": ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1/webtransport"],
        "API": "/ip4/127.0.0.1/tcp/5001",
        "Gateway": "/ip4/127.0.0.1/tcp/8080",
    },
    "Bootstrap": list(KUBO_DEFAULT_BOOTSTRAP),
    "Discovery": {"MDNS": {"Enabled": True}},
    "Swarm": {"Transports": {"Network": {}}},
}


def test_loopback_only_config() -> None:
    cfg = apply_config(KUBO_INIT, EmbeddedConfig(repo="/x", port=4123))
    assert cfg["Addresses"]["Swarm"] == ["/ip4/127.0.0.1/tcp/4123"]
    assert cfg["Addresses"]["API"] == [] and cfg["Addresses"]["Gateway"] == []
    assert cfg["Bootstrap"] == []
    assert cfg["Discovery"]["MDNS"]["Enabled"] is False
    assert cfg["Swarm"]["AddrFilters"] == list(LOOPBACK_ADDR_FILTERS)
    network = cfg["Swarm"]["Transports"]["Network"]
    assert network["QUIC"] is False and network["WebTransport"] is False
    assert cfg["Routing"]["Type"] == "none" and cfg["Routing"]["Routers"] is None
    assert cfg["Swarm"]["DisableNatPortMap"] is True
    assert KUBO_INIT["Bootstrap"] == list(KUBO_DEFAULT_BOOTSTRAP)  # input untouched


def test_free_port_by_default() -> None:
    cfg = apply_config(KUBO_INIT, EmbeddedConfig(repo="/x"))
    assert cfg["Addresses"]["Swarm"] == ["/ip4/127.0.0.1/tcp/0"]


def test_open_config_uses_what_it_is_given() -> None:
    options = EmbeddedConfig(
        repo="/x", loopback_only=False, listen=["/ip4/0.0.0.0/tcp/4001"], bootstrap=KUBO_DEFAULT_BOOTSTRAP
    )
    cfg = apply_config(KUBO_INIT, options)
    assert cfg["Addresses"]["Swarm"] == ["/ip4/0.0.0.0/tcp/4001"]
    assert cfg["Bootstrap"] == []  # EmbeddedNode dials them once bitswap runs
    assert "AddrFilters" not in cfg["Swarm"]


@pytest.mark.parametrize(
    "options",
    [
        {"listen": ["/ip4/0.0.0.0/tcp/4001"]},
        {"listen": ["/ip4/127.0.0.1/udp/4001/quic-v1"]},
        {"bootstrap": ["/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ"]},
        {"bootstrap": ["/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"]},
        {"port": 70000},
    ],
)
def test_loopback_only_refuses_public_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        EmbeddedConfig(repo="/x", **options).validate()


def test_loopback_multiaddrs() -> None:
    assert is_loopback_multiaddr("/ip4/127.0.0.1/tcp/1/p2p/Qm")
    assert is_loopback_multiaddr("/ip4/127.8.9.10/tcp/1")
    assert not is_loopback_multiaddr("/ip4/10.0.0.1/tcp/1")
    assert not is_loopback_multiaddr("/ip6/::1/tcp/1")
    assert not is_loopback_multiaddr("/dns4/localhost/tcp/1")


def test_rpc_urls() -> None:
    endpoint = parse_rpc_url("ipfs+rpc://127.0.0.1:5001")
    assert (endpoint.host, endpoint.port) == ("127.0.0.1", 5001)
    assert endpoint.multiaddr == "/ip4/127.0.0.1/tcp/5001/http"
    assert str(endpoint) == "ipfs+rpc://127.0.0.1:5001"
    assert parse_rpc_url("ipfs+rpc://[::1]:5001").multiaddr == "/ip6/::1/tcp/5001/http"
    for bad in ("ipfs://127.0.0.1:5001", "ipfs+rpc://127.0.0.1", "ipfs+rpc://h:1/api", "ftp://h:1"):
        with pytest.raises(ConfigError):
            parse_rpc_url(bad)


def test_both_backends_implement_the_interface() -> None:
    from blackhole_sync_ipfs import EmbeddedNode, IpfsBackend, RpcNode

    def typed(embedded: EmbeddedNode, rpc: RpcNode) -> list[IpfsBackend]:
        return [embedded, rpc]  # checked by mypy

    assert callable(typed)
    for cls in (EmbeddedNode, RpcNode):
        missing = [n for n in ("add_file", "get", "pin", "unpin", "pins", "connect", "id", "publish", "subscribe", "aclose") if not hasattr(cls, n)]
        assert not missing, (cls, missing)


def test_an_identity_seed_becomes_the_repo_identity() -> None:
    from blackhole_sync_ipfs._config import kubo_identity

    seed = bytes(range(32))
    cfg = apply_config({**KUBO_INIT, "Identity": {"PeerID": "Qm...", "PrivKey": "old"}}, EmbeddedConfig(repo="/x", identity_seed=seed))
    identity = kubo_identity(seed)
    assert cfg["Identity"] == {"PeerID": identity.peer_id, "PrivKey": identity.priv_key}
    kept = apply_config({**KUBO_INIT, "Identity": {"PeerID": "Qm...", "PrivKey": "old"}}, EmbeddedConfig(repo="/x"))
    assert kept["Identity"] == {"PeerID": "Qm...", "PrivKey": "old"}
    with pytest.raises(ConfigError):
        EmbeddedConfig(repo="/x", identity_seed=b"short").validate()
