"""The node's configuration: ``NODE/config.toml``.

The file's schema is spelled out three times on purpose, side by side so they stay in step:
the validating parser (:meth:`NodeConfig.from_dict`), the writer (:meth:`NodeConfig.to_dict`)
and the commented file ``node init`` writes (:func:`default_config_text`). The TOML mechanics
(strict table reader, in-place editing) are in ``_toml.py``.

Read with :mod:`tomllib` (one reader, :func:`read_config_document`, also behind
:func:`read_node_attributes`) and validated strictly: an unknown key, a value of the wrong type
or out of range raises :class:`~blackhole_sync.errors.ConfigurationError` naming the key
(``config.toml: policy.automatic.max_downtime: expected an integer >= 0, got "5m"``).
``node init`` writes :func:`default_config_text`; ``set_update_policy`` persists changes with
:func:`write_config` (atomic), which edits the existing file with :mod:`tomlkit` so the
operator's comments and layout are kept.

Layout (every key optional except ``sources``; durations are whole seconds)::

    sources = ["https://updates.example.net/repo", "/mnt/mirror"]
    channel = "stable"
    platform = "linux"            # default: platform.system().lower()
    arch = "x86_64"               # default: platform.machine()
    check_interval = 3600         # seconds between checks by `node run`
    bandwidth_limit = 0           # bytes per second, 0 = unlimited
    deltas = true                 # fetch delta patches when possible
    peers_first = false           # peer transports (IPFS CIDs, ...) before the sources
    delta_memory_budget = 1073741824  # bytes: a patch needing more to apply -> full download
    keep_versions = 3             # installed versions kept by pruning

    [node]        region, node_type, protocol_versions (the protocols the host runs)
    [policy]      mode = "automatic" | "manual"
    [policy.automatic]  enabled, allowed_types, max_downtime, require_health_check,
                        backup_before_update, delay_after_release,
                        wait_for_network_consensus (a release an activation proposal
                        names waits for its activation); consensus_threshold is refused:
                        the signed proposal's ``threshold_bp`` decides
    [policy.manual]     notify_on_new_updates, notification_channels, auto_download,
                        download_bandwidth_limit, require_user_confirmation, allow_deferral,
                        max_deferral_count, deferral_period
    [policy.critical]   auto_install_critical, override_user_preferences,
                        override_scheduling, emergency_rollback, notify_after_install
    [window]      days, start, end, timezone  (the automatic policy's update window)
    [commands]    self_test, health, restart, metrics (argv lists), health_timeout,
                  health_window
    [regression]  samples, watch_seconds, interval, [regression.thresholds] (basis points)
    [plugins]     autoload, block
    [webhook]     url, timeout, [webhook.headers]  (the "webhook" notification channel)

One concern, one module (over 700 lines): the schema of ``config.toml`` -- each table's model,
its strict parse with the bad key named, and the commented default file -- kept together so a
setting cannot be added to one and forgotten in another.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform as _platform
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from attrs import evolve, field, frozen

from .._fsutil import write_atomic
from ..documents import UPDATE_TYPES, Command
from ..errors import ConfigurationError
from . import _toml
from .layout import CONFIG_FILE, NodeLayout
from .policy import (
    DAY_NAMES,
    MODES,
    AutomaticUpdatePolicy,
    CriticalUpdatePolicy,
    ManualUpdatePolicy,
    TimeWindow,
    UpdatePolicy,
)

__all__ = [
    "CONFIG_FILE",
    "NetworkSettings",
    "PLUGIN_TABLES",
    "Commands",
    "NodeAttributes",
    "NodeConfig",
    "PluginSettings",
    "RegressionSettings",
    "WebhookSettings",
    "default_config_text",
    "dumps_toml",
    "load_config",
    "read_config_document",
    "read_node_attributes",
    "write_config",
]

#: Refuse configuration files larger than this.
MAX_CONFIG_BYTES: Final = 1024 * 1024
#: Default ``delta_memory_budget``: the most memory (bytes) applying one patch may need; a
#: patch chain needing more is not taken and the artifact is downloaded whole.
DEFAULT_DELTA_MEMORY_BUDGET: Final = 1024 * 1024 * 1024

_CHANNEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_HHMM_RE = re.compile(r"([01]\d|2[0-3]):[0-5]\d\Z")
_HEADER_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}\Z")


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of strings, not one string")
    return tuple(value)


def _int_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _default_platform() -> str:
    return _platform.system().lower() or "any"


def _default_arch() -> str:
    return _platform.machine() or "any"


@frozen
class NodeAttributes:
    """``[node]``: attributes that scoped configuration changes and rollout plans select
    nodes by, and the protocol versions the host runs (``protocol_versions``; the
    ``blackhole_sync_protocol_versions`` hook answers instead when a plugin implements it).
    A release whose compatibility names protocols none of which the node runs is refused."""

    region: str = ""
    node_type: str = ""
    protocol_versions: tuple[int, ...] = field(default=(), converter=_int_tuple)


@frozen
class Commands:
    """Operator commands (argv lists; empty = none) and health-check timing in seconds.

    ``self_test`` runs in the sandbox on a staged tree; ``health`` after the switch, within
    ``health_timeout``; the node is then watched for ``health_window`` seconds (0 = only the
    one check); ``restart`` restarts the node's service after a switch; ``metrics`` prints
    one JSON object of numbers about the running version (regression detection, see
    :class:`RegressionSettings`), within ``health_timeout``.
    """

    self_test: tuple[str, ...] = field(default=(), converter=_str_tuple)
    health: tuple[str, ...] = field(default=(), converter=_str_tuple)
    restart: tuple[str, ...] = field(default=(), converter=_str_tuple)
    metrics: tuple[str, ...] = field(default=(), converter=_str_tuple)
    health_timeout: int = 60
    health_window: int = 0


@frozen
class WebhookSettings:
    """Where the built-in ``webhook`` notification channel posts. Empty ``url``: not set."""

    url: str = ""
    timeout: float = 10.0
    headers: Mapping[str, str] = field(factory=dict)


@frozen
class TLSSettings:
    """TLS for https sources (passed to transports as ``ca_file``/``cert_file``/``key_file``)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def transport_options(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("ca_file", self.ca_file),
                ("cert_file", self.cert_file),
                ("key_file", self.key_file),
            )
            if v
        }


