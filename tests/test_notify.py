"""Notification channels: the built-in log channel and channels registered by plugins."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from blackhole_sync.errors import ConfigurationError
from blackhole_sync.events import UpdateEvent
from blackhole_sync.fetch.hookspecs import NotificationChannel, hookimpl
from blackhole_sync.fetch.plugins import make_plugin_manager
from blackhole_sync.notify import (
    LogChannel,
    channels_from_config,
    notify_all,
    plugin_channels,
)

EVENT = UpdateEvent(
    "available",
    "1.1.0",
    {"critical": False, "channel": "stable"},
    dt.datetime(2024, 1, 3, 12, 0, tzinfo=dt.UTC),
)


@pytest.mark.anyio
async def test_log_channel(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="blackhole_sync.notify"):
        await LogChannel().notify(EVENT)
    assert "update available: version 1.1.0" in caplog.text
    assert '"channel": "stable"' in caplog.text


class Recording:
    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[UpdateEvent] = []

    async def notify(self, event: Any) -> None:
        self.events.append(event)


class Broken:
    name = "broken"

    async def notify(self, event: Any) -> None:
        raise RuntimeError("plugin bug")


class ChannelPlugin:
    def __init__(self, *channels: Any) -> None:
        self.channels = channels

    @hookimpl
    def blackhole_sync_notification_channels(self) -> Sequence[NotificationChannel]:
        return list(self.channels)


def test_channels_from_config_with_plugin_channels() -> None:
    pm = make_plugin_manager()
    first, second = Recording("pager"), Recording("pager")
    pm.register(ChannelPlugin(first))
    pm.register(ChannelPlugin(second, Recording("chat")))
    found = plugin_channels(pm)
    assert [c.name for c in found] == ["pager", "pager", "chat"]
    chosen = channels_from_config(["chat", "log", "pager"], found)
    assert [c.name for c in chosen] == ["chat", "log", "pager"]
    assert chosen[2] is first  # the first plugin to offer a name wins
    assert isinstance(chosen[1], LogChannel)


def test_plugins_read_their_settings_from_the_node_config() -> None:
    seen: list[Any] = []

    class Configured:
        @hookimpl
        def blackhole_sync_notification_channels(
            self, node_config: Any
        ) -> Sequence[NotificationChannel]:
            seen.append(node_config)
            return [Recording(node_config["pager"]["name"])]

    pm = make_plugin_manager()
    pm.register(Configured())
    [channel] = plugin_channels(pm, {"pager": {"name": "ops-pager"}})
    assert channel.name == "ops-pager" and seen == [{"pager": {"name": "ops-pager"}}]


def test_unknown_channel_names_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown notification channel 'sms'"):
        channels_from_config(["log", "sms"], [Recording("pager")])
    with pytest.raises(ConfigurationError, match=r"blackhole-sync\[http\].*\[webhook\] url"):
        channels_from_config(["webhook"], [])
    assert channels_from_config([], []) == []


@pytest.mark.anyio
async def test_notify_all_isolates_failing_channels(caplog: pytest.LogCaptureFixture) -> None:
    good = Recording("good")
    with caplog.at_level(logging.ERROR, logger="blackhole_sync.notify"):
        await notify_all([Broken(), good], EVENT)
    assert good.events == [EVENT]
    assert "'broken' failed" in caplog.text


def test_update_event_detail_is_read_only_and_serialisable() -> None:
    detail = {"n": 1}
    event = UpdateEvent("failed", None, detail)
    detail["n"] = 2
    assert event.detail == {"n": 1}
    with pytest.raises(TypeError):
        event.detail["n"] = 3  # type: ignore[index]
    assert json.loads(json.dumps(event.to_dict()))["version"] is None
    with pytest.raises(ValueError, match="timezone-aware"):
        UpdateEvent("failed", time=dt.datetime(2024, 1, 1))
