"""The documentation keeps up with the code (datasette's tests/test_docs.py).

Every hook in :class:`blackhole_sync.fetch.hookspecs.Hooks` is documented in docs/plugins.rst with
its exact signature; the document formats page names every field the parsers read.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from blackhole_sync.fetch.hookspecs import HOOK_NAMES, Hooks

DOCS = Path(__file__).resolve().parent.parent / "docs"


def expected_signature(name: str) -> str:
    """``name(arg: Annotation, ...) -> Return`` as written in the source (self dropped)."""
    sig = inspect.signature(getattr(Hooks, name))
    params = list(sig.parameters.values())[1:]
    assert all(p.annotation is not inspect.Parameter.empty for p in params), name
    args = ", ".join(f"{p.name}: {p.annotation}" for p in params)
    return f"{name}({args}) -> {sig.return_annotation}"


@pytest.fixture(scope="module")
def plugins_rst() -> str:
    return (DOCS / "plugins.rst").read_text(encoding="utf-8")


def test_hooks_found() -> None:
    assert len(HOOK_NAMES) >= 10
    assert set(HOOK_NAMES) == {n for n in vars(Hooks) if n.startswith("blackhole_sync_")}


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_documented_with_exact_signature(plugins_rst: str, name: str) -> None:
    directive = f".. automethod:: blackhole_sync.fetch.hookspecs.Hooks.{expected_signature(name)}\n"
    assert directive in plugins_rst, f"docs/plugins.rst lacks: {directive}"


def test_no_stale_hooks_documented(plugins_rst: str) -> None:
    documented = set(re.findall(r"Hooks\.(blackhole_sync_\w+)", plugins_rst))
    assert documented == set(HOOK_NAMES)


@pytest.mark.parametrize(
    "field",
    [
        # root
        "keys.*.public",
        "roles.*.threshold",
        "network_id",
        # index
        "channels.*.releases",
        "channels.*.withdrawn",
        "rollouts",
        "halts",
        "validators",
        "proposals",
        "deprecations",
        "downgrades",
        "release_digest",
        "halt_threshold_bp",
        "schema_floor",
        "activation_height",
        # release manifest
        "artifacts",
        "released",
        "critical",
        "priority",
        "deltas",
        "migrations",
        "schema",
        "config_changes",
        "protocol",
        "compatibility",
        "self_test",
        "health",
        "notes",
        "unpack",
        "locators",
        "encryption",
        "output_length",
        "codec",
    ],
)
def test_formats_page_lists_field(field: str) -> None:
    assert f"``{field}``" in (DOCS / "formats.rst").read_text(encoding="utf-8")