@frozen
class NetworkSettings:
    """``[network]``: the node's peer-to-peer side (gossip, the DHT, IPFS pubsub).

    ``loopback_only`` keeps every peer-to-peer stack on 127.0.0.1: no UPnP, NAT-PMP, LSD, mDNS,
    public bootstrap or DHT routers (tests, benchmarks and the demo set it). ``peer_to_peer``
    false runs no peer transport at all. ``status_interval``: seconds between the signed status
    documents the agent broadcasts. ``rollback_on_halt``: when the rollout of the version this
    node runs is halted (a governance halt, or validators' failing health reports over the
    plan's threshold), roll back from it (without it the node stays, and only nodes that have
    not installed it stop).
    """

    loopback_only: bool = False
    peer_to_peer: bool = True
    status_interval: int = 300
    rollback_on_halt: bool = False


@frozen
class RegressionSettings:
    """``[regression]``: regression detection on the live path after a switch.

    The metrics (``[commands] metrics`` or the ``blackhole_sync_metrics`` hook) are sampled
    on the last good version: its baseline is the median of its last ``samples`` samples.
    After a switch the new version is sampled every ``interval`` seconds for
    ``watch_seconds``; a metric whose median moved past its threshold is a regression.
    ``thresholds`` maps a metric name to basis points of change from the baseline: positive
    for metrics where more is worse (``latency_ms = 5000``: more than 50 % slower),
    negative where less is worse (``requests_per_s = -2000``: more than 20 % fewer). A
    regression rolls the node back when ``[policy.critical] emergency_rollback`` is on (and
    is reported either way). No thresholds: no detection.
    """

    samples: int = 5
    watch_seconds: int = 60
    interval: int = 10
    thresholds: Mapping[str, int] = field(factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.thresholds)


@frozen
class PluginSettings:
    """``[plugins]``: ``autoload = false`` loads no third-party plugin (entry points);
    ``block`` names entry points never to load. Load failures are shown by ``node status``."""

    autoload: bool = True
    block: tuple[str, ...] = field(default=(), converter=_str_tuple)


#: Top-level tables of config.toml that belong to transport plugins.
PLUGIN_TABLES = ("gossip", "bittorrent", "ipfs", "http")


