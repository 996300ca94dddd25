"""The documentation builds, warnings as errors, and says what readers need (as ``nox -s docs``).

The built HTML shows defaults as values: an attrs class's generated ``__init__`` reads
``attr_dict['name'].default`` for each default, which autodoc would print as is
(``docs/conf.py`` replaces them). Plugin authors find what the conformance kit checks, and the
API reference has the test kit, the capabilities and the sink they implement against.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from blackhole_sync.fetch import transport
from blackhole_sync.testing import CHECKS, run

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sphinx", reason="sphinx builds the documentation")
    out = tmp_path_factory.mktemp("html")
    result = run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        timeout=900,
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stderr[-6000:]}"
    return out


def test_the_built_html_shows_defaults_as_values(html: Path) -> None:
    pages = sorted(html.glob("*.html"))
    assert pages
    leaked = {p.name: p.read_text(encoding="utf-8").count("attr_dict") for p in pages}
    assert not any(leaked.values()), f"attrs' attr_dict[...] in rendered signatures: {leaked}"
    api = (html / "api.html").read_text(encoding="utf-8")
    assert "= NOTHING" not in re.sub(r"<[^>]+>", "", api), (
        "an attrs factory default shown as NOTHING"
    )
    text = re.sub(r"<[^>]+>", "", api)
    assert "backup_before_update: bool = True" in text  # a value, as written in the class


def test_the_api_reference_has_the_test_kit_the_capabilities_and_the_sink(html: Path) -> None:
    api = (html / "api.html").read_text(encoding="utf-8")
    names = [
        "blackhole_sync.testing.conformance.check_transport",
        "blackhole_sync.testing.conformance.CHECKS",
        "blackhole_sync.testing.conformance.TransportUnderTest",
        "blackhole_sync.testing.memory.MemoryTransport",
        "blackhole_sync.testing.timeouts.scaled",
        "blackhole_sync.testing.processes.run",
        "blackhole_sync.fetch.transport.Sink",
        *(f"blackhole_sync.fetch.transport.{n}" for n in transport.__all__ if n.startswith("CAP_")),
    ]
    missing = [n for n in names if f'id="{n}"' not in api]
    assert not missing, f"docs/api.rst does not render: {missing}"


def test_plugins_page_states_what_the_conformance_kit_checks() -> None:
    text = (DOCS / "plugins.rst").read_text(encoding="utf-8")
    section = text.split("What the conformance kit checks", 1)[1].split("\nHooks\n", 1)[0]
    for name in CHECKS:
        assert re.search(rf"^``{name}``", section, re.MULTILINE), f"check {name!r} not described"
    assert "LengthExceededError" in section.split("``length_cap``", 1)[1].split("``missing``")[0]
    assert "AssertionError" in section and "naming" in section
    assert "no check applied" in section


def test_the_docs_show_the_latest_benchmark_report(html: Path) -> None:
    """docs/benchmarks.md (bench/run.py's report) is rendered as is: its run line with the
    machine, and every row of its table, cell by cell."""
    report = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (html / "benchmarks.html").read_text()))
    page = page.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    run_line = next(line for line in report.splitlines() if line.startswith("The latest"))
    machine = run_line.split(" on ", 1)[1].split(";")[0].rstrip(".")
    assert machine in page, machine
    rows = [line for line in report.splitlines() if line.startswith("| bench_")]
    assert rows, "docs/benchmarks.md has no rows"
    for row in rows:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip("|"))]
        assert " ".join(c for c in cells if c) in page, row
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    assert re.search(r"^\s+benchmarks$", index, re.MULTILINE), "not in the toctree"
