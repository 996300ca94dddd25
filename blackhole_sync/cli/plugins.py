"""``blackhole-sync plugins list``: installed plugins, and any that failed to load."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK, add_command, add_group, emit

__all__ = ["add_parsers", "cmd_plugins_list"]


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from ..fetch import make_plugin_manager

    pm = make_plugin_manager(load_entrypoints=True)
    plugins = pm.describe()
    transports: list[dict[str, Any]] = [
        {
            "name": s.name,
            "schemes": sorted(s.schemes),
            "locator_kinds": sorted(s.locator_kinds),
            "backends": sorted(s.backends),
        }
        for s in pm.transport_specs()
    ]
    failures = [{"name": f.name, "error": f.error} for f in pm.failures]
    result = {"plugins": plugins, "transports": transports, "failed": failures}

    def text() -> str:
        lines = [f"{p['name']}  {p.get('distribution') or 'built-in'}" for p in plugins]
        lines += [
            f"transport {t['name']}: {', '.join(t['schemes'] + t['locator_kinds'])}"
            for t in transports
        ]
        lines += [f"FAILED {f['name']}: {f['error']}" for f in failures]
        return "\n".join(lines)

    emit(args, result, text)
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    plugins = add_group(sub, "plugins", "installed plugins")
    add_command(
        plugins,
        "list",
        cmd_plugins_list,
        "installed plugins, and any that failed to load",
        json_flag=True,
    )
