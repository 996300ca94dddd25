"""The one clock: "now" in UTC.

Every decision that depends on time (document expiry, update windows, deferrals, effective
dates) reads it here, so a test can move time for the whole library in one place and a
project test (``tests/test_single_home.py``) can check nobody reads the wall clock elsewhere.
Signed documents carry whole seconds, so :func:`utcnow` drops microseconds; :func:`utcnow_precise`
keeps them for event timestamps.
"""

from __future__ import annotations

import datetime as _dt
import time

__all__ = ["utcnow", "utcnow_precise"]


def utcnow_precise() -> _dt.datetime:
    """The current time, timezone-aware UTC, with microseconds."""
    return _dt.datetime.now(_dt.UTC)


def utcnow() -> _dt.datetime:
    """The current time, timezone-aware UTC, whole seconds (the same clock as
    :func:`utcnow_precise`, truncated; built without ``replace``, which costs twice as much:
    the peer-message gate reads it for every message)."""
    return _dt.datetime.fromtimestamp(int(time.time()), _dt.UTC)
