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


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _attrs_defaults)
