"""The node configuration file: strict parsing, defaults, atomic rewrite."""

from __future__ import annotations

import datetime as dt
import platform
import tomllib
from pathlib import Path

import pytest

from blackhole_sync.errors import ConfigurationError
from blackhole_sync.node.config import (
    CONFIG_FILE,
    NodeAttributes,
    NodeConfig,
    default_config_text,
    dumps_toml,
    load_config,
    read_node_attributes,
    write_config,
)
from blackhole_sync.node.policy import (
    AutomaticUpdatePolicy,
    ManualUpdatePolicy,
    TimeWindow,
    UpdatePolicy,
)

SOURCES = ["https://updates.example.net/repo", "file:///srv/mirror", "/mnt/usb/repo"]


def test_default_config_text_round_trips_through_the_parser() -> None:
    text = default_config_text(sources=SOURCES, channel="beta")
    assert text.startswith("#")
    cfg = NodeConfig.from_toml(text)
    assert cfg == NodeConfig.default(sources=SOURCES, channel="beta")
    assert cfg.sources == tuple(SOURCES)
    assert cfg.channel == "beta"
    assert cfg.platform == platform.system().lower()
    assert cfg.arch == platform.machine()
    assert cfg.policy == UpdatePolicy()
    assert cfg.window.is_always
    assert cfg.bandwidth_limit == 0 and cfg.deltas and cfg.keep_versions == 3
    # every table the writer produces is also documented in the default text
    for table in tomllib.loads(cfg.to_toml()):
        assert table in tomllib.loads(text)