@frozen
class NodeConfig:
    """Everything in ``config.toml``. Build with :meth:`from_toml` / :func:`load_config`."""

    sources: tuple[str, ...] = field(converter=_str_tuple)
    channel: str = "stable"
    platform: str = field(factory=_default_platform)
    arch: str = field(factory=_default_arch)
    check_interval: int = 3600
    bandwidth_limit: int = 0
    deltas: bool = True
    keep_versions: int = 3
    peers_first: bool = False
    node: NodeAttributes = field(factory=NodeAttributes)
    policy: UpdatePolicy = field(factory=UpdatePolicy)
    commands: Commands = field(factory=Commands)
    webhook: WebhookSettings = field(factory=WebhookSettings)
    tls: TLSSettings = field(factory=TLSSettings)
    delta_memory_budget: int = DEFAULT_DELTA_MEMORY_BUDGET
    network: NetworkSettings = field(factory=lambda: NetworkSettings())
    regression: RegressionSettings = field(factory=RegressionSettings)
    plugins: PluginSettings = field(factory=PluginSettings)
    #: Tables owned by transport plugins (``[gossip]``, ``[bittorrent]``, ``[ipfs]``...): kept
    #: as parsed and handed to the plugins, which validate their own settings.
    plugin_tables: Mapping[str, Any] = field(factory=dict)

    # -- convenience ---------------------------------------------------------------------

    @property
    def window(self) -> TimeWindow:
        """The update window (``[window]``), i.e. ``policy.automatic.update_window``."""
        return self.policy.automatic.update_window

    @property
    def region(self) -> str:
        return self.node.region

    @property
    def node_type(self) -> str:
        return self.node.node_type

    def with_updates(self, **changes: Any) -> NodeConfig:
        """A copy with top-level fields replaced (``policy=...``, ``channel=...``).

        The result is validated by round-tripping through the parser, so an invalid value
        raises :class:`ConfigurationError` exactly as reading it from a file would.
        """
        try:
            updated = evolve(self, **changes)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"invalid configuration change: {exc}") from exc
        return NodeConfig.from_toml(updated.to_toml())

    def with_policy(self, policy: UpdatePolicy) -> NodeConfig:
        return self.with_updates(policy=policy)

    def update_policy(self) -> UpdatePolicy:
        """The policy in force (the design's ``UpdatePolicy``); same as :attr:`policy`."""
        return self.policy

    def notification_channels(self) -> tuple[str, ...]:
        """The channel names the manual policy notifies through."""
        return self.policy.manual.notification_channels

    @property
    def health_timeout(self) -> int:
        return self.commands.health_timeout

    @property
    def health_window(self) -> int:
        return self.commands.health_window

    def self_test_command(self) -> Command | None:
        """``[commands] self_test`` as a :class:`~blackhole_sync.documents.release.Command`, or None."""
        if not self.commands.self_test:
            return None
        return Command(self.commands.self_test, timeout=self.commands.health_timeout)

    def health_command(self) -> Command | None:
        """``[commands] health`` as a :class:`~blackhole_sync.documents.release.Command`, or None.

        Its ``window`` is ``health_window`` (None when 0: check once).
        """
        if not self.commands.health:
            return None
        return Command(
            self.commands.health,
            timeout=self.commands.health_timeout,
            window=self.commands.health_window or None,
        )

    def restart_command(self) -> tuple[str, ...] | None:
        """``[commands] restart`` argv, or None."""
        return self.commands.restart or None

    @property
    def protocol_versions(self) -> tuple[int, ...]:
        """``[node] protocol_versions``: the protocols this node's host runs."""
        return self.node.protocol_versions

    def download_rate_limit(self) -> int | None:
        """Bytes per second the transports may download at (None: unlimited): the lower of
        ``bandwidth_limit`` and, under the manual policy, ``download_bandwidth_limit``."""
        limits = [self.bandwidth_limit]
        if self.policy.mode == "manual":
            limits.append(self.policy.manual.download_bandwidth_limit)
        set_limits = [n for n in limits if n > 0]
        return min(set_limits) if set_limits else None

    def policy_summary(self) -> dict[str, Any]:
        """The policy section as JSON-serialisable data (``node status --json``)."""
        data = self.to_dict()
        summary: dict[str, Any] = dict(data["policy"])
        summary["window"] = data["window"]
        return summary

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str, where: str = CONFIG_FILE) -> NodeConfig:
        """Parse and validate TOML text; raises :class:`ConfigurationError`."""
        return cls.from_dict(_toml.parse(text, where), where)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeConfig:
        """Read a configuration file (same as :meth:`from_file`)."""
        return cls.from_file(path)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write this configuration to ``path`` atomically, keeping the file's comments."""
        _write(Path(path), self)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> NodeConfig:
        return cls.from_dict(read_config_document(path), str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = CONFIG_FILE) -> NodeConfig:
        """Validate an already-parsed TOML document (``tomllib`` output)."""
        top = _toml.Table(data, where, "")
        sources = top.strings("sources", required=True, non_empty_items=True)
        channel = top.string("channel", "stable", pattern=_CHANNEL_RE)
        plat = top.string("platform", _default_platform(), pattern=_NAME_RE)
        arch = top.string("arch", _default_arch(), pattern=_NAME_RE)
        check_interval = top.integer("check_interval", 3600, minimum=1)
        bandwidth_limit = top.integer("bandwidth_limit", 0)
        deltas = top.boolean("deltas", True)
        peers_first = top.boolean("peers_first", False)
        delta_memory_budget = top.integer(
            "delta_memory_budget", DEFAULT_DELTA_MEMORY_BUDGET, minimum=0
        )
        keep_versions = top.integer("keep_versions", 3, minimum=1)

        node_t = top.table("node")
        node = _node_attributes(node_t)
        node_t.finish()

        window_t = top.table("window")
        days = window_t.strings("days")
        for day in days:
            if day not in DAY_NAMES:
                window_t.fail("days", f"{day!r} is not one of {', '.join(DAY_NAMES)}")
        start = window_t.string("start", "")
        end = window_t.string("end", "")
        for name, value in (("start", start), ("end", end)):
            if value and not _HHMM_RE.match(value):
                window_t.fail(name, f"{value!r} is not HH:MM (00:00 to 23:59)")
        timezone = window_t.string("timezone", "UTC")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            window_t.fail("timezone", f"unknown timezone {timezone!r} (use an IANA name or UTC)")
        window = window_t.build(TimeWindow, days=days, start=start, end=end, timezone=timezone)
        window_t.finish()

        policy_t = top.table("policy")
        mode = policy_t.string("mode", "automatic")
        if mode not in MODES:
            policy_t.fail("mode", f"{mode!r} is not one of {', '.join(MODES)}")
        a = policy_t.table("automatic")
        allowed = a.strings("allowed_types", default=UPDATE_TYPES)
        for t in allowed:
            if t not in UPDATE_TYPES:
                a.fail("allowed_types", f"{t!r} is not one of {', '.join(UPDATE_TYPES)}")
        if "consensus_threshold" in a.data:
            a.fail(
                "consensus_threshold",
                "not a node setting: the signed activation proposal's threshold_bp decides "
                "when the network has reached consensus (remove this key)",
            )
        wait_for_consensus = a.boolean("wait_for_network_consensus", False)
        automatic = a.build(
            AutomaticUpdatePolicy,
            enabled=a.boolean("enabled", True),
            allowed_types=allowed,
            max_downtime=a.seconds("max_downtime", 300),
            require_health_check=a.boolean("require_health_check", False),
            backup_before_update=a.boolean("backup_before_update", True),
            update_window=window,
            delay_after_release=a.seconds("delay_after_release", 0),
            wait_for_network_consensus=wait_for_consensus,
        )
        a.finish()
        m = policy_t.table("manual")
        channels = m.strings("notification_channels", default=("log",), non_empty_items=True)
        manual = m.build(
            ManualUpdatePolicy,
            notify_on_new_updates=m.boolean("notify_on_new_updates", True),
            notification_channels=channels,
            auto_download=m.boolean("auto_download", True),
            download_bandwidth_limit=m.integer("download_bandwidth_limit", 0),
            require_user_confirmation=m.boolean("require_user_confirmation", True),
            allow_deferral=m.boolean("allow_deferral", True),
            max_deferral_count=m.integer("max_deferral_count", 3),
            deferral_period=m.seconds("deferral_period", 86_400),
        )
        m.finish()
        c = policy_t.table("critical")
        critical = c.build(
            CriticalUpdatePolicy,
            auto_install_critical=c.boolean("auto_install_critical", True),
            override_user_preferences=c.boolean("override_user_preferences", True),
            override_scheduling=c.boolean("override_scheduling", True),
            emergency_rollback=c.boolean("emergency_rollback", True),
            notify_after_install=c.boolean("notify_after_install", True),
        )
        c.finish()
        policy_t.finish()
        policy = UpdatePolicy(mode=mode, automatic=automatic, manual=manual, critical=critical)

        cmd_t = top.table("commands")
        commands = Commands(
            self_test=cmd_t.strings("self_test", non_empty_items=True),
            health=cmd_t.strings("health", non_empty_items=True),
            restart=cmd_t.strings("restart", non_empty_items=True),
            metrics=cmd_t.strings("metrics", non_empty_items=True),
            health_timeout=cmd_t.integer("health_timeout", 60, minimum=1, maximum=86_400),
            health_window=cmd_t.integer("health_window", 0, maximum=30 * 86_400),
        )
        cmd_t.finish()

        hook_t = top.table("webhook")
        url = hook_t.string("url", "")
        if url and not url.startswith(("http://", "https://")):
            hook_t.fail("url", f"{url!r} is not an http:// or https:// URL")
        timeout = hook_t.number("timeout", 10.0)
        headers_t = hook_t.table("headers")
        headers: dict[str, str] = {}
        for name in list(headers_t.remaining()):
            if not _HEADER_RE.match(name):
                headers_t.fail(name, "not a valid HTTP header name")
            value = headers_t.string(name, "")
            if any(ch in value for ch in "\r\n\x00"):
                headers_t.fail(name, "header values must not contain line breaks or NUL")
            headers[name] = value
        headers_t.finish()
        hook_t.finish()
        webhook = WebhookSettings(url=url, timeout=timeout, headers=headers)
        tls_t = top.table("tls")
        tls = TLSSettings(
            ca_file=tls_t.string("ca_file", ""),
            cert_file=tls_t.string("cert_file", ""),
            key_file=tls_t.string("key_file", ""),
        )
        if tls.key_file and not tls.cert_file:
            tls_t.fail("key_file", "a key_file needs a cert_file")
        tls_t.finish()
        net_t = top.table("network")
        network = NetworkSettings(
            loopback_only=net_t.boolean("loopback_only", False),
            peer_to_peer=net_t.boolean("peer_to_peer", True),
            status_interval=net_t.integer("status_interval", 300, minimum=1),
            rollback_on_halt=net_t.boolean("rollback_on_halt", False),
        )
        net_t.finish()
        reg_t = top.table("regression")
        thresholds_t = reg_t.table("thresholds")
        thresholds: dict[str, int] = {}
        for name in list(thresholds_t.remaining()):
            if not _NAME_RE.match(name):
                thresholds_t.fail(name, "not a valid metric name")
            bp = thresholds_t.integer(name, 0, minimum=-10_000, maximum=1_000_000)
            if bp == 0:
                thresholds_t.fail(name, "0 basis points would flag any change; use > 0 or < 0")
            thresholds[name] = bp
        thresholds_t.finish()
        regression = RegressionSettings(
            samples=reg_t.integer("samples", 5, minimum=1, maximum=1000),
            watch_seconds=reg_t.integer("watch_seconds", 60, maximum=86_400),
            interval=reg_t.integer("interval", 10, maximum=86_400),
            thresholds=thresholds,
        )
        reg_t.finish()
        plug_t = top.table("plugins")
        plugin_settings = PluginSettings(
            autoload=plug_t.boolean("autoload", True),
            block=plug_t.strings("block", non_empty_items=True),
        )
        plug_t.finish()
        plugin_tables = {name: top.raw_table(name) for name in PLUGIN_TABLES if name in data}
        top.finish()

        return cls(
            sources=sources,
            channel=channel,
            platform=plat,
            arch=arch,
            check_interval=check_interval,
            bandwidth_limit=bandwidth_limit,
            deltas=deltas,
            keep_versions=keep_versions,
            peers_first=peers_first,
            node=node,
            policy=policy,
            commands=commands,
            webhook=webhook,
            tls=tls,
            delta_memory_budget=delta_memory_budget,
            network=network,
            regression=regression,
            plugins=plugin_settings,
            plugin_tables=plugin_tables,
        )

    # -- writing -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The TOML document as plain data (durations in seconds); also JSON-serialisable."""
        pol = self.policy
        auto, manual, crit = pol.automatic, pol.manual, pol.critical
        window = auto.update_window
        return {
            "sources": list(self.sources),
            "channel": self.channel,
            "platform": self.platform,
            "arch": self.arch,
            "check_interval": self.check_interval,
            "bandwidth_limit": self.bandwidth_limit,
            "deltas": self.deltas,
            "peers_first": self.peers_first,
            "delta_memory_budget": self.delta_memory_budget,
            "keep_versions": self.keep_versions,
            "node": {
                "region": self.node.region,
                "node_type": self.node.node_type,
                "protocol_versions": list(self.node.protocol_versions),
            },
            "policy": {
                "mode": pol.mode,
                "automatic": {
                    "enabled": auto.enabled,
                    "allowed_types": list(auto.allowed_types),
                    "max_downtime": _secs(auto.max_downtime),
                    "require_health_check": auto.require_health_check,
                    "backup_before_update": auto.backup_before_update,
                    "delay_after_release": _secs(auto.delay_after_release),
                    "wait_for_network_consensus": auto.wait_for_network_consensus,
                },
                "manual": {
                    "notify_on_new_updates": manual.notify_on_new_updates,
                    "notification_channels": list(manual.notification_channels),
                    "auto_download": manual.auto_download,
                    "download_bandwidth_limit": manual.download_bandwidth_limit,
                    "require_user_confirmation": manual.require_user_confirmation,
                    "allow_deferral": manual.allow_deferral,
                    "max_deferral_count": manual.max_deferral_count,
                    "deferral_period": _secs(manual.deferral_period),
                },
                "critical": {
                    "auto_install_critical": crit.auto_install_critical,
                    "override_user_preferences": crit.override_user_preferences,
                    "override_scheduling": crit.override_scheduling,
                    "emergency_rollback": crit.emergency_rollback,
                    "notify_after_install": crit.notify_after_install,
                },
            },
            "window": window.to_dict(),
            "commands": {
                "self_test": list(self.commands.self_test),
                "health": list(self.commands.health),
                "restart": list(self.commands.restart),
                "metrics": list(self.commands.metrics),
                "health_timeout": self.commands.health_timeout,
                "health_window": self.commands.health_window,
            },
            "webhook": {
                "url": self.webhook.url,
                "timeout": self.webhook.timeout,
                "headers": dict(self.webhook.headers),
            },
            "tls": {
                "ca_file": self.tls.ca_file,
                "cert_file": self.tls.cert_file,
                "key_file": self.tls.key_file,
            },
            "network": {
                "loopback_only": self.network.loopback_only,
                "peer_to_peer": self.network.peer_to_peer,
                "status_interval": self.network.status_interval,
                "rollback_on_halt": self.network.rollback_on_halt,
            },
            "regression": {
                "samples": self.regression.samples,
                "watch_seconds": self.regression.watch_seconds,
                "interval": self.regression.interval,
                "thresholds": dict(self.regression.thresholds),
            },
            "plugins": {"autoload": self.plugins.autoload, "block": list(self.plugins.block)},
            **{name: dict(table) for name, table in self.plugin_tables.items()},
        }

    def to_toml(self) -> str:
        """TOML text that :meth:`from_toml` reads back to an equal configuration."""
        return _toml.dumps(self.to_dict())

    @classmethod
    def default(cls, *, sources: Sequence[str], channel: str = "stable") -> NodeConfig:
        """The defaults ``node init`` writes (validated)."""
        return cls.from_dict({"sources": list(sources), "channel": channel})


