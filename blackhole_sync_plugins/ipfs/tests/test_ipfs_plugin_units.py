"""The transport's settings, limits and offline operations (no node is started)."""

from __future__ import annotations

import io
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from blackhole_sync_ipfs import KUBO_DEFAULT_BOOTSTRAP, cid_of_bytes
from blackhole_sync_ipfs._config import derive_seed, kubo_identity
from blackhole_sync_ipfs._inbox import InboundGuard
from blackhole_sync_ipfs._settings import IpfsSettings
from blackhole_sync_ipfs.transport import IPFS_TRANSPORT_SPEC, IpfsTransport

from blackhole_sync import (
    TRANSPORT_API,
    BlobNotFoundError,
    ConfigurationError,
    DownloadError,
    Locator,
    Verdict,
    VerifyingSink,
    make_plugin_manager,
)

LOOP = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"


def settings(**options: Any) -> IpfsSettings:
    return IpfsSettings.from_options(options)


def test_the_plugin_registers_the_ipfs_transport() -> None:
    others = {ep.name for ep in entry_points(group="blackhole_sync")} - {"ipfs"}
    plugins = make_plugin_manager(load_entrypoints=True, block=others)  # others import slowly
    specs = {s.name: s for s in plugins.transport_specs()}
    spec = specs["ipfs"]
    assert spec is IPFS_TRANSPORT_SPEC and spec.api == TRANSPORT_API
    assert spec.backends == {"asyncio", "trio"}
    assert spec.handles(Locator("cid", "bafy")) and spec.handles(Locator.url("ipfs://"))
    assert spec.handles(Locator.url("ipfs+rpc://127.0.0.1:5001/"))


def test_the_backend_follows_the_table_then_the_sources() -> None:
    assert settings().backend == "embedded"
    s = settings(node_config={"sources": ["http://x/", "ipfs+rpc://127.0.0.1:5001/"]})
    assert (s.backend, s.rpc_url) == ("rpc", "ipfs+rpc://127.0.0.1:5001")
    s = settings(
        node_config={"sources": ["ipfs+rpc://127.0.0.1:5001/"], "ipfs": {"backend": "embedded"}}
    )
    assert s.backend == "embedded"
    with pytest.raises(ConfigurationError, match="needs rpc"):
        settings(node_config={"ipfs": {"backend": "rpc"}})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"fetch_timout": 3}, "unknown setting"),
        ({"fetch_timeout": 0}, "fetch_timeout"),
        ({"fetch_timeout": float("nan")}, "fetch_timeout"),
        ({"prefetch": True}, "prefetch"),
        ({"bootstrap": ["/ip4/127.0.0.1/tcp/1"]}, "lack /p2p"),
        ({"bootstrap": "all"}, "bootstrap"),
        ({"backend": "daemon"}, "backend"),
        ({"rpc": "http://127.0.0.1:5001/api", "backend": "rpc"}, "rpc"),
    ],
)
def test_bad_settings_are_refused_by_name(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        settings(node_config={"ipfs": table})


def test_loopback_only_refuses_other_addresses_and_mdns() -> None:
    assert settings(loopback_only=True, node_config={"ipfs": {"bootstrap": [LOOP]}}).bootstrap == (
        LOOP,
    )
    with pytest.raises(ConfigurationError, match="non-loopback"):
        settings(
            loopback_only=True, node_config={"ipfs": {"bootstrap": ["/ip4/8.8.8.8/tcp/4001/p2p/X"]}}
        )
    with pytest.raises(ConfigurationError, match="mdns"):
        settings(loopback_only=True, node_config={"ipfs": {"mdns": True}})
    # the [network] table is read when the option is absent
    assert settings(node_config={"network": {"loopback_only": True}}).loopback_only
    assert (
        settings(node_config={"ipfs": {"bootstrap": "kubo-default"}}).bootstrap
        == KUBO_DEFAULT_BOOTSTRAP
    )


def test_the_peer_identity_is_derived_from_the_node_key() -> None:
    # libp2p's peer id of the ed25519 key with this seed (py-libp2p computes the same)
    assert (
        kubo_identity(bytes(range(32))).peer_id
        == "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
    )
    seed = bytes(32)
    derived = derive_seed(seed, "ipfs-peer-identity")
    assert len(derived) == 32 and derived != seed
    assert kubo_identity(derived).peer_id != kubo_identity(seed).peer_id  # not the gossip id


def test_a_peer_over_its_rate_or_rejected_too_often_is_not_validated() -> None:
    now = [0.0]
    guard = InboundGuard(rate=1.0, burst=2, reject_limit=3, mute_seconds=60.0, clock=lambda: now[0])
    assert guard.admit("p") and guard.admit("p") and not guard.admit("p")
    now[0] += 1.0
    assert guard.admit("p")
    for _ in range(3):
        guard.record("q", Verdict.REJECT)
    now[0] += 10.0
    assert not guard.admit("q") and guard.counts["muted"] == 1
    now[0] += 60.0
    assert guard.admit("q")
    assert guard.counts["reject"] == 3 and guard.counts["rate"] == 1


@pytest.mark.anyio
async def test_offline_operations_start_nothing(tmp_path: Path) -> None:
    transport = IpfsTransport(node_config={"ipfs": {}})
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 1000)
    assert transport.locate(blob) == [Locator("cid", cid_of_bytes(b"x" * 1000))]
    sink = VerifyingSink(io.BytesIO(), max_length=10)
    # an ipfs:// source is not a repository: its paths are "not found" at once
    for url in ("ipfs://index.json", "ipfs://blobs/" + "0" * 64, "ipfs+rpc://127.0.0.1:1/blobs/x"):
        with pytest.raises(BlobNotFoundError):
            await transport.fetch(Locator.url(url), sink, max_length=10)
    with pytest.raises(DownloadError, match="not a CID"):
        await transport.fetch(Locator("cid", "not-a-cid"), sink, max_length=10)
    assert transport.backend is None and transport.addresses() == []
    with pytest.raises(ConfigurationError, match="message_validator"):
        transport.subscribe(["announcement"])
    with pytest.raises(ConfigurationError, match="network_id"):
        await transport.announce("announcement", b"x")
    await transport.aclose()
    with pytest.raises(DownloadError, match="closed"):
        await transport.fetch(Locator("cid", cid_of_bytes(b"")), sink, max_length=10)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
