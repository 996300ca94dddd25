"""Notification channels: how the node tells its operator about updates.

Two channels are built in: ``log`` (:class:`LogChannel`, Python logging) and ``webhook``
(:class:`WebhookChannel`, an HTTP POST of the event as JSON, configured in ``[webhook]``).
Plugins add more through the ``blackhole_sync_notification_channels`` hook; the manual
policy's ``notification_channels`` names the ones to use (:func:`channels_from_config`).

Notifications never break an update: channel failures are logged and swallowed by
:func:`notify_all` (and by the built-in channels themselves). Cancellation still propagates.

The webhook channel uses aiohttp, imported when it first sends, and so runs under asyncio
only; under another event loop (trio) it logs a warning and sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import anyio
import pluggy

from .errors import ConfigurationError
from .events import event_to_dict

if TYPE_CHECKING:
    from .fetch import NotificationChannel, UpdateEvent
    from .node import WebhookSettings

__all__ = [
    "BUILTIN_CHANNELS",
    "LogChannel",
    "WebhookChannel",
    "channels_from_config",
    "notify_all",
    "plugin_channels",
]

#: Names of the channels the core provides.
BUILTIN_CHANNELS: Final = ("log", "webhook")

log = logging.getLogger(__name__)


class LogChannel:
    """Writes each event as one log line (logger ``blackhole_sync.notify`` by default)."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        level: int = logging.INFO,
        name: str = "log",
    ) -> None:
        self.name = name
        self.logger = logger if logger is not None else log
        self.level = level

    async def notify(self, event: UpdateEvent) -> None:
        detail = json.dumps(dict(event.detail), sort_keys=True, default=str)
        self.logger.log(
            self.level,
            "update %s: version %s %s",
            event.kind,
            event.version if event.version is not None else "-",
            detail,
        )


class WebhookChannel:
    """POSTs each event as JSON (``kind``, ``version``, ``detail``, ``time``) to ``url``.

    Asyncio only (aiohttp). A failure (refused connection, timeout, non-2xx status) is
    logged at WARNING and never raised: notifications must not break the update path.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        name: str = "webhook",
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL {url!r} is not http:// or https://")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.name = name
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})

    async def notify(self, event: UpdateEvent) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            log.warning("webhook %s: not sent, the webhook channel needs asyncio", self.url)
            return
        body = json.dumps(event_to_dict(event), sort_keys=True, default=str).encode()
        await self._post(body)

    async def _post(self, body: bytes) -> None:
        import aiohttp

        headers = {"Content-Type": "application/json", **self.headers}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s,
                s.post(self.url, data=body, headers=headers) as response,
            ):
                if not 200 <= response.status < 300:
                    log.warning("webhook %s: HTTP %d", self.url, response.status)
                    return
                await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("webhook %s: not delivered: %s", self.url, exc or type(exc).__name__)


def channels_from_config(
    names: Iterable[str],
    plugin_channels: Iterable[NotificationChannel] = (),
    *,
    webhook: WebhookSettings | None = None,
) -> list[NotificationChannel]:
    """The channels named by the manual policy's ``notification_channels``, in that order.

    Built-ins come first (``log``; ``webhook`` when ``webhook.url`` is set), then the
    channels plugins registered (``blackhole_sync_notification_channels``); for a name
    offered twice the first wins. An unknown name, or ``webhook`` without a URL, raises
    :class:`~blackhole_sync.errors.ConfigurationError`.
    """
    available: dict[str, NotificationChannel] = {}
    available["log"] = LogChannel()
    if webhook is not None and webhook.url:
        available["webhook"] = WebhookChannel(
            webhook.url, timeout=webhook.timeout, headers=webhook.headers
        )
    for channel in plugin_channels:
        available.setdefault(channel.name, channel)
    chosen: list[NotificationChannel] = []
    for name in names:
        if name in available:
            if available[name] not in chosen:
                chosen.append(available[name])
            continue
        if name == "webhook":
            raise ConfigurationError(
                "notification channel 'webhook' needs [webhook] url in config.toml"
            )
        known = ", ".join(sorted(available)) or "none"
        raise ConfigurationError(
            f"unknown notification channel {name!r} (available: {known}; plugins register "
            "more with the blackhole_sync_notification_channels hook)"
        )
    return chosen


def plugin_channels(pm: pluggy.PluginManager) -> list[NotificationChannel]:
    """The channels plugins register through ``blackhole_sync_notification_channels``,
    earliest-registered plugin first (so :func:`channels_from_config` prefers it)."""
    channels: list[NotificationChannel] = []
    for result in reversed(pm.hook.blackhole_sync_notification_channels()):
        channels.extend(result)
    return channels


async def notify_all(channels: Sequence[NotificationChannel], event: UpdateEvent) -> None:
    """Send ``event`` to every channel concurrently; a channel's failure is logged only."""

    async def one(channel: NotificationChannel) -> None:
        try:
            await channel.notify(event)
        except Exception:  # isolate the update path from channel plugins
            log.exception("notification channel %r failed", getattr(channel, "name", channel))

    async with anyio.create_task_group() as tg:
        for channel in channels:
            tg.start_soon(one, channel)