def _secs(td: _dt.timedelta) -> int:
    return int(td.total_seconds())


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{path}: no configuration file (run `node init`)") from exc
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigurationError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8: {exc}") from exc


def read_config_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML document in a configuration file, parsed but not validated: the one reader of
    ``config.toml`` (size-capped, UTF-8). Raises :class:`ConfigurationError`."""
    p = Path(path)
    return _toml.parse(_read_text(p), str(p))


def _node_attributes(table: _toml.Table) -> NodeAttributes:
    return NodeAttributes(
        region=table.string("region", ""),
        node_type=table.string("node_type", ""),
        protocol_versions=table.integers("protocol_versions"),
    )


def read_node_attributes(path: str | os.PathLike[str]) -> NodeAttributes:
    """Only the ``[node]`` attributes of a configuration file (empty when it does not exist).

    For the store, which scopes configuration changes by them: the rest of the file is not
    validated here (the update manager validates all of it when it opens the node).
    """
    p = Path(path)
    if not p.exists():
        return NodeAttributes()
    top = _toml.Table(read_config_document(p), str(p), "")
    return _node_attributes(top.table("node"))


def load_config(node_dir: str | os.PathLike[str]) -> NodeConfig:
    """Read ``NODE/config.toml``."""
    return NodeConfig.from_file(NodeLayout(node_dir).config)


def write_config(
    node_dir: str | os.PathLike[str], config: NodeConfig | str, *, exclusive: bool = False
) -> Path:
    """Write ``NODE/config.toml`` atomically (temporary file, fsync, rename).

    ``config`` is a :class:`NodeConfig` (merged into the existing file, whose comments and
    layout are kept) or TOML text (validated before writing). ``exclusive``: refuse with
    :class:`FileExistsError` when the file exists (``node init``).
    """
    target = NodeLayout(node_dir).config
    _write(target, config, exclusive=exclusive)
    return target


def _write(target: Path, config: NodeConfig | str, *, exclusive: bool = False) -> None:
    if exclusive and target.exists():
        raise FileExistsError(f"{target} exists")
    if isinstance(config, NodeConfig):
        text = _merged_text(target, config)
    else:
        text = config
        NodeConfig.from_toml(text)  # never persist what cannot be read back
    write_atomic(target, text.encode("utf-8"), mode=0o644, exclusive=exclusive)


def _merged_text(target: Path, config: NodeConfig) -> str:
    """``config`` as TOML: the existing file edited in place when there is one (comments and
    order kept), else written fresh. Either way it must read back as ``config``."""
    fresh = config.to_toml()
    try:
        text = _toml.edit(_read_text(target), config.to_dict())
    except ConfigurationError:
        return fresh
    if text is None:
        return fresh
    try:
        return text if NodeConfig.from_toml(text) == config else fresh
    except ConfigurationError:
        return fresh


def dumps_toml(data: Mapping[str, Any]) -> str:
    """A TOML document of scalars, arrays and (nested) tables (written by :mod:`tomlkit`)."""
    return _toml.dumps(data)


# -- the file `node init` writes ------------------------------------------------------------


def default_config_text(*, sources: list[str], channel: str) -> str:
    """The commented ``config.toml`` that ``node init`` writes, with every default spelled
    out. Raises :class:`ConfigurationError` for an invalid source list or channel."""
    cfg = NodeConfig.default(sources=sources, channel=channel)
    v = _toml.value_text
    auto = cfg.policy.automatic
    manual = cfg.policy.manual
    crit = cfg.policy.critical
    text = f"""\
