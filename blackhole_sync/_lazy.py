"""Lazy package exports (PEP 562), the one implementation every package ``__init__`` uses.

A package lists ``{public name: module}`` and gets a module ``__getattr__`` that imports the
defining module on first use (and keeps the value, so the next access is a plain global) and a
``__dir__`` that shows the names before they are loaded. ``import blackhole_sync`` therefore
costs almost nothing, and a command imports only the modules it touches.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``namespace`` is its ``globals()``:
    ``exports`` maps each lazily exported name to its module: a submodule of ``package``
    (``"core"``), or a relative module name (``"..protocols"``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if module.startswith("."):
            value = getattr(importlib.import_module(module, package), name)
        else:
            value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
