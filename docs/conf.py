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
# docs/benchmarks.md is bench/run.py's output; benchmarks.rst shows it (see _benchmarks below)
source_suffix = {".rst": "restructuredtext"}
html_theme = "alabaster"
# The design's protocols share their names with the library's implementations
# (blackhole_sync.protocols.UpdateManager vs blackhole_sync.manager.UpdateManager): type hints
# naming them resolve to either, which Sphinx reports as ambiguous. Both targets are right.
suppress_warnings = ["ref.python"]


# -- attrs classes: defaults as values ------------------------------------------------------------
#
# ``autodoc_preserve_defaults`` shows a default as written in the source. attrs writes the
# source of the ``__init__`` it generates itself, where every default reads
# ``attr_dict['name'].default``: the signature of an attrs class would show that instead of the
# value. Those expressions are replaced here by the field's default (a factory as ``list()``).

import enum  # noqa: E402
import inspect  # noqa: E402
import re  # noqa: E402
from typing import Any  # noqa: E402

import attrs  # noqa: E402

_ATTR_DEFAULT = re.compile(r"attr_dict\['(\w+)'\]\.default")


def _shown(value: Any) -> str:
    """A default as a reader of the API wants it: a value, a factory call, a name."""
    if isinstance(value, attrs.Factory):  # type: ignore[arg-type]
        factory = value.factory
        return f"{getattr(factory, '__qualname__', repr(factory))}()"
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if inspect.isroutine(value) or inspect.isclass(value):
        return getattr(value, "__qualname__", repr(value))
    return repr(value)


def _owner(what: str, name: str, obj: Any) -> Any:
    """The attrs class whose generated ``__init__`` gives ``obj`` its signature, if any."""
    if inspect.isclass(obj):
        return obj if attrs.has(obj) else None
    module, _, qualname = name.rpartition(".")
    if what == "method" and qualname == "__init__":
        import importlib

        owner_name = module
        mod_name, _, cls_name = owner_name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError):
            return None
        return cls if inspect.isclass(cls) and attrs.has(cls) else None
    return None


def _attrs_defaults(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, ret: str | None
) -> tuple[str | None, str | None] | None:
    if not signature or ("attr_dict[" not in signature and "NOTHING" not in signature):
        return None
    cls = _owner(what, name, obj)
    if cls is None:
        return None
    fields = attrs.fields_dict(cls)

    def value(match: re.Match[str]) -> str:
        field = fields.get(match.group(1))
        return match.group(0) if field is None else _shown(field.default)

    signature = _ATTR_DEFAULT.sub(value, signature)
    # a factory default is NOTHING in the generated signature: show the factory instead
    for field in fields.values():
        if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            arg = getattr(field, "alias", None) or field.name.lstrip("_")
            signature = re.sub(
                rf"(\b{re.escape(arg)}\b(?::[^=]*?)?\s*=\s*)NOTHING\b",
                lambda m, f=field: m.group(1) + _shown(f.default),
                signature,
            )
    return signature, ret


# -- the benchmark report -------------------------------------------------------------------------
#
# ``nox -s bench`` (bench/run.py) writes docs/benchmarks.md: a title, a paragraph naming the run
# and the machine, and a markdown table. ``benchmarks.rst`` holds a placeholder line that is
# replaced, when Sphinx reads the page, by that report turned into reStructuredText (a
# list-table), so the built documentation always shows the latest report without a markdown
# parser. The page is rebuilt whenever the report changes.

BENCHMARKS_MD = Path(__file__).resolve().parent / "benchmarks.md"
BENCHMARKS_PLACEHOLDER = ".. benchmark-report::"


def _inline(text: str) -> str:
    """Markdown code spans (`x`) as reStructuredText literals (``x``); nothing else changes."""
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", text)


def _cells(line: str) -> list[str]:
    """A markdown table row's cells (``\\|`` is a pipe inside a cell)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def benchmark_report_rst(markdown: str) -> str:
    """The report (bench/run.py's markdown) as reStructuredText, its title dropped."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if not table:
            return
        header, *rows = table
        out.extend(["", ".. list-table::", "   :header-rows: 1", ""])
        for row in [header, *rows]:
            cells = [c.replace("|", "\\|") for c in row + [""] * (len(header) - len(row))]
            out.append(f"   * - {_inline(cells[0]) or ' '}")
            out.extend(f"     - {_inline(cell) or ' '}" for cell in cells[1 : len(header)])
        out.append("")
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*", line.strip()):
                table.append(_cells(line))
            continue
        flush()
        if line.startswith("# "):
            continue  # the page has its own title
        out.append(_inline(line))
    flush()
    return "\n".join(out) + "\n"


def _benchmarks(app: Any, docname: str, source: list[str]) -> None:
    if docname != "benchmarks" or BENCHMARKS_PLACEHOLDER not in source[0]:
        return
    if BENCHMARKS_MD.exists():
        app.env.note_dependency(str(BENCHMARKS_MD))
        report = benchmark_report_rst(BENCHMARKS_MD.read_text(encoding="utf-8"))
    else:
        report = "No benchmark report yet: run ``nox -s bench``.\n"
    source[0] = source[0].replace(BENCHMARKS_PLACEHOLDER, report)


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _attrs_defaults)
    app.connect("source-read", _benchmarks)
