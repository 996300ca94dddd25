"""The transport's settings: the core's standard options plus the node's ``[bittorrent]`` table.

Every limit and timing the transport applies is here, with its default:

======================= ========== =========================================================
``[bittorrent]`` key    default    meaning
======================= ========== =========================================================
``port``                0          TCP and UDP port of the session and its DHT node (0: any
                                   free port)
``listen_host``         0.0.0.0    address to listen on (``127.0.0.1`` with ``loopback_only``)
``peers``               ``[]``     ``"host:port"`` peers every download connects to (the
                                   origin's seed; more are found through the DHT and PEX)
``dht``                 true       run a DHT node (peers, BEP 44 announcements)
``dht_bootstrap``       ``[]``     ``"host:port"`` DHT nodes to join through
``dht_routers``         see below  ``"host:port"`` bootstrap routers; absent: libtorrent's
                                   public routers, never with ``loopback_only``
``dht_poll_interval``   300        seconds between BEP 44 lookups of the announcement while
                                   subscribed (the first one 10 s after subscribing)
``republish_interval``  3600       seconds between re-puts of the announcement item (items
                                   expire after about 2 hours)
``republish``           true       a node re-puts the newest announcement its gate accepted
                                   (as signed: no key needed), so the DHT keeps it alive
``upload_limit``        0          bytes per second the session uploads (0: no limit)
``download_limit``      see below  bytes per second (default: the node's ``bandwidth_limit``)
``seed_policy``         ``kept``   which kept blobs ``seed`` offers: ``kept`` (every one the
                                   agent passes: the current and the previous version's),
                                   ``current`` (the newest version's only), ``none``
``seed_ratio``          0          stop seeding a blob once it uploaded this many copies
                                   (0: no limit)
``seed_time``           0          stop seeding a blob this many seconds after it was first
                                   seeded (0: no limit)
``super_seeding``       true       ``publish`` (the origin) seeds in BEP 16 super-seeding mode:
                                   each peer gets pieces nobody else has, so the origin sends
                                   about one copy
``web_seed``            true       use the node's http(s) sources as BEP 19 web seeds when the
                                   swarm (peers were there) stalls
``stall_timeout``       10         seconds without a verified byte that count as a stall
``peer_timeout``        10         seconds a download waits for a first peer; then it fails
                                   and the core uses its own sources (at once when none of
                                   ``peers``, ``dht_bootstrap``, ``dht_routers`` is set)
``give_up_after``       30         seconds without a verified byte (web seeds added or not
                                   possible) after which a download fails, for the fallback
``max_connections``     200        connections of the session
======================= ========== =========================================================

Unknown keys are refused, so a typo is an error rather than a silently ignored setting. With
the ``loopback_only`` option (``[network] loopback_only``) every address (peers, DHT nodes)
must be a loopback address.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blackhole_sync.errors import ConfigurationError

__all__ = ["SEED_POLICIES", "TABLE_KEYS", "BittorrentSettings", "parse_address"]

#: The keys ``[bittorrent]`` may hold.
TABLE_KEYS = frozenset(
    {
        "port",
        "listen_host",
        "peers",
        "dht",
        "dht_bootstrap",
        "dht_routers",
        "dht_poll_interval",
        "republish_interval",
        "republish",
        "upload_limit",
        "download_limit",
        "seed_policy",
        "seed_ratio",
        "seed_time",
        "super_seeding",
        "web_seed",
        "stall_timeout",
        "peer_timeout",
        "give_up_after",
        "max_connections",
    }
)

#: Values of ``seed_policy``.
SEED_POLICIES = ("kept", "current", "none")

Address = tuple[str, int]


def parse_address(text: str, what: str) -> Address:
    """``"host:port"`` (``"[v6]:port"``) -> (host, port); :class:`ConfigurationError` if bad."""
    if not isinstance(text, str):
        raise ConfigurationError(f"[bittorrent] {what}: expected \"host:port\", got {text!r}")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"[bittorrent] {what}: expected \"host:port\", got {text!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class BittorrentSettings:
    """What one :class:`~blackhole_sync_bittorrent.transport.BittorrentTransport` runs with."""

    state_dir: Path | None = None
    loopback_only: bool = False
    network_id: str | None = None
    channel: str = "stable"
    sources: tuple[str, ...] = ()
    index_key: bytes | None = field(default=None, repr=False)
    index_keys: Callable[[], Iterable[bytes]] | None = field(default=None, repr=False)
    tls: Mapping[str, str] = field(default_factory=dict)
    port: int = 0
    listen_host: str = "0.0.0.0"  # noqa: S104 - only without loopback_only
    peers: tuple[Address, ...] = ()
    dht: bool = True
    dht_bootstrap: tuple[Address, ...] = ()
    dht_routers: tuple[Address, ...] | None = None
    dht_poll_interval: float = 300.0
    republish_interval: float = 3600.0
    republish: bool = True
    upload_limit: int = 0
    download_limit: int = 0
    seed_policy: str = "kept"
    seed_ratio: float = 0.0
    seed_time: float = 0.0
    super_seeding: bool = True
    web_seed: bool = True
    stall_timeout: float = 10.0
    peer_timeout: float = 10.0
    give_up_after: float = 30.0
    max_connections: int = 200

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BittorrentSettings:
        """Read the standard options (``state_dir``, ``loopback_only``, ``network_id``,
        ``rate_limit``, ``node_config``, ``ca_file``/``cert_file``/``key_file``), the
        ``index_key`` seed (the origin, given ``serve --index-key``), ``index_keys`` (a
        callable: the trusted root's index keys) and ``node_config["bittorrent"]``.

        Raises :class:`~blackhole_sync.errors.ConfigurationError` naming the bad setting.
        """
        node_config = options.get("node_config") or {}
        if not isinstance(node_config, Mapping):
            raise ConfigurationError("node_config must be a mapping of config.toml tables")
        table = node_config.get("bittorrent") or {}
        if not isinstance(table, Mapping):
            raise ConfigurationError("[bittorrent] must be a table")
        unknown = sorted(set(table) - TABLE_KEYS)
        if unknown:
            raise ConfigurationError(
                f"[bittorrent]: unknown setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(TABLE_KEYS))})"
            )
        loopback = options.get("loopback_only")
        if loopback is None:
            network = node_config.get("network") or {}
            loopback = isinstance(network, Mapping) and network.get("loopback_only")
        loopback_only = bool(loopback)
        peers = _addresses(table, "peers")
        bootstrap = _addresses(table, "dht_bootstrap")
        routers = None if table.get("dht_routers") is None else _addresses(table, "dht_routers")
        if loopback_only:
            bad = [f"{h}:{p}" for h, p in (*peers, *bootstrap) if not _is_loopback(h)]
            if bad:
                raise ConfigurationError(
                    f"[bittorrent]: loopback-only node given non-loopback addresses {bad}"
                )
        index_key = options.get("index_key")
        if index_key is not None and (not isinstance(index_key, bytes) or len(index_key) != 32):
            raise ConfigurationError("index_key must be the index key's 32-byte ed25519 seed")
        index_keys = options.get("index_keys")
        if index_keys is not None and not callable(index_keys):
            keys = tuple(index_keys)
            index_keys = lambda: keys  # noqa: E731 - a constant list given as such
        network_id = options.get("network_id")
        if network_id is not None and not isinstance(network_id, str):
            raise ConfigurationError("network_id must be a string")
        rate_limit = options.get("rate_limit")
        if rate_limit is not None and (not isinstance(rate_limit, int) or rate_limit < 0):
            raise ConfigurationError("rate_limit must be a number of bytes per second")
        channel = node_config.get("channel") or "stable"
        if not isinstance(channel, str):
            raise ConfigurationError("channel must be a string")
        sources = node_config.get("sources") or ()
        if not isinstance(sources, Sequence) or not all(isinstance(s, str) for s in sources):
            raise ConfigurationError("sources must be a list of URLs")
        state_dir = options.get("state_dir")
        tls = {k: str(options[k]) for k in ("ca_file", "cert_file", "key_file") if options.get(k)}
        seed_policy = table.get("seed_policy", "kept")
        if seed_policy not in SEED_POLICIES:
            raise ConfigurationError(
                f"[bittorrent] seed_policy must be one of {', '.join(SEED_POLICIES)}"
            )
        return cls(
            state_dir=None if state_dir is None else Path(os.path.abspath(state_dir)),
            loopback_only=loopback_only,
            network_id=network_id,
            channel=channel,
            sources=tuple(sources),
            index_key=index_key,
            index_keys=index_keys,
            tls=tls,
            port=_int(table, "port", 0, 0, 65535),
            listen_host=_str(table, "listen_host", "0.0.0.0"),  # noqa: S104
            peers=peers,
            dht=_bool(table, "dht", True),
            dht_bootstrap=bootstrap,
            dht_routers=routers,
            dht_poll_interval=_number(table, "dht_poll_interval", 300.0, 1.0, 86_400.0),
            republish_interval=_number(table, "republish_interval", 3600.0, 60.0, 7200.0),
            republish=_bool(table, "republish", True),
            upload_limit=_int(table, "upload_limit", 0, 0, 2**40),
            download_limit=_int(table, "download_limit", rate_limit or 0, 0, 2**40),
            seed_policy=seed_policy,
            seed_ratio=_number(table, "seed_ratio", 0.0, 0.0, 1e6),
            seed_time=_number(table, "seed_time", 0.0, 0.0, 10 * 365 * 86_400.0),
            super_seeding=_bool(table, "super_seeding", True),
            web_seed=_bool(table, "web_seed", True),
            stall_timeout=_number(table, "stall_timeout", 10.0, 0.5, 3600.0),
            peer_timeout=_number(table, "peer_timeout", 10.0, 0.5, 3600.0),
            give_up_after=_number(table, "give_up_after", 30.0, 1.0, 3600.0),
            max_connections=_int(table, "max_connections", 200, 2, 65_535),
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _addresses(table: Mapping[str, Any], key: str) -> tuple[Address, ...]:
    value = table.get(key) or []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError(f"[bittorrent] {key} must be a list of \"host:port\" strings")
    return tuple(parse_address(item, key) for item in value)


def _str(table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"[bittorrent] {key} must be a non-empty string")
    return value


def _bool(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"[bittorrent] {key} must be true or false")
    return value


def _int(table: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"[bittorrent] {key} must be an integer in {low}..{high}")
    return value


def _number(table: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"[bittorrent] {key} must be a number")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ConfigurationError(f"[bittorrent] {key} must be in {low:g}..{high:g}")
    return number
