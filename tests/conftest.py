"""Shared fixtures for the core tests.

Test timeouts stop hangs, they do not measure speed: ``BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE``
multiplies every one of them -- pytest-timeout's (``blackhole_sync.testing.pytest_plugin``,
loaded by the pytest configuration in pyproject.toml), the subprocess helpers'
(``blackhole_sync.testing.run`` / ``spawn``) and the conformance kit's.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``pytest.mark.anyio`` test under asyncio and under trio."""
    return str(request.param)