# blackhole-sync node configuration. Durations are whole seconds; sizes in bytes.
# Unknown keys are refused. The node keeps these comments when it rewrites this file.

# Where releases come from, tried in order: http(s):// or file:// URLs, or paths.
sources = {v(list(cfg.sources))}
# The release channel this node follows.
channel = {v(cfg.channel)}
# Which artifacts to install (defaults: this machine).
platform = {v(cfg.platform)}
arch = {v(cfg.arch)}
# Seconds between checks by the update agent (`node run`).
check_interval = {cfg.check_interval}
# Download bandwidth limit in bytes per second; 0 = unlimited.
bandwidth_limit = {cfg.bandwidth_limit}
# Fetch delta patches instead of whole artifacts when possible.
deltas = {v(cfg.deltas)}
# true: try the peer transports a signed manifest names (IPFS CIDs, ...) before the sources
# above, sparing the origin; a swarm with web seeds (BitTorrent) goes first either way.
peers_first = {v(cfg.peers_first)}
# Most memory (bytes) applying one delta patch may take; above it the node downloads the
# artifact whole (and says so in its log and the update's report).
delta_memory_budget = {cfg.delta_memory_budget}
# Installed versions kept when pruning (at least 1).
keep_versions = {cfg.keep_versions}

[node]
# Attributes that scoped configuration changes and rollout plans select nodes by.
region = {v(cfg.node.region)}
node_type = {v(cfg.node.node_type)}
# The protocol versions this node's host runs, e.g. [3, 4]; a release whose compatibility
# names protocols none of which are here is refused. [] = not checked. A host plugin that
# implements blackhole_sync_protocol_versions answers instead.
protocol_versions = {v(list(cfg.node.protocol_versions))}

