"""The update agent behind ``blackhole-sync node run``: follows the node's policy until stopped.

Each cycle opens the node (taking its lock only for the cycle, so operator commands such as
``node status`` or ``node confirm`` get in between), runs
:meth:`UpdateManager.sync_with_network`, and sleeps ``check_interval`` seconds (or until the
next time the policy asked to be consulted, whichever is sooner) -- unless the peer network
wakes it first. A cycle that failed is tried again after :data:`FAILED_RETRY` seconds, doubling
with each failure in a row up to the check interval. SIGTERM and SIGINT stop it cleanly: a
download stops at once, while an install in progress runs to its end (commit or rollback; the
store's journal would finish or undo it on the next start anyway).

The peer side (:class:`~blackhole_sync.network.PeerNetwork`, when a peer-to-peer transport is
installed and ``[network] peer_to_peer`` is on) lives as long as the agent: it catches up on
start (asks peers for the newest announcement), listens for announcements -- one the gate
accepts whose index is newer than the node's wakes the agent for a check recorded with
``trigger: "announce"`` -- and broadcasts the node's signed status every
``[network] status_interval`` seconds and after each install. After every cycle it offers the
transfer blobs the node keeps (``NODE/blobs``) over the transports that seed
(:func:`seed_kept_blobs`: IPFS pins them, and unpins those of pruned versions).

Each cycle first applies the configuration changes whose effective date has come
(:meth:`UpdateManager.apply_due_config_changes`), then watches the current version's health
(:meth:`UpdateManager.confirm_current_health`): it is marked good once its health window has
passed, and abandoned -- marked bad, never retried automatically, and rolled back to a
re-hashed (or re-fetched) tree -- after ``MAX_START_FAILURES`` failed checks in a row. While
the current version is good, each cycle adds one metric sample to its regression baseline
(``[regression]``). A running version that was withdrawn is left only upward, for the newest
valid release; with nothing newer the cycle says so and stays. A release held after a
rollback is named as such, never reported as "up to date".
"""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .clock import utcnow_precise
from .errors import BlackholeSyncError, NodeLockedError

if TYPE_CHECKING:
    from .fetch import PluginHost
    from .network import Decided, PeerNetwork
    from .network.service import CoordinationService

__all__ = ["run_agent", "run_cycle", "seed_kept_blobs"]

log = logging.getLogger(__name__)

#: Seconds before a cycle that found the node locked (by a command, or the status broadcast)
#: is tried again.
LOCKED_RETRY = 5.0
#: Seconds before a failed cycle (a source that timed out, a fetch cut short) is tried again,
#: doubled after each failure in a row up to the check interval: an install due at a
#: protocol's activation height is not left for a whole interval by one bad moment.
FAILED_RETRY = 15.0


def _retry_after(failures: int, period: float) -> float:
    """Seconds before the next try after ``failures`` failed cycles in a row (and one more)."""
    return min(period, FAILED_RETRY * 2.0 ** min(failures, 32))


class _CheckFailed(BlackholeSyncError):
    """The cycle's check could not be completed (``run_cycle(..., raise_on_failure=True)``)."""


async def run_cycle(
    node_dir: Path,
    *,
    trigger: str = "poll",
    plugins: PluginHost | None = None,
    peers: PeerNetwork | None = None,
    raise_on_failure: bool = False,
) -> tuple[str, float | None]:
    """One check-and-act cycle. Returns (summary, seconds until the policy wants a look).

    A check that could not be completed (no source answered, a fetch failed) is a summary
    starting "check failed", or with ``raise_on_failure`` a :class:`BlackholeSyncError`."""
    from .manager import UpdateManager

    async with UpdateManager(node_dir, plugins=plugins, peers=peers) as manager:
        applied = manager.apply_due_config_changes()
        if applied:
            log.warning("applied configuration changes now due: %s", ", ".join(applied))
        current = manager.store.current_version()
        health = await manager.confirm_current_health()
        if health in ("unhealthy", "abandoned"):
            if health == "abandoned" and current is not None:
                await manager.health_report(current, False, reason="abandoned after failed checks")
            return f"current version {health}", None
        if health == "good":
            await manager.record_baseline_sample()
        result = await manager.sync_with_network(trigger=trigger)
        if result.error is not None:
            if raise_on_failure:
                raise _CheckFailed(str(result.error))
            return f"check failed: {result.error}", None
        if result.installed is not None:
            r = result.installed
            if peers is not None and peers.active:
                await manager.health_report(r.version, True, method=r.method)
                await manager.broadcast_update_status()
            return f"installed {r.version} ({r.method}, {r.bytes_fetched} bytes)", None
        if result.decision is None:
            status = manager.get_update_status()
            yanked = status.yanked
            if yanked is not None:
                reason = yanked["reason"] or "no reason given"
                return (
                    f"the running version {yanked['version']} was withdrawn ({reason}); "
                    "no newer release to move to: staying on it"
                ), None
            waiting = [v for v in status.available if v in status.held_versions]
            if waiting:
                names = ", ".join(waiting)
                return (
                    f"not installing {names}: held after a rollback "
                    f"(`node confirm --version {waiting[-1]}` or `node update` installs it)"
                ), None
            return "up to date", None
        decision = result.decision
        wait = None
        if decision.not_before is not None:
            now = utcnow_precise()
            wait = max(1.0, (decision.not_before - now).total_seconds())
        return f"{decision.version}: {decision.action} ({decision.reason})", wait


