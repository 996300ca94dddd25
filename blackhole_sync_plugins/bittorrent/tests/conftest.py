"""Fixtures for the BitTorrent engine tests: real libtorrent sessions on 127.0.0.1 only."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bt_helpers import Cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "xdist_group(name): tests of one group run in one pytest-xdist worker"
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Processes for one test; at the end none is left running and no port stays bound."""
    group = Cluster(tmp_path)
    try:
        yield group
    finally:
        group.close()
