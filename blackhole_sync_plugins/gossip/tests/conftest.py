"""Fixtures for the gossip engine tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from netutil import Network


@pytest.fixture
def net() -> Iterator[Network]:
    """Real gossip nodes, one per process; all killed when the test ends, whatever happened."""
    network = Network()
    try:
        yield network
    finally:
        network.close()
