"""The plugin host: fresh managers, entry points on request, blocking, reported failures.

Third-party plugins are staged as real distributions: a ``*.dist-info`` directory with an
``entry_points.txt`` in a temporary directory put on ``sys.path``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import pluggy
import pytest

from blackhole_sync.errors import PluginLoadError
from blackhole_sync.fetch import hookspecs
from blackhole_sync.fetch.hookspecs import HOOK_NAMES, Hooks, hookimpl
from blackhole_sync.fetch.local import LOCAL_TRANSPORT_SPEC
from blackhole_sync.fetch.plugins import DEFAULT_PLUGINS, PluginHost, make_plugin_manager

GOOD = """
from blackhole_sync.fetch.hookspecs import hookimpl

LOADED = True

@hookimpl
def blackhole_sync_notification_channels():
    return ["tmp-channel"]
"""

BROKEN = "raise ImportError('this plugin is broken on purpose')\n"


@pytest.fixture
def dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install ``bhs-tmp-plugins`` (entry points ``good`` and ``broken``) on sys.path."""
    (tmp_path / "bhs_tmp_good.py").write_text(GOOD)
    (tmp_path / "bhs_tmp_broken.py").write_text(BROKEN)
    info = tmp_path / "bhs_tmp_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bhs-tmp-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[blackhole_sync]\ngood = bhs_tmp_good\nbroken = bhs_tmp_broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("bhs_tmp_good", "bhs_tmp_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield tmp_path
    for name in ("bhs_tmp_good", "bhs_tmp_broken"):
        sys.modules.pop(name, None)


def test_make_plugin_manager_returns_fresh_manager_each_call() -> None:
    first, second = make_plugin_manager(), make_plugin_manager()
    assert first is not second
    assert isinstance(first, PluginHost) and isinstance(first, pluggy.PluginManager)

    class Extra:
        @hookimpl
        def blackhole_sync_notification_channels(self, node_config: Any) -> list[str]:
            return ["extra"]

    first.register(Extra())
    assert first.hook.blackhole_sync_notification_channels(node_config={}) == [["extra"]]
    assert second.hook.blackhole_sync_notification_channels(node_config={}) == []


def test_builtins_register_through_the_hooks() -> None:
    pm = make_plugin_manager()
    assert [name for name, _ in pm.list_name_plugin()] == list(DEFAULT_PLUGINS)
    assert LOCAL_TRANSPORT_SPEC in pm.transport_specs()


def test_builtin_can_be_blocked_or_left_out() -> None:
    assert make_plugin_manager(block=DEFAULT_PLUGINS).transport_specs() == []
    assert make_plugin_manager(builtins=False).get_plugins() == set()


def test_entry_points_not_loaded_unless_asked(dist: Path) -> None:
    pm = make_plugin_manager()
    assert pm.get_plugin("good") is None
    assert "bhs_tmp_good" not in sys.modules
    assert pm.failures == []


def test_entry_points_loaded_when_asked(dist: Path) -> None:
    pm = make_plugin_manager(load_entrypoints=True, block=["broken"])
    assert pm.get_plugin("good") is sys.modules["bhs_tmp_good"]
    # other installed plugins (the HTTP plugin's webhook) answer too: [] with no webhook set
    assert ["tmp-channel"] in pm.hook.blackhole_sync_notification_channels(node_config={})
    assert {"name": "good", "module": "bhs_tmp_good", "distribution": "bhs-tmp-plugins"} in (
        pm.describe()
    )


def test_plugin_blocked_by_name_is_not_imported(dist: Path) -> None:
    pm = make_plugin_manager(load_entrypoints=True, block=["good", "broken"])
    assert pm.get_plugin("good") is None
    assert pm.is_blocked("good")
    assert "bhs_tmp_good" not in sys.modules
    assert pm.failures == []
    # A blocked name stays blocked even if registered by hand.
    assert pm.register(object(), name="good") is None


def test_plugin_failing_to_import_is_reported(dist: Path) -> None:
    pm = make_plugin_manager(load_entrypoints=True)
    assert [f.name for f in pm.failures] == ["broken"]
    assert "ImportError" in pm.failures[0].error
    assert "broken on purpose" in pm.failures[0].error
    assert pm.get_plugin("good") is not None  # the others still load


def test_plugin_failing_to_import_raises_in_strict_mode(dist: Path) -> None:
    with pytest.raises(PluginLoadError, match="broken"):
        make_plugin_manager(load_entrypoints=True, strict=True)


def test_plugin_with_unknown_hook_is_reported(dist: Path) -> None:
    (dist / "bhs_tmp_broken.py").write_text(
        "from blackhole_sync.fetch.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef blackhole_sync_no_such_hook():\n    return 1\n"
    )
    pm = make_plugin_manager(load_entrypoints=True)
    pm.check_pending()  # nothing unknown stays registered
    [failure] = pm.failures
    assert failure.name == "broken" and "no_such_hook" in failure.error


def test_every_hook_is_specified_documented_and_versioned() -> None:
    pm = make_plugin_manager()
    assert set(HOOK_NAMES) == {n for n in dir(pm.hook) if n.startswith("blackhole_sync_")}
    for name in HOOK_NAMES:
        doc = inspect.getdoc(getattr(Hooks, name))
        assert doc and ".. versionadded::" in doc, name
    assert hookspecs.PROJECT == "blackhole_sync"


def test_firstresult_only_where_one_answer_is_wanted() -> None:
    pm = make_plugin_manager()
    first = {n for n in HOOK_NAMES if getattr(pm.hook, n).spec.opts.get("firstresult")}
    assert first == {
        "blackhole_sync_server",
        "blackhole_sync_restart_service",
        "blackhole_sync_chain_height",
        "blackhole_sync_protocol_versions",
    }
