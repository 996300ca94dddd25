"""The gossip transport's settings: the core's transport options and the ``[gossip]`` table.

Where each setting comes from, first match wins:

1. the transport options the core passes (``STANDARD_OPTIONS``): ``network_id``,
   ``identity_key``, ``loopback_only``, ``listen``, ``bootstrap``, plus this plugin's own
   ``hello``, ``admit`` and ``admit_without_hello``;
2. the ``[gossip]`` table of the node's ``config.toml`` (the ``node_config`` option; for the
   origin, the ``--peer-config`` file);
3. the engine's defaults (:class:`~blackhole_sync_gossip.GossipConfig`).

``[gossip]`` keys (every one optional)::

    listen = "/ip4/0.0.0.0/tcp/4001"          # where to listen (TCP, IPv4); port 0: any free one
    bootstrap = ["/ip4/198.51.100.7/tcp/4001/p2p/12D3KooW..."]   # peers to dial first
    admit_without_hello = false               # admit peers that speak no /blackhole/hello/1 (Kubo)
    announce_wait = 5.0                       # seconds announce() waits for a first mesh peer
    query_wait = 5.0                          # seconds query() waits for a first peer
    peer_cache = true                         # remember peers in NODE/gossip/peers.json
    # limits (see GossipConfig): max_message_size, peer_rate_per_second, peer_rate_burst,
    # seen_cache_size, seen_ttl, inbound_queue_size, max_inbound_peers, max_outbound_peers,
    # target_outbound_peers, max_known_peers, max_addrs_per_peer, dial_timeout,
    # dial_backoff_initial, dial_backoff_max, peer_exchange_interval, peer_exchange_max_peers,
    # query_timeout, query_max_peers, query_max_items, query_rate_per_second,
    # query_rate_burst, mesh_degree, mesh_degree_low, mesh_degree_high, heartbeat_interval,
    # hello_timeout, max_kinds, gossip_px
    [gossip.score]                            # peer scoring (see ScoreConfig)
    graylist_threshold = -50.0

An unknown key in ``[gossip]`` is a :class:`~blackhole_sync.ConfigurationError` (a typo must
not silently leave a limit at its default); unknown transport *options* are ignored, as the
transport API requires.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from blackhole_sync import ConfigurationError

from ._config import GossipConfig, ScoreConfig

__all__ = ["TransportSettings", "settings_from_options"]

#: ``[gossip]`` keys that set a GossipConfig field of the same name, with their type.
_LIMIT_KEYS: dict[str, type] = {
    "max_message_size": int,
    "peer_rate_per_second": float,
    "peer_rate_burst": int,
    "seen_cache_size": int,
    "seen_ttl": float,
    "inbound_queue_size": int,
    "max_inbound_peers": int,
    "max_outbound_peers": int,
    "target_outbound_peers": int,
    "max_known_peers": int,
    "max_addrs_per_peer": int,
    "dial_timeout": float,
    "dial_backoff_initial": float,
    "dial_backoff_max": float,
    "peer_exchange_interval": float,
    "peer_exchange_max_peers": int,
    "query_timeout": float,
    "query_max_peers": int,
    "query_max_items": int,
    "query_rate_per_second": float,
    "query_rate_burst": int,
    "mesh_degree": int,
    "mesh_degree_low": int,
    "mesh_degree_high": int,
    "heartbeat_interval": int,
    "hello_timeout": float,
    "max_kinds": int,
    "gossip_px": bool,
    "admit_without_hello": bool,
}
_ADAPTER_KEYS = {"listen", "bootstrap", "announce_wait", "query_wait", "peer_cache", "score"}
_SCORE_KEYS = {f.name: f.type for f in fields(ScoreConfig)}
_LISTEN = re.compile(r"^/ip4/(?P<host>[0-9.]+)/tcp/(?P<port>[0-9]{1,5})$")
#: Peers kept in the peer cache file.
PEER_CACHE_SIZE = 64
#: The default network id (the root's default).
DEFAULT_NETWORK = "blackhole"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """What the transport runs with: the engine's config and the adapter's own settings."""

    engine: GossipConfig
    #: Seconds announce() waits for a first mesh peer of the kind (a one-shot announcer).
    announce_wait: float = 5.0
    #: Seconds query() waits for a first admitted peer (a node that just started).
    query_wait: float = 5.0
    #: The file peers are remembered in across restarts (None: not remembered).
    peer_cache: Path | None = None
    #: ``admit(peer_id, hello) -> bool`` for peers that say hello (None: equal hellos).
    admit: Callable[[str, bytes], bool] | None = None
    #: Where each setting came from, for diagnostics.
    sources: Mapping[str, str] | None = None


def _number(value: Any, kind: type, key: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigurationError(f"[gossip] {key} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"[gossip] {key} must be a number")
    if kind is int:
        if not isinstance(value, int):
            raise ConfigurationError(f"[gossip] {key} must be an integer")
        return value
    return float(value)


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"gossip {key} must be a list of multiaddr strings")
    return tuple(value)


def _listen(value: Any) -> tuple[str, int]:
    """``/ip4/HOST/tcp/PORT`` (a list: its first entry) -> (host, port)."""
    entries = _strings(value, "listen")
    if not entries:
        raise ConfigurationError("gossip listen is empty")
    match = _LISTEN.match(entries[0])
    if match is None or int(match["port"]) > 65535:
        raise ConfigurationError(
            f"gossip listen {entries[0]!r} must look like /ip4/0.0.0.0/tcp/4001"
        )
    return match["host"], int(match["port"])


def _table(options: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    node_config = options.get("node_config") or {}
    if not isinstance(node_config, Mapping):
        raise ConfigurationError("node_config must be a mapping of tables")
    table = node_config.get(name) or {}
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"[{name}] must be a table")
    return table


def settings_from_options(options: Mapping[str, Any]) -> TransportSettings:
    """Build the settings from the transport options (see the module docstring)."""
    table = _table(options, "gossip")
    unknown = sorted(set(table) - set(_LIMIT_KEYS) - _ADAPTER_KEYS)
    if unknown:
        raise ConfigurationError(f"[gossip] has unknown keys: {', '.join(unknown)}")
    sources: dict[str, str] = {}
    engine: dict[str, Any] = {}
    for key, kind in _LIMIT_KEYS.items():
        if key in table:
            engine[key] = _number(table[key], kind, key)
            sources[key] = "[gossip]"
    if options.get("admit_without_hello") is not None:
        engine["admit_without_hello"] = bool(options["admit_without_hello"])
        sources["admit_without_hello"] = "option"

    score_table = table.get("score") or {}
    if not isinstance(score_table, Mapping):
        raise ConfigurationError("[gossip.score] must be a table")
    bad = sorted(set(score_table) - set(_SCORE_KEYS))
    if bad:
        raise ConfigurationError(f"[gossip.score] has unknown keys: {', '.join(bad)}")
    score = {
        k: _number(v, int if k == "retain_max_peers" else float, f"score.{k}")
        for k, v in score_table.items()
    }

    network_table = _table(options, "network")
    loopback = options.get("loopback_only")
    if loopback is None:
        loopback = network_table.get("loopback_only", False)
    sources["loopback_only"] = "option" if options.get("loopback_only") is not None else "config"

    if options.get("listen"):
        host, port = _listen(options["listen"])
        sources["listen"] = "option"
    elif "listen" in table:
        host, port = _listen(table["listen"])
        sources["listen"] = "[gossip]"
    else:
        host, port = "0.0.0.0", 0  # noqa: S104 - a public node must be reachable
        sources["listen"] = "default"
    if options.get("bootstrap"):
        bootstrap = _strings(options["bootstrap"], "bootstrap")
        sources["bootstrap"] = "option"
    else:
        bootstrap = _strings(table.get("bootstrap", []), "bootstrap")
        sources["bootstrap"] = "[gossip]" if "bootstrap" in table else "default"

    network = str(options.get("network_id") or DEFAULT_NETWORK)
    seed = options.get("identity_key")
    if seed is None:
        seed = os.urandom(32)  # no node identity (a one-shot tool): an ephemeral peer id
        sources["identity_key"] = "ephemeral"
    else:
        sources["identity_key"] = "option"
    hello = options.get("hello")
    if hello is None:
        hello = network.encode()
        sources["hello"] = "network id"
    elif isinstance(hello, str):
        hello = hello.encode()
    admit = options.get("admit")
    if admit is not None and not callable(admit):
        raise ConfigurationError("the gossip 'admit' option must be callable")

    state_dir = options.get("state_dir")
    peer_cache_on = table.get("peer_cache", True)
    if not isinstance(peer_cache_on, bool):
        raise ConfigurationError("[gossip] peer_cache must be true or false")
    peer_cache = Path(state_dir) / "peers.json" if state_dir and peer_cache_on else None

    waits = {}
    for key in ("announce_wait", "query_wait"):
        if key in table:
            value = _number(table[key], float, key)
            if not 0 <= value <= 300:
                raise ConfigurationError(f"[gossip] {key} must be within 0 .. 300 seconds")
            waits[key] = value

    try:
        config = GossipConfig(
            network=network,
            identity_seed=bytes(seed),
            loopback_only=bool(loopback),
            listen_host=host,
            listen_port=port,
            bootstrap=bootstrap,
            hello=bytes(hello),
            cached_peers=_read_peer_cache(peer_cache),
            score=ScoreConfig(**score),
            **engine,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"gossip settings: {exc}") from exc
    return TransportSettings(
        engine=config, peer_cache=peer_cache, admit=admit, sources=sources, **waits
    )


def _read_peer_cache(path: Path | None) -> tuple[str, ...]:
    """Peers remembered by an earlier run; a missing or damaged file is an empty cache."""
    import json

    if path is None:
        return ()
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(256 * 1024))
    except (OSError, ValueError):
        return ()
    peers = data.get("peers") if isinstance(data, dict) else None
    if not isinstance(peers, list):
        return ()
    return tuple(p for p in peers if isinstance(p, str) and len(p) < 512)[:PEER_CACHE_SIZE]


def write_peer_cache(path: Path, peers: list[str]) -> None:
    """Remember ``peers`` (temporary file, fsync, ``os.replace``)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps({"peers": peers[:PEER_CACHE_SIZE]}, indent=1).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
