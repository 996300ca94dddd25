"""One knob for every timeout in tests: ``BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE``.

Timeouts in tests stop hangs; they do not measure speed. On a loaded machine the same test
takes longer, so every test timeout (and the conformance kit's) is multiplied by this factor
(default 1; CI on a busy runner may set 3). Speed targets live in the benchmarks.
"""

from __future__ import annotations

import os

__all__ = ["TIMEOUT_SCALE_ENV", "scaled", "timeout_scale"]

TIMEOUT_SCALE_ENV = "BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE"


def timeout_scale() -> float:
    """The factor from the environment (at least 1; a bad value is an error, not ignored)."""
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "1")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_SCALE_ENV}={raw!r} is not a number") from None
    if not value >= 1:
        raise ValueError(f"{TIMEOUT_SCALE_ENV}={raw!r} must be at least 1")
    return value


def scaled(seconds: float) -> float:
    """``seconds`` times the timeout scale."""
    return seconds * timeout_scale()
