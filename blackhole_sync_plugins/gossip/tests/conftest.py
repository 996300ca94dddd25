"""Fixtures for the gossip engine tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
# The node helpers live beside the tests; the package one level up (for runs
# from the repository root without an editable install).
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from netutil import Network  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so --strict-markers passes when the repository's
    # root configuration (which does not list it) runs these tests.
    config.addinivalue_line(
        "markers", "xdist_group(name): tests that start real hosts; one pytest-xdist worker group"
    )


@pytest.fixture
def net() -> Iterator[Network]:
    """Real gossip nodes, one per process; all killed when the test ends, whatever happened."""
    network = Network()
    try:
        yield network
    finally:
        network.close()
