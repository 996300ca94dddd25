"""Update lifecycle events: what notification channels and observers receive.

:class:`UpdateEvent` implements the :class:`blackhole_sync.fetch.hookspecs.UpdateEvent` protocol
(``kind``, ``version``, ``detail``) and adds the time it happened. ``detail`` is a read-only
mapping holding JSON-serialisable values only (see :meth:`UpdateEvent.to_dict`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from attrs import define, field

from .clock import utcnow_precise

__all__ = [
    "EVENT_KINDS",
    "UpdateEvent",
    "event_to_dict",
]

#: The event kinds the core emits. Plugins may emit others.
EVENT_KINDS: Final = (
    "checked",  # metadata refreshed; detail: {"available": [versions]}
    "available",  # a newer release is available (manual policy notification)
    "downloading",
    "downloaded",  # staged and verified, waiting for confirmation or the window
    "deferred",  # the operator or the window deferred it; detail: {"until": ISO time}
    "installing",
    "installed",  # detail may carry {"critical": true} for notify_after_install
    "rolled-back",
    "failed",  # detail: {"error": "..."}
    "protocol-activated",  # detail: {"proposal", "protocol_version", "height"}
    "downgraded",  # a signed downgrade was followed; detail: {"from_version", "reason"}
)


def _utcnow() -> _dt.datetime:
    return utcnow_precise()


def _freeze_detail(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _check_time(_inst: object, _attr: object, value: _dt.datetime) -> None:
    if value.tzinfo is None:
        raise ValueError("UpdateEvent.time must be timezone-aware")


@define
class UpdateEvent:
    """Something happened to an update on this node.

    ``kind`` is one of :data:`EVENT_KINDS` (or a plugin's own kind); ``version`` is the
    release concerned (None for node-wide events); ``detail`` is JSON-serialisable and
    read-only. Treat events as immutable: the class is not frozen only because the hookspecs
    protocol declares plain (settable) attributes.
    """

    kind: str
    version: str | None = None
    detail: Mapping[str, Any] = field(factory=dict, converter=_freeze_detail)
    time: _dt.datetime = field(factory=_utcnow, validator=_check_time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``kind``, ``version``, ``detail``, ``time`` (ISO, UTC)."""
        return event_to_dict(self)


def event_to_dict(event: Any) -> dict[str, Any]:
    """Serialise any object that satisfies the ``UpdateEvent`` protocol.

    ``time`` is taken from the event when it has one, else it is the current time.
    """
    when = getattr(event, "time", None)
    if not isinstance(when, _dt.datetime):
        when = _utcnow()
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    stamp = when.astimezone(_dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "kind": str(event.kind),
        "version": event.version,
        "detail": dict(event.detail),
        "time": stamp,
    }