class _Wake:
    """The agent's alarm clock: the next cycle starts at the timeout or when rung."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.reason = "poll"

    def ring(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    async def wait(self, seconds: float) -> str:
        with anyio.move_on_after(seconds):
            await self._event.wait()
        reason = self.reason if self._event.is_set() else "poll"
        self._event = anyio.Event()
        self.reason = "poll"
        return reason


def open_peer_network(
    node_dir: Path, plugins: PluginHost, coordination: CoordinationService | None = None
) -> PeerNetwork:
    """The node's peer network: its installed peer transports, its identity, and the gate
    over its trusted root and persisted seq floors (not started: use ``async with``). With
    ``coordination``, the gate checks votes and certificates against the node's validator set
    and proposals, and transports get the handshake's ``hello`` and ``admit`` (fork ids)."""
    from .codecs import load_private_key
    from .documents import TrustedState
    from .network import PeerMessageGate, PeerNetwork
    from .node import NodeConfig, NodeLayout, StateDB, TrustStore

    layout = NodeLayout(node_dir)
    config = NodeConfig.from_file(layout.config)
    trust = TrustStore(layout)
    roots: dict[bytes, Any] = {}

    def root() -> Any:  # re-read when the trusted root was rotated by a check
        data = trust.root_bytes()
        if data not in roots:
            roots.clear()
            roots[data] = TrustedState(data).root
        return roots[data]

    if coordination is None:
        floors = StateDB.open(layout.state_db)
        gate = PeerMessageGate(root, floors)
    else:
        gate = PeerMessageGate(
            root,
            coordination.store,
            validators=coordination.validators,
            proposal=coordination.proposal,
        )
    identity = load_private_key(layout.identity_key)

    def index_keys() -> list[bytes]:  # where BEP 44 announcements are stored (DHT lookups)
        _spec, keys = root().role_keys("index")
        return [key.raw for key in keys.values()]

    options: dict[str, Any] = {
        "network_id": root().network_id,
        "identity_key": identity.seed,
        "state_root": layout.root,
        "loopback_only": config.network.loopback_only,
        "node_config": config.to_dict(),
        "index_keys": index_keys,
    }
    if coordination is not None:
        options.update(coordination.transport_options())
    specs = plugins.transport_specs() if config.network.peer_to_peer else []
    return PeerNetwork(specs, gate, options)


async def _listen(peers: PeerNetwork, node_dir: Path, wake: _Wake) -> None:
    """Wake the agent when the gate accepts an announcement of an index newer than ours."""
    from .documents import Envelope, Index
    from .node import NodeLayout, TrustStore

    trust = TrustStore(NodeLayout(node_dir))

    def trusted_version() -> int:
        data = trust.index_bytes()
        if data is None:
            return 0
        return Envelope.from_bytes(data, expected_type="index").parse(Index.from_dict).version

    def consider(decided: Decided) -> None:
        if decided.kind == "announcement" and decided.document.index_version > trusted_version():
            log.info("announcement of index %d: checking now", decided.document.index_version)
            wake.ring("announce")

    for decided in await peers.catch_up("announcement"):
        consider(decided)
    # closed here, in this task, also when the loop ends by an exception (an async
    # generator holding a task group must not be finalised from another task)
    async with contextlib.aclosing(peers.messages(["announcement"])) as messages:
        async for decided in messages:
            consider(decided)


