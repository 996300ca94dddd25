"""Notification channels: log, webhook (against a real aiohttp server), plugin channels."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest
from aiohttp import web

from blackhole_sync.errors import ConfigurationError
from blackhole_sync.events import UpdateEvent
from blackhole_sync.fetch.plugins import make_plugin_manager
from blackhole_sync.fetch.hookspecs import NotificationChannel, hookimpl
from blackhole_sync.node.config import WebhookSettings
from blackhole_sync.notify import (
    LogChannel,
    WebhookChannel,
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
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        self.status = 204
        self.delay = 0.0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.delay:
            await anyio.sleep(self.delay)
        self.received.append((dict(request.headers), await request.json()))
        return web.Response(status=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asyncio_only
@pytest.mark.anyio
async def test_webhook_posts_the_event_as_json(receiver: Receiver) -> None:
    channel = WebhookChannel(receiver.url, timeout=5, headers={"Authorization": "Bearer t0k"})
    await channel.notify(EVENT)
    [(headers, body)] = receiver.received
    assert body == {
        "kind": "available",
        "version": "1.1.0",
        "detail": {"critical": False, "channel": "stable"},
        "time": "2024-01-03T12:00:00Z",
    }
    assert headers["Authorization"] == "Bearer t0k"
    assert headers["Content-Type"] == "application/json"


@asyncio_only
@pytest.mark.anyio
async def test_webhook_server_error_is_logged_not_raised(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    with caplog.at_level(logging.WARNING, logger="blackhole_sync.notify"):
        await WebhookChannel(receiver.url).notify(EVENT)
    assert "HTTP 500" in caplog.text


@asyncio_only
@pytest.mark.anyio
async def test_webhook_timeout_is_logged_not_raised(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.delay = 1
    with caplog.at_level(logging.WARNING, logger="blackhole_sync.notify"), anyio.fail_after(3):
        await WebhookChannel(receiver.url, timeout=0.2).notify(EVENT)
    assert "not delivered" in caplog.text


@asyncio_only
@pytest.mark.anyio
async def test_webhook_refused_connection_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    with caplog.at_level(logging.WARNING, logger="blackhole_sync.notify"):
        await WebhookChannel(url, timeout=2).notify(EVENT)
    assert "not delivered" in caplog.text


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_webhook_under_trio_sends_nothing_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="blackhole_sync.notify"):
        await WebhookChannel(f"http://127.0.0.1:{closed_port()}/hook").notify(EVENT)
    assert "needs asyncio" in caplog.text


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
    chosen = channels_from_config(
        ["chat", "log", "pager", "webhook"],
        found,
        webhook=WebhookSettings(url="http://127.0.0.1:1/hook", timeout=1.0),
    )
    assert [c.name for c in chosen] == ["chat", "log", "pager", "webhook"]
    assert chosen[2] is first  # the first plugin to offer a name wins
    assert isinstance(chosen[1], LogChannel)
    webhook = chosen[3]
    assert isinstance(webhook, WebhookChannel) and webhook.timeout == 1.0


def test_unknown_channel_names_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown notification channel 'sms'"):
        channels_from_config(["log", "sms"], [Recording("pager")])
    with pytest.raises(ConfigurationError, match=r"\[webhook\] url"):
        channels_from_config(["webhook"], [], webhook=WebhookSettings())
    assert channels_from_config([], []) == []


@pytest.mark.anyio
async def test_notify_all_isolates_failing_channels(caplog: pytest.LogCaptureFixture) -> None:
    good = Recording("good")
    with caplog.at_level(logging.ERROR, logger="blackhole_sync.notify"):
        await notify_all([Broken(), good], EVENT)
    assert good.events == [EVENT]
    assert "'broken' failed" in caplog.text


@asyncio_only
@pytest.mark.anyio
async def test_notify_all_through_the_webhook(receiver: Receiver) -> None:
    channels = channels_from_config(
        ["webhook", "log"], [], webhook=WebhookSettings(url=receiver.url)
    )
    await notify_all(channels, UpdateEvent("installed", "1.1.1", {"critical": True}))
    [(_, body)] = receiver.received
    assert body["kind"] == "installed" and body["detail"] == {"critical": True}


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


def test_webhook_channel_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        WebhookChannel("ftp://example.net/hook")
    with pytest.raises(ValueError):
        WebhookChannel("http://127.0.0.1/hook", timeout=0)
