"""Sphinx configuration for the blackhole-sync documentation."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "blackhole-sync"
author = "blackhole-sync maintainers"
copyright = "blackhole-sync maintainers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
exclude_patterns = ["_build"]
html_theme = "alabaster"
# The design's protocols share their names with the library's implementations
# (blackhole_sync.protocols.UpdateManager vs blackhole_sync.manager.UpdateManager): type hints
# naming them resolve to either, which Sphinx reports as ambiguous. Both targets are right.
suppress_warnings = ["ref.python"]
