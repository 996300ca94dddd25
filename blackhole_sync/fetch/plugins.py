"""The plugin host: a fresh pluggy manager per host, with reporting of load failures.

Built-in features register through the same hooks as third-party plugins
(:data:`DEFAULT_PLUGINS`). Entry points in the ``blackhole_sync`` group load only when asked
(``load_entrypoints=True``); a plugin can be blocked by its entry-point name. A plugin that
fails to import or register is recorded in :attr:`PluginHost.failures`, never silently skipped.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

import pluggy
from attrs import frozen

from ..errors import PluginError, PluginLoadError
from . import hookspecs
from .transport import TransportSpec

__all__ = ["DEFAULT_PLUGINS", "PluginFailure", "PluginHost", "make_plugin_manager"]

log = logging.getLogger(__name__)

#: Core modules that implement hooks, registered like any plugin.
DEFAULT_PLUGINS: tuple[str, ...] = ("blackhole_sync.fetch._builtin",)


@frozen
class PluginFailure:
    name: str
    error: str


class PluginHost(pluggy.PluginManager):
    """A pluggy manager that records plugins that failed to load."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs.Hooks)
        self.failures: list[PluginFailure] = []
        self.entrypoint_names: dict[str, str] = {}

    # -- convenience views over the hooks -----------------------------------------------------

    def transport_specs(self) -> list[TransportSpec]:
        specs: list[TransportSpec] = []
        # pluggy calls the last registered first; reverse so built-ins come first and
        # third-party plugins may still add schemes the core lacks.
        for result in reversed(self.hook.blackhole_sync_transports()):
            specs.extend(result)
        for spec in specs:
            try:
                spec.check_api()
            except PluginError as exc:  # kept in the list: using it raises the same error
                failure = PluginFailure(spec.name, str(exc))
                if failure not in self.failures:
                    self.failures.append(failure)
        return specs

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            dist = self.entrypoint_names.get(name)
            out.append(
                {
                    "name": name,
                    "module": getattr(plugin, "__name__", repr(plugin)),
                    "distribution": dist,
                }
            )
        return out


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Names of hooks ``plugin`` implements that have no spec (and are not optional)."""
    return sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or ()
        if not caller.has_spec()
        and any(i.plugin is plugin and not i.optionalhook for i in caller.get_hookimpls())
    )


def make_plugin_manager(
    *,
    load_entrypoints: bool = False,
    block: Iterable[str] = (),
    builtins: bool = True,
    strict: bool = False,
) -> PluginHost:
    """A fresh plugin manager for one host.

    ``load_entrypoints`` loads third-party plugins from the ``blackhole_sync`` entry-point
    group; ``block`` names entry points (or built-in module names) not to load. A plugin that
    fails to load is recorded in ``failures`` and logged; with ``strict`` it raises
    :class:`PluginLoadError` instead.
    """
    pm = PluginHost()
    blocked = set(block)
    for name in blocked:
        pm.set_blocked(name)
    if builtins:
        for modname in DEFAULT_PLUGINS:
            if modname in blocked:
                continue
            pm.register(importlib.import_module(modname), name=modname)
    if load_entrypoints:
        # imported here: a host without third-party plugins never scans the distributions
        from importlib import metadata

        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            if ep.name in blocked or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
                unknown = _unknown_hooks(pm, plugin)
                if unknown:
                    # pluggy accepts these silently and never calls them: refuse the plugin.
                    pm.unregister(plugin)
                    raise PluginLoadError(f"implements unknown hooks {', '.join(unknown)}")
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                pm.failures.append(PluginFailure(ep.name, message))
                log.warning("plugin %s failed to load: %s", ep.name, message)
                if strict:
                    raise PluginLoadError(f"plugin {ep.name!r} failed to load: {message}") from exc
                continue
            dist = getattr(ep, "dist", None)
            pm.entrypoint_names[ep.name] = getattr(dist, "name", "") if dist else ""
    return pm
