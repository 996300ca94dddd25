"""The transport's settings: the core's standard options plus the node's ``[ipfs]`` table.

Every limit the transport applies to what peers can make it do is here, with its default:

====================== ========== ==========================================================
``[ipfs]`` key         default    meaning
====================== ========== ==========================================================
``backend``            see below  ``"embedded"`` (an in-process Kubo node, repo ``NODE/ipfs``)
                                  or ``"rpc"`` (a Kubo daemon through its RPC API)
``rpc``                none       the daemon, ``"ipfs+rpc://HOST:PORT"`` (backend ``rpc``)
``listen``             see below  multiaddrs the embedded node listens on
``port``               0          with ``loopback_only`` and no ``listen``: the TCP port on
                                  127.0.0.1 (0: any free port)
``bootstrap``          ``[]``     peers to connect to (``/ip4/.../tcp/.../p2p/ID``), or the
                                  string ``"kubo-default"`` for the public IPFS bootstrap peers
``fetch_timeout``      30         seconds a fetch may wait for any one block (the first
                                  included) before it gives up: an unknown CID fails after it
``connect_timeout``    10         seconds one connection attempt to a bootstrap peer may take
``prefetch``           32         blocks (256 KiB each) requested ahead of the one being
                                  written
``fsync``              true       make added blocks durable before they are pinned
``mdns``               false      local peer discovery (never with ``loopback_only``)
``max_message_size``   65536      pubsub payloads larger than this are dropped unread (the
                                  largest peer message the core accepts is 64 KiB)
``message_rate``       50         messages per second one peer may have validated ...
``message_burst``      200        ... with this burst; the excess is dropped before validation
``reject_limit``       10         a peer whose messages were rejected this many times ...
``mute_seconds``       300        ... is not listened to for this long
====================== ========== ==========================================================

Backend: ``[ipfs] backend`` when given; otherwise ``rpc`` when one of the node's sources is
an ``ipfs+rpc://HOST:PORT`` URL (that daemon), else ``embedded``. Listening: with the
``loopback_only`` option (``[network] loopback_only``) the embedded node listens on
``/ip4/127.0.0.1/tcp/<port>`` only and refuses every other address; otherwise on ``listen``
(default TCP 4001 on every interface). Unknown keys in ``[ipfs]`` are refused, so a typo is
an error rather than a silently ignored setting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blackhole_sync.errors import ConfigurationError

from ._config import KUBO_DEFAULT_BOOTSTRAP, is_loopback_multiaddr
from ._errors import ConfigError
from ._rpc import parse_rpc_url

__all__ = ["TABLE_KEYS", "IpfsSettings"]

#: The keys ``[ipfs]`` may hold.
TABLE_KEYS = frozenset(
    {
        "backend",
        "rpc",
        "listen",
        "port",
        "bootstrap",
        "fetch_timeout",
        "connect_timeout",
        "prefetch",
        "fsync",
        "mdns",
        "max_message_size",
        "message_rate",
        "message_burst",
        "reject_limit",
        "mute_seconds",
    }
)

#: The largest ``max_message_size`` allowed (Kubo's own pubsub limit is 1 MiB).
MAX_MESSAGE_SIZE_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True)
class IpfsSettings:
    """What one :class:`~blackhole_sync_ipfs.transport.IpfsTransport` runs with."""

    backend: str = "embedded"
    rpc_url: str | None = None
    state_dir: Path | None = None
    loopback_only: bool = False
    listen: tuple[str, ...] | None = None
    port: int = 0
    bootstrap: tuple[str, ...] = ()
    fetch_timeout: float = 30.0
    connect_timeout: float = 10.0
    prefetch: int = 32
    fsync: bool = True
    mdns: bool = False
    max_message_size: int = 64 * 1024
    message_rate: float = 50.0
    message_burst: int = 200
    reject_limit: int = 10
    mute_seconds: float = 300.0
    network_id: str | None = None
    identity_seed: bytes | None = field(default=None, repr=False)
    rate_limit: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> IpfsSettings:
        """Read the standard options (``state_dir``, ``loopback_only``, ``network_id``,
        ``identity_key``, ``rate_limit``, ``node_config``) and ``node_config["ipfs"]``.

        Raises :class:`~blackhole_sync.errors.ConfigurationError` naming the bad setting.
        """
        node_config = options.get("node_config") or {}
        if not isinstance(node_config, Mapping):
            raise ConfigurationError("node_config must be a mapping of config.toml tables")
        table = node_config.get("ipfs") or {}
        if not isinstance(table, Mapping):
            raise ConfigurationError("[ipfs] must be a table")
        unknown = sorted(set(table) - TABLE_KEYS)
        if unknown:
            raise ConfigurationError(
                f"[ipfs]: unknown setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(TABLE_KEYS))})"
            )
        loopback = options.get("loopback_only")
        if loopback is None:  # the core passes [network] loopback_only as the option; else read it
            network_table = node_config.get("network") or {}
            loopback = isinstance(network_table, Mapping) and network_table.get("loopback_only")
        loopback_only = bool(loopback)
        rpc_url = _opt_str(table, "rpc")
        backend = _opt_str(table, "backend")
        if backend is None:
            source_rpc = _rpc_source(node_config.get("sources") or ())
            if rpc_url is None and source_rpc is not None:
                rpc_url = source_rpc
            backend = "rpc" if rpc_url is not None else "embedded"
        if backend not in ("embedded", "rpc"):
            raise ConfigurationError(f"[ipfs] backend must be 'embedded' or 'rpc', not {backend!r}")
        if backend == "rpc":
            if rpc_url is None:
                raise ConfigurationError(
                    "[ipfs] backend 'rpc' needs rpc = 'ipfs+rpc://HOST:PORT' "
                    "(or an ipfs+rpc:// source)"
                )
            try:
                rpc_url = str(parse_rpc_url(rpc_url))
            except ConfigError as exc:
                raise ConfigurationError(f"[ipfs] rpc: {exc}") from None
        listen = _opt_addrs(table, "listen")
        bootstrap = _bootstrap(table.get("bootstrap"))
        if loopback_only:
            bad = [a for a in (*bootstrap, *(listen or ())) if not is_loopback_multiaddr(a)]
            if bad:
                raise ConfigurationError(
                    f"[ipfs]: loopback-only node given non-loopback addresses {bad}"
                )
        state_dir = options.get("state_dir")
        identity = options.get("identity_key")
        if identity is not None and (not isinstance(identity, bytes) or len(identity) != 32):
            raise ConfigurationError("identity_key must be the node's 32-byte ed25519 seed")
        network_id = options.get("network_id")
        if network_id is not None and not isinstance(network_id, str):
            raise ConfigurationError("network_id must be a string")
        rate_limit = options.get("rate_limit")
        if rate_limit is not None and (not isinstance(rate_limit, int) or rate_limit < 0):
            raise ConfigurationError("rate_limit must be a number of bytes per second")
        settings = cls(
            backend=backend,
            rpc_url=rpc_url,
            state_dir=None if state_dir is None else Path(os.path.abspath(state_dir)),
            loopback_only=loopback_only,
            listen=listen,
            port=_int(table, "port", 0, 0, 65535),
            bootstrap=bootstrap,
            fetch_timeout=_number(table, "fetch_timeout", 30.0, 0.1, 3600.0),
            connect_timeout=_number(table, "connect_timeout", 10.0, 0.1, 600.0),
            prefetch=_int(table, "prefetch", 32, 1, 256),
            fsync=_bool(table, "fsync", True),
            mdns=_bool(table, "mdns", False),
            max_message_size=_int(table, "max_message_size", 64 * 1024, 1, MAX_MESSAGE_SIZE_LIMIT),
            message_rate=_number(table, "message_rate", 50.0, 0.01, 10_000.0),
            message_burst=_int(table, "message_burst", 200, 1, 100_000),
            reject_limit=_int(table, "reject_limit", 10, 1, 1_000_000),
            mute_seconds=_number(table, "mute_seconds", 300.0, 0.0, 86_400.0),
            network_id=network_id,
            identity_seed=identity,
            rate_limit=rate_limit or None,
        )
        if settings.mdns and settings.loopback_only:
            raise ConfigurationError("[ipfs] mdns cannot be on with [network] loopback_only")
        return settings


def _rpc_source(sources: Sequence[Any]) -> str | None:
    """The first ``ipfs+rpc://HOST:PORT`` source, without its trailing slash."""
    for source in sources:
        if isinstance(source, str) and source.lower().startswith("ipfs+rpc://"):
            return source.rstrip("/")
    return None


def _opt_str(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"[ipfs] {key} must be a string")
    return value


def _opt_addrs(table: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"[ipfs] {key} must be a list of multiaddrs")
    return tuple(value)


def _bootstrap(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if value == "kubo-default":
        return KUBO_DEFAULT_BOOTSTRAP
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(
            "[ipfs] bootstrap must be a list of multiaddrs (/ip4/.../tcp/.../p2p/ID) "
            "or 'kubo-default'"
        )
    bad = [v for v in value if "/p2p/" not in v]
    if bad:
        raise ConfigurationError(f"[ipfs] bootstrap: {bad} lack /p2p/<peer id>")
    return tuple(value)


def _bool(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"[ipfs] {key} must be true or false")
    return value


def _int(table: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"[ipfs] {key} must be an integer in {low}..{high}")
    return value


def _number(table: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"[ipfs] {key} must be a number")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ConfigurationError(f"[ipfs] {key} must be in {low:g}..{high:g}")
    return number