def test_every_setting_round_trips() -> None:
    cfg = NodeConfig.from_toml(
        """
sources = ["https://a.example/repo"]
channel = "stable"
platform = "linux"
arch = "aarch64"
check_interval = 60
bandwidth_limit = 10_000_000
deltas = false
keep_versions = 5

[node]
region = "eu-west"
node_type = "validator"
protocol_versions = [3, 4]

[policy]
mode = "manual"

[policy.automatic]
enabled = false
allowed_types = ["binary"]
max_downtime = 30
require_health_check = false
backup_before_update = false
delay_after_release = 86400
wait_for_network_consensus = false

[policy.manual]
notify_on_new_updates = false
notification_channels = ["log", "webhook"]
auto_download = false
download_bandwidth_limit = 1000
require_user_confirmation = false
allow_deferral = false
max_deferral_count = 0
deferral_period = 3600

[policy.critical]
auto_install_critical = false
override_user_preferences = false
override_scheduling = false
emergency_rollback = false
notify_after_install = false

[window]
days = ["sat", "sun"]
start = "22:00"
end = "04:00"
timezone = "Europe/Berlin"

[commands]
self_test = ["./selftest", "--fast"]
health = ["curl", "-f", "http://127.0.0.1:9000/health"]
restart = ["systemctl", "restart", "blackhole"]
metrics = ["./metrics", "--json"]
health_timeout = 30
health_window = 300

[regression]
samples = 3
watch_seconds = 120
interval = 5

[regression.thresholds]
latency_ms = 5000
requests_per_s = -2000

[plugins]
autoload = false
block = ["bittorrent"]

[webhook]
url = "https://hooks.example/notify"
timeout = 2.5

[webhook.headers]
Authorization = "Bearer \\"quoted\\" token"
X-Node = "n1"
"""
    )
    assert cfg.policy.mode == "manual"
    assert cfg.policy.automatic.delay_after_release == dt.timedelta(days=1)
    assert cfg.protocol_versions == (3, 4)
    assert cfg.commands.metrics == ("./metrics", "--json")
    assert cfg.regression.thresholds == {"latency_ms": 5000, "requests_per_s": -2000}
    assert (cfg.regression.samples, cfg.regression.watch_seconds) == (3, 120)
    assert not cfg.plugins.autoload and cfg.plugins.block == ("bittorrent",)
    assert cfg.policy.manual.notification_channels == ("log", "webhook")
    assert cfg.window == TimeWindow(
        days=("sat", "sun"), start="22:00", end="04:00", timezone="Europe/Berlin"
    )
    assert cfg.commands.health == ("curl", "-f", "http://127.0.0.1:9000/health")
    assert cfg.region == "eu-west" and cfg.node_type == "validator"
    assert cfg.webhook.headers["Authorization"] == 'Bearer "quoted" token'
    assert NodeConfig.from_toml(cfg.to_toml()) == cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "sources: missing"),
        ('sources = ["a"]\nsurces = ["b"]', "unknown key 'surces'"),
        ('sources = ["a"]\n[policy]\nmoed = "manual"', "unknown key 'policy.moed'"),
        (
            'sources = ["a"]\n[policy.automatic]\nwindow = 1',
            "unknown key 'policy.automatic.window'",
        ),
        ('sources = ["a"]\n[plicy]\nmode = "manual"', "unknown key 'plicy'"),
        ('sources = "a"', "sources: expected an array of strings, got 'a'"),
        ('sources = ["a", 1]', "sources: item 1: expected a string"),
        ('sources = [""]', "sources: item 0: empty string"),
        ('sources = ["a"]\ndeltas = "yes"', "deltas: expected true or false"),
        ('sources = ["a"]\nbandwidth_limit = -1', "bandwidth_limit: expected an integer >= 0"),
        ('sources = ["a"]\nbandwidth_limit = true', "bandwidth_limit: expected an integer"),
        ('sources = ["a"]\ncheck_interval = 0', "check_interval: expected an integer >= 1"),
        ('sources = ["a"]\nkeep_versions = 1.5', "keep_versions: expected an integer"),
        ('sources = ["a"]\nchannel = "Bad Channel"', "channel: 'Bad Channel' is not a valid"),
        ('sources = ["a"]\n[policy]\nmode = "auto"', "policy.mode: 'auto' is not one of"),
        (
            'sources = ["a"]\n[policy.automatic]\nallowed_types = ["firmware"]',
            "policy.automatic.allowed_types: 'firmware'",
        ),
        (
            'sources = ["a"]\n[node]\nprotocol_versions = [3, "4"]',
            "node.protocol_versions: item 1: expected an integer",
        ),
        (
            'sources = ["a"]\n[regression.thresholds]\nlatency_ms = 0',
            "regression.thresholds.latency_ms: 0 basis points",
        ),
        ('sources = ["a"]\n[plugins]\nblock = "http"', "plugins.block: expected an array"),
        (
            'sources = ["a"]\n[policy.automatic]\nmax_downtime = "5m"',
            "policy.automatic.max_downtime: expected an integer >= 0, got '5m'",
        ),
        ('sources = ["a"]\n[window]\nstart = "2:00"\nend = "4:00"', "window.start: '2:00'"),
        ('sources = ["a"]\n[window]\nstart = "02:00"', "both start and end"),
        ('sources = ["a"]\n[window]\ndays = ["funday"]', "window.days: 'funday'"),
        ('sources = ["a"]\n[window]\ntimezone = "Mars/Olympus"', "window.timezone"),
        ('sources = ["a"]\n[commands]\nhealth = "check.sh"', "commands.health: expected an array"),
        ('sources = ["a"]\n[webhook]\nurl = "ftp://x"', "webhook.url: 'ftp://x' is not an http"),
        ('sources = ["a"]\n[webhook]\ntimeout = 0', "webhook.timeout: expected a positive"),
        ('sources = ["a"]\nnode = "x"', "node: expected a table"),
        ('sources = ["a"\n', "not valid TOML"),
    ],
)
def test_parse_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        NodeConfig.from_toml(text)
    assert message in str(info.value)
    assert str(info.value).startswith(CONFIG_FILE)


def test_invalid_init_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="channel"):
        default_config_text(sources=["a"], channel="Not Valid")


def test_load_and_atomic_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="node init"):
        load_config(tmp_path)
    write_config(tmp_path, default_config_text(sources=SOURCES, channel="stable"), exclusive=True)
    assert "# blackhole-sync node configuration" in (tmp_path / CONFIG_FILE).read_text()
    with pytest.raises(FileExistsError):
        write_config(tmp_path, NodeConfig.default(sources=SOURCES), exclusive=True)
    cfg = load_config(tmp_path)
    policy = UpdatePolicy(
        mode="manual",
        automatic=AutomaticUpdatePolicy(update_window=TimeWindow(start="01:00", end="02:00")),
        manual=ManualUpdatePolicy(max_deferral_count=7),
    )
    updated = cfg.with_policy(policy)
    write_config(tmp_path, updated)
    assert load_config(tmp_path) == updated
    assert load_config(tmp_path).policy == policy
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE]  # no temporary left


