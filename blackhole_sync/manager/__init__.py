"""UpdateManager: check, download, verify, apply, sync and report -- the node side.

The orchestrator over the trust store (decisions), the repository client (fetching), the node
store (atomic installs), the delta codecs, the update policy and health. It is an async
context manager that holds the node's lock while open::

    async with UpdateManager("/srv/node") as manager:
        updates = await manager.check_for_updates()
        if updates:
            package = await manager.download_update(updates[0])
            await manager.verify_update(package)
            result = await manager.apply_update(package)

All expiry checks of one operation use one reference time, taken when the operation starts.
Everything fetched is verified before it is persisted, and persisted atomically.

The parts, bottom up: ``base`` (the open node, its trust, plugins and events), ``hooks`` (what
the node store calls back during an install), ``installed`` (the installed tree and the
regression watch), ``coordination`` (the network side: sync, status, consensus, rollouts,
halts, downgrades), ``core`` (the operations of one update, in the order they run, and
:class:`UpdateManager` combining the parts), ``setup`` (``init_node``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it (``..protocols`` for the values the protocols exchange).
#: Names load lazily (PEP 562): ``from blackhole_sync.manager import UpdateManager`` imports
#: the manager's parts, not the network side, the metrics sampler or the fetch clients they
#: import when an operation first needs them.
_EXPORTS: dict[str, str] = {
    "MAX_START_FAILURES": "base",
    "init_node": "setup",
    "NodeUpdateClient": "core",
    "UpdateManager": "core",
    "SyncResult": "..protocols",
    "UpdateInfo": "..protocols",
    "UpdatePackage": "..protocols",
    "UpdateResult": "..protocols",
    "UpdateStatus": "..protocols",
}

__all__ = [
    "MAX_START_FAILURES",
    "init_node",
    "NodeUpdateClient",
    "SyncResult",
    "UpdateInfo",
    "UpdateManager",
    "UpdatePackage",
    "UpdateResult",
    "UpdateStatus",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static names for type checkers
    from ..protocols import (
        SyncResult as SyncResult,
        UpdateInfo as UpdateInfo,
        UpdatePackage as UpdatePackage,
        UpdateResult as UpdateResult,
        UpdateStatus as UpdateStatus,
    )
    from .base import MAX_START_FAILURES as MAX_START_FAILURES
    from .core import NodeUpdateClient as NodeUpdateClient, UpdateManager as UpdateManager
    from .setup import init_node as init_node