[policy]
# "automatic" installs by itself; "manual" asks the operator (`node confirm` / `node defer`).
# Critical releases follow [policy.critical] in both modes. `node update` always installs now.
mode = {v(cfg.policy.mode)}

[policy.automatic]
enabled = {v(auto.enabled)}
# Update types installed automatically: binary, configuration, protocol, schema.
allowed_types = {v(list(auto.allowed_types))}
# Seconds from the switch until the new version is healthy (restart plus health checks);
# past it the install rolls back. Applies to every install (`node update` too); 0 = no limit.
max_downtime = {_secs(auto.max_downtime)}
# true: the agent installs only releases a health check applies to (the release's own,
# [commands] health or a plugin's); others wait for `node update`.
require_health_check = {v(auto.require_health_check)}
# false: skip the data backup (rollback point) before an install, unless the install
# changes data/ (a schema migration or configuration changes). Applies to every install.
backup_before_update = {v(auto.backup_before_update)}
# Seconds to wait after a release's publication time before installing it.
delay_after_release = {_secs(auto.delay_after_release)}
# Install a release an activation proposal names only once the network activated it (the
# signed proposal's threshold_bp says what consensus is; a release no proposal names has
# nothing to wait for).
wait_for_network_consensus = {v(auto.wait_for_network_consensus)}

