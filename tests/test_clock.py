"""The one clock (blackhole_sync.clock): whole seconds, UTC, following the wall clock."""

from __future__ import annotations

import datetime as dt

import pytest

from blackhole_sync import clock


def test_utcnow_is_the_wall_clock_truncated_to_the_second() -> None:
    before = clock.utcnow_precise()
    now = clock.utcnow()
    after = clock.utcnow_precise()
    assert now.tzinfo is dt.UTC and now.microsecond == 0
    assert before.replace(microsecond=0) <= now <= after


def test_utcnow_follows_the_clock_to_each_second_and_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The datetime of a second is built once and reused, never for another second (also
    when the wall clock is stepped back)."""
    readings = [1_000_000_000.2, 1_000_000_000.9, 1_000_000_001.0, 999_999_999.5]
    wall = clock.time.time
    # anything else reading time.time meanwhile (logging, pytest) gets the real clock
    monkeypatch.setattr(clock.time, "time", lambda: readings.pop(0) if readings else wall())
    seconds = [clock.utcnow() for _ in range(4)]
    assert not readings
    assert [int(s.timestamp()) for s in seconds] == [1_000_000_000, 1_000_000_000,
                                                     1_000_000_001, 999_999_999]  # fmt: skip
    assert seconds[0] is seconds[1]  # one datetime per second
    assert all(s.tzinfo is dt.UTC and s.microsecond == 0 for s in seconds)
