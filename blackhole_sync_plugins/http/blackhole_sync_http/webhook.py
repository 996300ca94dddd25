"""The ``webhook`` notification channel: each update event POSTed as JSON.

Registered through the core's ``blackhole_sync_notification_channels`` hook when the node's
``config.toml`` has ``[webhook] url``; the manual policy's ``notification_channels`` turns it
on by name. It lives here, beside the HTTP client, so the core needs no HTTP library.

aiohttp runs under asyncio only: under another event loop (trio) the channel logs a warning
and sends nothing. A failure (refused connection, timeout, non-2xx status) is logged at
WARNING and never raised: notifications must not break the update path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from blackhole_sync import event_to_dict

__all__ = ["WebhookChannel", "webhook_from_config"]

log = logging.getLogger(__name__)


class WebhookChannel:
    """POSTs each event as JSON (``kind``, ``version``, ``detail``, ``time``) to ``url``."""

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

    async def notify(self, event: Any) -> None:
        import asyncio  # aiohttp too: imported when an event is sent, not with the plugin

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            log.warning("webhook %s: not sent, the webhook channel needs asyncio", self.url)
            return
        body = json.dumps(event_to_dict(event), sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json", **self.headers}
        import aiohttp

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


def webhook_from_config(node_config: Mapping[str, Any]) -> WebhookChannel | None:
    """The channel ``[webhook]`` describes, or None when it sets no ``url``."""
    table = node_config.get("webhook") or {}
    url = table.get("url") or ""
    if not url:
        return None
    return WebhookChannel(
        url, timeout=float(table.get("timeout", 10.0)), headers=table.get("headers") or {}
    )