[policy.manual]
notify_on_new_updates = {v(manual.notify_on_new_updates)}
# Channel names: "log", "webhook" (see [webhook]) or a plugin's.
notification_channels = {v(list(manual.notification_channels))}
# Download (and verify) new releases before the operator confirms them.
auto_download = {v(manual.auto_download)}
# Bytes per second for downloads under the manual policy (the lower of this and
# bandwidth_limit applies); 0 = bandwidth_limit alone.
download_bandwidth_limit = {manual.download_bandwidth_limit}
require_user_confirmation = {v(manual.require_user_confirmation)}
allow_deferral = {v(manual.allow_deferral)}
max_deferral_count = {manual.max_deferral_count}
# How long one `node defer` postpones a release.
deferral_period = {_secs(manual.deferral_period)}

[policy.critical]
auto_install_critical = {v(crit.auto_install_critical)}
# Install critical releases even under the manual policy or for types not allowed above.
override_user_preferences = {v(crit.override_user_preferences)}
# Install critical releases outside the window, without delay or consensus waits.
override_scheduling = {v(crit.override_scheduling)}
# Roll back at once when a switch shows a regression (see [regression]); false: report it
# and stay.
emergency_rollback = {v(crit.emergency_rollback)}
notify_after_install = {v(crit.notify_after_install)}

