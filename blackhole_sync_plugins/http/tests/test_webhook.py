"""The webhook notification channel, against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from aiohttp import web
from blackhole_sync_http import plugin as http_plugin
from blackhole_sync_http.webhook import WebhookChannel

from blackhole_sync import UpdateEvent, channels_from_config, make_plugin_manager, notify_all
from blackhole_sync.notify import plugin_channels

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
    with caplog.at_level(logging.WARNING, logger="blackhole_sync_http.webhook"):
        await WebhookChannel(receiver.url).notify(EVENT)
    assert "HTTP 500" in caplog.text


@asyncio_only
@pytest.mark.anyio
async def test_webhook_timeout_is_logged_not_raised(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.delay = 1
    with (
        caplog.at_level(logging.WARNING, logger="blackhole_sync_http.webhook"),
        anyio.fail_after(3),
    ):
        await WebhookChannel(receiver.url, timeout=0.2).notify(EVENT)
    assert "not delivered" in caplog.text


@asyncio_only
@pytest.mark.anyio
async def test_webhook_refused_connection_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    with caplog.at_level(logging.WARNING, logger="blackhole_sync_http.webhook"):
        await WebhookChannel(url, timeout=2).notify(EVENT)
    assert "not delivered" in caplog.text


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_webhook_under_trio_sends_nothing_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="blackhole_sync_http.webhook"):
        await WebhookChannel(f"http://127.0.0.1:{closed_port()}/hook").notify(EVENT)
    assert "needs asyncio" in caplog.text


def test_the_plugin_offers_the_webhook_only_when_configured() -> None:
    pm = make_plugin_manager()
    pm.register(http_plugin, name="http")
    assert plugin_channels(pm, {"webhook": {"url": ""}}) == []
    [channel] = plugin_channels(
        pm, {"webhook": {"url": "http://127.0.0.1:1/hook", "timeout": 1.0, "headers": {}}}
    )
    assert isinstance(channel, WebhookChannel) and channel.timeout == 1.0
    chosen = channels_from_config(["webhook", "log"], [channel])
    assert [c.name for c in chosen] == ["webhook", "log"]


@asyncio_only
@pytest.mark.anyio
async def test_notify_all_through_the_webhook(receiver: Receiver) -> None:
    pm = make_plugin_manager()
    pm.register(http_plugin, name="http")
    offered = plugin_channels(pm, {"webhook": {"url": receiver.url}})
    channels = channels_from_config(["webhook", "log"], offered)
    await notify_all(channels, UpdateEvent("installed", "1.1.1", {"critical": True}))
    [(_, body)] = receiver.received
    assert body["kind"] == "installed" and body["detail"] == {"critical": True}


def test_webhook_channel_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        WebhookChannel("ftp://example.net/hook")
    with pytest.raises(ValueError):
        WebhookChannel("http://127.0.0.1/hook", timeout=0)