def test_rewriting_keeps_the_operators_comments(tmp_path: Path) -> None:
    text = default_config_text(sources=SOURCES, channel="stable")
    text = text.replace("[node]\n", "[node]\n# rack 4, left side\n")
    write_config(tmp_path, text)
    cfg = load_config(tmp_path)
    updated = cfg.with_policy(UpdatePolicy(mode="manual")).with_updates(channel="beta")
    write_config(tmp_path, updated)
    after = (tmp_path / CONFIG_FILE).read_text()
    assert load_config(tmp_path) == updated
    assert "# rack 4, left side" in after
    kept = [line for line in text.splitlines() if line.startswith("#")]
    assert kept and all(line in after for line in kept)
    assert 'mode = "manual"' in after and 'channel = "beta"' in after
    # a file tomlkit cannot edit into an equal configuration is written fresh
    (tmp_path / CONFIG_FILE).write_text('sources = ["a"]\n')
    write_config(tmp_path, updated)
    assert load_config(tmp_path) == updated


def test_node_attributes_are_read_by_the_same_reader(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE
    assert read_node_attributes(path) == NodeAttributes()
    path.write_text('[node]\nregion = "eu"\nnode_type = "edge"\n')
    assert read_node_attributes(path) == NodeAttributes("eu", "edge")
    path.write_text("[node]\nregion = 5\n")
    with pytest.raises(ConfigurationError, match=r"node\.region"):
        read_node_attributes(path)
    path.write_bytes(b"[node\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        read_node_attributes(path)


def test_write_refuses_text_that_does_not_parse(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        write_config(tmp_path, 'sources = ["a"]\nbogus = 1\n')
    assert not (tmp_path / CONFIG_FILE).exists()


def test_with_updates_validates() -> None:
    cfg = NodeConfig.default(sources=["a"])
    assert cfg.with_updates(bandwidth_limit=5).bandwidth_limit == 5
    with pytest.raises(ConfigurationError, match="bandwidth_limit"):
        cfg.with_updates(bandwidth_limit=-5)
    with pytest.raises(ConfigurationError):
        cfg.with_updates(no_such_field=1)


def test_oversized_and_non_utf8_files(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE
    path.write_bytes(b'sources = ["\xff"]\n')
    with pytest.raises(ConfigurationError, match="UTF-8"):
        load_config(tmp_path)
    path.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(ConfigurationError, match="larger than"):
        load_config(tmp_path)


def test_toml_writer_escapes_strings() -> None:
    tricky = 'quote " backslash \\ newline \n tab \t del \x7f bell \x07 ünïcode'
    data = {"a": tricky, "t": {"key with space": [tricky], "n": 1.5}}
    assert tomllib.loads(dumps_toml(data)) == data


def test_command_helpers(tmp_path: Path) -> None:
    cfg = NodeConfig.default(sources=["a"])
    assert cfg.self_test_command() is None and cfg.health_command() is None
    assert cfg.restart_command() is None
    cfg = NodeConfig.from_toml(
        'sources = ["a"]\n[commands]\nself_test = ["t"]\nhealth = ["h", "-q"]\n'
        'restart = ["r"]\nhealth_timeout = 9\nhealth_window = 30\n'
    )
    health = cfg.health_command()
    assert health is not None and health.argv == ("h", "-q")
    assert health.timeout == 9 and health.window == 30
    self_test = cfg.self_test_command()
    assert self_test is not None and self_test.window is None
    assert cfg.restart_command() == ("r",)
    assert cfg.update_policy() is cfg.policy
    assert cfg.notification_channels() == ("log",)
    summary = cfg.policy_summary()
    assert summary["mode"] == "automatic" and summary["window"]["timezone"] == "UTC"
    path = tmp_path / "config.toml"
    cfg.save(path)
    assert NodeConfig.load(path) == cfg