[window]
# When automatic installs may happen. Empty days = every day; empty start/end = all day.
# Example: days = ["sat", "sun"], start = "02:00", end = "05:00" (an end before the start
# wraps past midnight). timezone: "UTC" or an IANA name such as "Europe/Berlin".
days = {v(list(auto.update_window.days))}
start = {v(auto.update_window.start)}
end = {v(auto.update_window.end)}
timezone = {v(auto.update_window.timezone)}

[commands]
# argv lists, e.g. health = ["/usr/local/bin/node-health", "--quick"]; [] = none.
self_test = {v(list(cfg.commands.self_test))}
health = {v(list(cfg.commands.health))}
restart = {v(list(cfg.commands.restart))}
# Prints one JSON object of numbers about the running version, e.g. {{"latency_ms": 12}}
# (regression detection, see [regression]).
metrics = {v(list(cfg.commands.metrics))}
# Seconds the health command may take, and seconds to keep watching after a switch.
health_timeout = {cfg.commands.health_timeout}
health_window = {cfg.commands.health_window}

[regression]
# Baseline: the median of the last `samples` metric samples of the last good version
# (taken by the agent, topped up before a switch). After a switch the new version is
# sampled every `interval` seconds for `watch_seconds`.
samples = {cfg.regression.samples}
watch_seconds = {cfg.regression.watch_seconds}
interval = {cfg.regression.interval}

[regression.thresholds]
# Basis points of change from the baseline that count as a regression, per metric:
# positive where more is worse, negative where less is worse. None = no detection.
# latency_ms = 5000
# requests_per_s = -2000

[plugins]
# false: load no third-party plugin (installed entry points); only the built-in ones.
autoload = {v(cfg.plugins.autoload)}
# Entry-point names never to load, e.g. ["bittorrent"].
block = {v(list(cfg.plugins.block))}

[webhook]
# The "webhook" notification channel POSTs each event as JSON to this URL.
url = {v(cfg.webhook.url)}
timeout = {v(cfg.webhook.timeout)}

[webhook.headers]
# Extra request headers, e.g. Authorization = "Bearer ..."

[tls]
# https sources: a CA bundle to trust instead of the system's (PEM), and a client
# certificate for origins that require one. Certificates are always verified.
ca_file = ""
cert_file = ""
key_file = ""

[network]
# The peer-to-peer side run by `node run` (gossip, the DHT, IPFS pubsub, when installed).
# loopback_only keeps every stack on 127.0.0.1 (no UPnP, NAT-PMP, LSD, mDNS, public bootstrap
# or DHT routers): for tests and local demos. peer_to_peer = false runs none of them.
loopback_only = {v(cfg.network.loopback_only)}
peer_to_peer = {v(cfg.network.peer_to_peer)}
# Seconds between the signed status documents the agent broadcasts.
status_interval = {v(cfg.network.status_interval)}
# Roll back from the running version when its rollout is halted (a governance halt, or
# validators' failing health reports over the plan's threshold).
rollback_on_halt = {v(cfg.network.rollback_on_halt)}

# Each transport plugin reads its own table: [gossip] listen / bootstrap, [bittorrent],
# [ipfs] (see each plugin's README). For example:
# [gossip]
# listen = "/ip4/0.0.0.0/tcp/4001"
# bootstrap = ["/ip4/198.51.100.7/tcp/4001/p2p/12D3KooW..."]
# admit_without_hello = false   # true: also admit Kubo peers (they speak no /blackhole/hello/1)
"""  # noqa: S608 - TOML text, not SQL
    return text