async def seed_kept_blobs(peers: PeerNetwork, node_dir: Path) -> list[str]:
    """Offer the node's kept transfer blobs (``NODE/blobs``) and the installed artifacts that
    travel as they are installed (:func:`~blackhole_sync.node.installed_blobs`: a node that
    built its copy from a delta patch serves the whole artifact too) over the peer transports
    that seed (IPFS pins them; the blobs of pruned versions are unpinned); the transports that
    took it.

    Called after every cycle: pins follow installs and prunes, whichever command did them.
    """
    from .node import NodeLayout, installed_blobs, kept_blobs

    layout = NodeLayout(node_dir)
    blobs = await anyio.to_thread.run_sync(installed_blobs, layout)
    blobs.update({sha256: layout.blob(sha256) for sha256 in kept_blobs(layout)})
    return await peers.seed(blobs)


async def _broadcast_status(peers: PeerNetwork, node_dir: Path, plugins: PluginHost) -> None:
    from .manager import UpdateManager
    from .node import NodeConfig, NodeLayout

    interval = NodeConfig.from_file(NodeLayout(node_dir).config).network.status_interval
    while True:
        try:
            async with UpdateManager(node_dir, plugins=plugins, peers=peers) as manager:
                await manager.broadcast_update_status()
        except NodeLockedError:
            pass  # a cycle holds the node; the next round will tell
        except BlackholeSyncError as exc:
            log.warning("status broadcast failed: %s", exc)
        await anyio.sleep(interval)


async def run_agent(
    node_dir: Path,
    *,
    once: bool = False,
    interval: int | None = None,
    plugins: PluginHost | None = None,
) -> None:
    """Run cycles until SIGTERM/SIGINT (or once)."""
    from contextlib import AsyncExitStack

    from .fetch import make_plugin_manager
    from .node import NodeConfig, NodeLayout

    config = NodeConfig.from_file(NodeLayout(node_dir).config)
    period = float(interval or config.check_interval)
    plugins = plugins or make_plugin_manager(
        load_entrypoints=config.plugins.autoload, block=config.plugins.block
    )
    wake = _Wake()
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(anyio.create_task_group())

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    log.warning("stopping the agent")
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_signal)
        peers: PeerNetwork | None = None
        coordination: CoordinationService | None = None
        if not once:
            from .network.service import CoordinationService
            from .node import StateDB

            store = StateDB.open(NodeLayout(node_dir).state_db)
            stack.callback(store.close)
            coordination = CoordinationService(node_dir, plugins, store)
            peers = await stack.enter_async_context(
                open_peer_network(node_dir, plugins, coordination)
            )
            if peers.active:
                tg.start_soon(_listen, peers, node_dir, wake)
                tg.start_soon(_broadcast_status, peers, node_dir, plugins)
                tg.start_soon(coordination.listen, peers, wake.ring)
            tg.start_soon(coordination.run, peers, wake.ring)
        trigger = "start"
        failures = 0
        while True:
            wait: float | None = None
            try:
                try:
                    summary, wait = await run_cycle(
                        node_dir,
                        trigger=trigger,
                        plugins=plugins,
                        peers=peers,
                        raise_on_failure=not once,
                    )
                    failures = 0
                except _CheckFailed as exc:
                    wait = _retry_after(failures, period)
                    failures += 1
                    summary = f"check failed: {exc}; retrying in {wait:g} s"
                print(f"{utcnow_precise():%Y-%m-%dT%H:%M:%SZ} {summary}", flush=True)
                if coordination is not None:
                    coordination.reload()
                if peers is not None and peers.active:
                    await seed_kept_blobs(peers, node_dir)
            except NodeLockedError:
                print("node busy (another command holds its lock); will retry", flush=True)
                wait = LOCKED_RETRY  # soon: not a whole check interval later
            except BlackholeSyncError as exc:
                if once:
                    print(f"cycle failed: {exc}", flush=True)
                    raise
                wait = _retry_after(failures, period)
                failures += 1
                print(f"cycle failed: {exc}; retrying in {wait:g} s", flush=True)
            if once:
                tg.cancel_scope.cancel()
                return
            trigger = await wake.wait(min(period, wait) if wait is not None else period)
