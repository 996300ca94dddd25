"""The update agent behind ``blackhole-sync node run``: follows the node's policy until stopped.

Each cycle opens the node (taking its lock only for the cycle, so operator commands such as
``node status`` or ``node confirm`` get in between), runs
:meth:`UpdateManager.sync_with_network`, and sleeps ``check_interval`` seconds (or until the
next time the policy asked to be consulted, whichever is sooner). SIGTERM and SIGINT stop it
cleanly: a download stops at once, while an install in progress runs to its end (commit or
rollback; the store's journal would finish or undo it on the next start anyway).

Each cycle first watches the current version's health
(:meth:`UpdateManager.confirm_current_health`): it is marked good once its health window has
passed, and abandoned -- rolled back and marked bad, never retried automatically -- after
``MAX_START_FAILURES`` failed checks in a row.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import anyio

from .clock import utcnow_precise
from .errors import BlackholeSyncError, NodeLockedError

__all__ = ["run_agent", "run_cycle"]

log = logging.getLogger(__name__)


async def run_cycle(node_dir: Path) -> tuple[str, float | None]:
    """One check-and-act cycle. Returns (summary, seconds until the policy wants a look)."""
    from .manager import UpdateManager

    async with UpdateManager(node_dir) as manager:
        health = await manager.confirm_current_health()
        if health in ("unhealthy", "abandoned"):
            return f"current version {health}", None
        result = await manager.sync_with_network()
        if result.error is not None:
            return f"check failed: {result.error}", None
        if result.installed is not None:
            r = result.installed
            return f"installed {r.version} ({r.method}, {r.bytes_fetched} bytes)", None
        if result.decision is None:
            held = manager.held_versions()
            if held:
                return f"up to date (held after a rollback: {', '.join(held)})", None
            return "up to date", None
        decision = result.decision
        wait = None
        if decision.not_before is not None:
            now = utcnow_precise()
            wait = max(1.0, (decision.not_before - now).total_seconds())
        return f"{decision.version}: {decision.action} ({decision.reason})", wait


async def run_agent(node_dir: Path, *, once: bool = False, interval: int | None = None) -> None:
    """Run cycles until SIGTERM/SIGINT (or once)."""
    from .node import NodeConfig, NodeLayout

    config = NodeConfig.from_file(NodeLayout(node_dir).config)
    period = float(interval or config.check_interval)
    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    log.warning("stopping the agent")
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_signal)
        while True:
            wait: float | None = None
            try:
                summary, wait = await run_cycle(node_dir)
                print(f"{utcnow_precise():%Y-%m-%dT%H:%M:%SZ} {summary}", flush=True)
            except NodeLockedError:
                print("node busy (another command holds its lock); will retry", flush=True)
            except BlackholeSyncError as exc:
                print(f"cycle failed: {exc}", flush=True)
                if once:
                    raise
            if once:
                tg.cancel_scope.cancel()
                return
            await anyio.sleep(min(period, wait) if wait is not None else period)
