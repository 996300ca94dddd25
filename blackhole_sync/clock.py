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


#: The last whole second :func:`utcnow` built, and its datetime (immutable, so shared;
#: replaced as one tuple, so threads never see a second paired with another's datetime).
_last_second: tuple[int, _dt.datetime] = (0, _dt.datetime.fromtimestamp(0, _dt.UTC))


def utcnow() -> _dt.datetime:
    """The current time, timezone-aware UTC, whole seconds (the same clock as
    :func:`utcnow_precise`, truncated). The peer-message gate reads it for every message, so
    the datetime of a second is built once."""
    global _last_second
    second = int(time.time())
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, _dt.datetime.fromtimestamp(second, _dt.UTC))
    return last[1]
