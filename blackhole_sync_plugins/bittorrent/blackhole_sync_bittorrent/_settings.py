"""Session configuration: the settings pack and the peer class filter.

:func:`build_settings` turns an :class:`EngineConfig` into libtorrent's settings dictionary;
the engine applies it when it opens the session, and :meth:`Engine.get_settings` returns what
libtorrent reports back (``session.get_settings()``), so a test can check the effective values.

``loopback_only=True`` (the default, so that nothing reaches the network by accident) means:
no UPnP, no NAT-PMP, no local service discovery (LSD), no public DHT bootstrap routers, no
WebTorrent STUN server, peers over TCP only (no uTP: see :func:`build_settings`; this one
``extra_settings`` may undo), listening on ``127.0.0.1`` only (``listen_port`` or an
ephemeral port), outgoing connections bound to ``127.0.0.1``, an IP filter blocking every
other address for peers and DHT nodes (:func:`loopback_ip_filter`), and the DHT accepting
several nodes per IP (``dht_restrict_routing_ips``, ``dht_restrict_search_ips``, ``dht_ignore_dark_internet`` and
``dht_enforce_node_id`` off: every local node shares 127.0.0.1). Several peers per IP are
always allowed (a swarm on one host, or nodes behind one NAT).

Rate limits and loopback: libtorrent puts peers on loopback and private networks in its "local"
peer class, which ignores rate limits. With ``limit_local_peers=True`` (the default) a peer
class filter puts every address in the global class instead, so the upload and download
limits hold for every peer, loopback included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import libtorrent as lt

__all__ = ["EngineConfig", "build_settings", "loopback_ip_filter", "peer_class_filter"]

_PUBLIC_DHT_ROUTERS: Final = "dht.libtorrent.org:25401,router.bittorrent.com:6881"

_ALERTS: Final = (
    lt.alert.category_t.error_notification
    | lt.alert.category_t.status_notification
    | lt.alert.category_t.storage_notification
    | lt.alert.category_t.peer_notification
    | lt.alert.category_t.connect_notification
    | lt.alert.category_t.ip_block_notification
    | lt.alert.category_t.block_progress_notification
    | lt.alert.category_t.dht_notification
    | lt.alert.category_t.dht_operation_notification
)
"""Alert categories the engine drains (block progress attributes bytes to web seeds)."""


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine's session is built from.

    ``state_dir`` holds resume data (``<btih>.fastresume``). Rates are bytes per second, 0 for
    no limit. ``dht_nodes`` are ``(host, port)`` pairs given to ``add_dht_node`` (known nodes,
    e.g. local ones in tests); ``dht_routers`` replace the public bootstrap routers when not
    loopback-only. ``local_dht`` turns the four DHT IP restrictions off (default: as
    ``loopback_only``). The timing fields drive the engine's own loop.
    """

    state_dir: Path
    loopback_only: bool = True
    listen_port: int = 0
    listen_host: str = "0.0.0.0"  # noqa: S104 - only used when loopback_only is False
    upload_rate_limit: int = 0
    download_rate_limit: int = 0
    limit_local_peers: bool = True
    enable_dht: bool = True
    dht_nodes: Sequence[tuple[str, int]] = ()
    dht_routers: Sequence[tuple[str, int]] | None = None
    local_dht: bool | None = None
    dht_announce_interval: int = 900
    max_connections: int = 200
    alert_queue_size: int = 20_000
    tick_interval: float = 0.5
    resume_save_interval: float = 30.0
    extra_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.listen_port <= 65535:
            raise ValueError("listen_port must be 0..65535")
        if self.upload_rate_limit < 0 or self.download_rate_limit < 0:
            raise ValueError("rate limits are >= 0 (0: no limit)")
        if self.tick_interval <= 0 or self.resume_save_interval <= 0:
            raise ValueError("intervals must be positive")

    @property
    def bind_host(self) -> str:
        """The address the session listens on and connects from."""
        return "127.0.0.1" if self.loopback_only else self.listen_host


def build_settings(config: EngineConfig) -> dict[str, Any]:
    """The libtorrent settings dictionary for ``config`` (see the module docstring)."""
    local_dht = config.loopback_only if config.local_dht is None else config.local_dht
    if config.loopback_only:
        routers = ""
    elif config.dht_routers is None:
        routers = _PUBLIC_DHT_ROUTERS
    else:
        routers = ",".join(f"{host}:{port}" for host, port in config.dht_routers)
    settings: dict[str, Any] = {
        "listen_interfaces": f"{config.bind_host}:{config.listen_port}",
        "enable_upnp": False if config.loopback_only else True,
        "enable_natpmp": False if config.loopback_only else True,
        "enable_lsd": False if config.loopback_only else True,
        "enable_dht": config.enable_dht,
        "dht_bootstrap_nodes": routers,
        "dht_restrict_routing_ips": not local_dht,
        "dht_restrict_search_ips": not local_dht,
        "dht_ignore_dark_internet": not local_dht,
        "dht_enforce_node_id": False if local_dht else True,
        "dht_announce_interval": config.dht_announce_interval,
        "allow_multiple_connections_per_ip": True,
        "upload_rate_limit": config.upload_rate_limit,
        "download_rate_limit": config.download_rate_limit,
        "connections_limit": config.max_connections,
        "alert_mask": int(_ALERTS),
        "alert_queue_size": config.alert_queue_size,
        "ssrf_mitigation": True,
        "apply_filter_to_dht": True,
        # Transfers are managed by the engine, not by libtorrent's queue.
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
    }
    if config.loopback_only:
        # TCP only: uTP's congestion control has nothing to yield to on loopback, and it runs
        # in user space -- with many sessions on one host it costs the CPU the swarm needs
        # (two sessions: 42 MB/s over TCP, 13 to 21 MB/s uTP first). extra_settings may undo it.
        settings.update(enable_outgoing_utp=False, enable_incoming_utp=False)
    settings.update(config.extra_settings)
    if config.loopback_only:
        # Applied last: extra_settings cannot reopen a path off the host.
        settings.update(
            listen_interfaces=f"127.0.0.1:{config.listen_port}",
            outgoing_interfaces="127.0.0.1",
            enable_upnp=False,
            enable_natpmp=False,
            enable_lsd=False,
            dht_bootstrap_nodes="",
            webtorrent_stun_server="",
            proxy_type=0,
        )
    return settings


def peer_class_filter() -> lt.ip_filter:
    """An IP filter mapping every IPv4 and IPv6 address to the global peer class only."""
    mask = 1 << lt.session.global_peer_class_id
    filt = lt.ip_filter()
    filt.add_rule("0.0.0.0", "255.255.255.255", mask)  # noqa: S104 - an address range, not a bind
    filt.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", mask)
    return filt


def loopback_ip_filter() -> lt.ip_filter:
    """An IP filter that blocks every address but 127.0.0.0/8 and ::1 (peers and, as
    ``apply_filter_to_dht`` is on, DHT nodes): with ``loopback_only`` nothing else is reached
    even if a peer or a DHT node hands out other addresses."""
    filt = lt.ip_filter()
    filt.add_rule("0.0.0.0", "255.255.255.255", 1)  # noqa: S104 - an address range, not a bind
    filt.add_rule("127.0.0.0", "127.255.255.255", 0)
    filt.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    filt.add_rule("::1", "::1", 0)
    return filt
