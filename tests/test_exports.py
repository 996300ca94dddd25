"""Every public module declares ``__all__``; every listed name exists and is importable.

For the modules of the signed-document core the exports are also complete: every public class
or function defined there is listed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import blackhole_sync

PUBLIC_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(blackhole_sync.__path__, "blackhole_sync.")
    if not any(part.startswith("_") for part in info.name.split(".")[1:])
)
COMPLETE = [
    "blackhole_sync.errors",
    "blackhole_sync.fetch.hookspecs",
    "blackhole_sync.documents.announcement",
    "blackhole_sync.documents.artifacts",
    "blackhole_sync.documents.canonical",
    "blackhole_sync.documents.envelope",
    "blackhole_sync.documents.fields",
    "blackhole_sync.documents.governance",
    "blackhole_sync.documents.index",
    "blackhole_sync.documents.node_documents",
    "blackhole_sync.documents.registry",
    "blackhole_sync.documents.release",
    "blackhole_sync.documents.root",
    "blackhole_sync.fetch.plugins",
    "blackhole_sync.documents.signing",
    "blackhole_sync.documents.trust",
    "blackhole_sync.documents.versions",
]


def test_public_modules_found() -> None:
    assert set(COMPLETE) <= set(PUBLIC_MODULES)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist_and_import(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list | tuple), f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    assert set(exported) <= set(namespace)


def defined_here(module: ModuleType) -> set[str]:
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    }


@pytest.mark.parametrize("name", COMPLETE)
def test_core_exports_complete(name: str) -> None:
    module = importlib.import_module(name)
    unlisted = defined_here(module) - set(module.__all__)
    assert not unlisted, f"{name} defines public names missing from __all__: {sorted(unlisted)}"


def test_error_tree_drawn_in_docstring() -> None:
    from blackhole_sync import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.BlackholeSyncError)
        assert name in (errors.__doc__ or ""), f"{name} is not drawn in the errors docstring"
