"""Notification channels: how the node tells its operator about updates.

One channel is built in: ``log`` (:class:`LogChannel`, Python logging). Plugins add more
through the ``blackhole_sync_notification_channels`` hook -- the HTTP plugin adds ``webhook``
(an HTTP POST of the event as JSON, configured in ``[webhook]``), so the core needs no HTTP
client; the manual policy's ``notification_channels`` names the ones to use
(:func:`channels_from_config`).

Notifications never break an update: channel failures are logged and swallowed by
:func:`notify_all`. Cancellation still propagates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
import pluggy

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .fetch import NotificationChannel, UpdateEvent

__all__ = [
    "BUILTIN_CHANNELS",
    "LogChannel",
    "channels_from_config",
    "notify_all",
    "plugin_channels",
]

#: Names of the channels the core provides.
BUILTIN_CHANNELS: Final = ("log",)

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


def channels_from_config(
    names: Iterable[str], plugin_channels: Iterable[NotificationChannel] = ()
) -> list[NotificationChannel]:
    """The channels named by the manual policy's ``notification_channels``, in that order.

    The built-in ``log`` comes first, then the channels plugins registered
    (``blackhole_sync_notification_channels``); for a name offered twice the first wins. An
    unknown name raises :class:`~blackhole_sync.errors.ConfigurationError` saying where to get
    it (``webhook``: the HTTP plugin and ``[webhook] url``).
    """
    available: dict[str, NotificationChannel] = {}
    available["log"] = LogChannel()
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
                "notification channel 'webhook' needs the HTTP plugin (pip install "
                "'blackhole-sync[http]') and [webhook] url in config.toml"
            )
        known = ", ".join(sorted(available)) or "none"
        raise ConfigurationError(
            f"unknown notification channel {name!r} (available: {known}; plugins register "
            "more with the blackhole_sync_notification_channels hook)"
        )
    return chosen


def plugin_channels(
    pm: pluggy.PluginManager, node_config: Mapping[str, Any] | None = None
) -> list[NotificationChannel]:
    """The channels plugins register through ``blackhole_sync_notification_channels``,
    earliest-registered plugin first (so :func:`channels_from_config` prefers it)."""
    channels: list[NotificationChannel] = []
    results = pm.hook.blackhole_sync_notification_channels(node_config=dict(node_config or {}))
    for result in reversed(results):
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
