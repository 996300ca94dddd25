"""The update manager's network side: sync, status broadcast, consensus, rollouts, halts,
compatibility, health reports and signed downgrades.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs

from ..documents import (
    compare_versions,
    parse_time,
    version_key,
)
from ..errors import (
    BlackholeSyncError,
    HealthCheckError,
    MigrationError,
    NoSuchVersionError,
)
from ..node import (
    Decision,
    decide,
)
from ..protocols import SyncResult, UpdateInfo, UpdateResult, UpdateStatus

# The network side (``..network``) and the fetch clients are imported where they are used.
if TYPE_CHECKING:
    from ..documents import ReleaseManifest, TrustedState
    from ..fetch import RepositoryClient
    from ..network import CompatibilityManager
    from ..network.coordinator import Coordinator


from .base import MAX_START_FAILURES, ManagerBase, _discard
from .hooks import ManagerInstallHooks

__all__ = ["CoordinationSide"]

log = logging.getLogger("blackhole_sync.manager")


class CoordinationSide(ManagerBase):
    """The update manager's network side: sync, status broadcast, consensus, rollouts, halts,"""

    async def sync_with_network(self, *, trigger: str = "poll") -> SyncResult:
        """One agent tick: check, let the policy decide, and act on the decision.

        ``trigger`` says what started the check ("poll", "announce", "start"); it is recorded
        with the check (``node status``'s ``last_check``).
        """
        try:
            infos = await self.check_for_updates(trigger=trigger)
        except BlackholeSyncError as exc:
            self.metrics.record_error(str(exc))
            return SyncResult((), None, error=str(exc))
        held = set(self.held_versions())
        infos = [i for i in infos if i.version not in held]
        yanked = self.current_withdrawal()
        if yanked is not None:
            # A yank never moves a node down: only upward, to the newest valid release.
            infos.sort(key=lambda i: version_key(i.version), reverse=True)
            if not infos:
                log.warning(
                    "the running version %s was withdrawn (%s) and no newer release is "
                    "available: staying on it",
                    yanked["version"],
                    yanked["reason"] or "no reason given",
                )
                self._emit("withdrawn", yanked["version"], reason=yanked["reason"])
        followed = await self.follow_downgrade()
        if followed is not None:
            return SyncResult(tuple(infos), None, followed)
        await self._roll_back_halted()
        infos, waiting = self._coordination_gate(infos)
        if waiting is not None:
            self._emit("decision", waiting.version, action="wait", reason=waiting.reason)
            if not infos:
                return SyncResult((), waiting)
        if not infos:
            return SyncResult((), None)
        info = infos[0]
        decision = decide(self.config.policy, info, now=self._clock(), state=self.policy_state())
        automatic = self.config.policy.mode == "automatic"
        if decision.action == "install" and automatic and decision.require_health_check:
            if not self.health_check_applies(info.manifest):
                decision = attrs.evolve(
                    decision,
                    action="skip",
                    reason=(
                        f"no health check applies to {info.version} and the policy requires "
                        "one (require_health_check = true): configure [commands] health, or "
                        "install it with `node update`"
                    ),
                    not_before=None,
                )
        self._emit("decision", info.version, action=decision.action, reason=decision.reason)
        installed: UpdateResult | None = None
        if decision.notify:
            await self._notify(
                "available", info.version, action=decision.action, reason=decision.reason
            )
            self.policy_state().mark_notified(info.version)
        if decision.action == "download":
            package = await self.download_update(info)
            self.policy_state().mark_downloaded(info.version)
            _discard(package)
        elif decision.action == "install":
            package = await self.download_update(info)
            try:
                installed = await self.apply_update(package)
            except HealthCheckError as exc:  # rolled back: the network hears it failed here
                await self.health_report(info.version, False, reason=str(exc)[:200])
                raise
            if decision.notify_after_install and not info.critical:
                await self._notify("installed", info.version)
        return SyncResult(tuple(infos), decision, installed)

    def health_check_applies(self, manifest: ReleaseManifest) -> bool:
        """Whether a health check runs after a switch to ``manifest``'s release: its own,
        ``[commands] health`` or a plugin's (``blackhole_sync_health_checks``)."""
        if manifest.health is not None or self.config.health_command() is not None:
            return True
        results = self.plugins.hook.blackhole_sync_health_checks(node_dir=self.node_dir)
        return any(list(r) for r in results)

    def current_withdrawal(self) -> dict[str, str] | None:
        """``{"version", "reason"}`` when the running version was withdrawn (yanked) in the
        trusted index, else None. A yank is shown, never acted on downward."""
        current = self.store.current_version()
        index = self._trusted().index
        if current is None or index is None:
            return None
        reason = index.withdrawal(current)
        return None if reason is None else {"version": current, "reason": reason}

    async def broadcast_update_status(self, status: UpdateStatus | None = None) -> bytes:
        """Sign this node's status and spread it: over the peer network the manager was given
        (``peers``: gossip, IPFS pubsub) and to the ``blackhole_sync_broadcast_status`` hook's
        implementations. Returns the signed bytes."""
        from ..documents import Envelope, NodeStatusDoc

        status = status or self.get_update_status()
        seq = int(self.store.get_meta("status_seq") or "0") + 1
        self.store.set_meta("status_seq", str(seq))
        key = self.identity_key()
        now = self._clock()
        doc = NodeStatusDoc(
            node_id=key.public_key.hex,
            network_id=self._trusted().root.network_id,
            seq=seq,
            expires=now + _dt.timedelta(hours=1),
            current_version=status.current_version,
            state=status.state,
            since=self._current_since(),
            held=tuple(status.installed_versions[-NodeStatusDoc.MAX_HELD :]),
            fork_id=self._fork_id(),
        )
        envelope = Envelope.sign(doc.to_dict(), [key])
        if self._peers is not None and self._peers.active:
            await self._peers.announce("status", envelope.raw)
        self.plugins.hook.blackhole_sync_broadcast_status(status=doc.to_dict(), signed=envelope.raw)
        return envelope.raw

    async def _refresh_coordination(self, client: RepositoryClient, state: TrustedState) -> None:
        """Fetch and verify the coordination documents the (new) trusted index lists."""
        from ..network.governance import refresh_coordination

        if self.read_only:
            return
        self._coordination = await refresh_coordination(
            client, self.trust, state.index, state.root, state.reference_time
        )
        self._coordinator = None

    def chain_height(self) -> int | None:
        """The host's chain height (the ``blackhole_sync_chain_height`` hook), None without."""
        answer = self.plugins.hook.blackhole_sync_chain_height(node_dir=self.node_dir)
        return None if answer is None else int(answer)

    def coordinator(self) -> Coordinator:
        """This node's coordination state (consensus, rollouts, halts), from its verified
        coordination documents and what its state database keeps."""
        from ..network.coordinator import Coordinator
        from ..network.governance import load_coordination

        if self._coordinator is None:
            state = self._trusted()
            index = state.index
            docs = self._coordination or load_coordination(
                self.trust, index, state.root, self._clock()
            )
            digests = {} if index is None else {
                v: m.sha256 for v, m in index.all_releases().items()
            }  # fmt: skip
            self._coordinator = Coordinator(
                self.store, self.identity_key(), state.root, docs, digests=digests,
                clock=self._clock, height=self.chain_height,
                protocol_versions=self.protocol_versions(), translators=self.translators(),
            )  # fmt: skip
        return self._coordinator

    def translators(self) -> list[Any]:
        """The protocol message translators plugins register."""
        return [
            t for found in self.plugins.hook.blackhole_sync_protocol_translators() for t in found
        ]

    def compatibility_manager(self) -> CompatibilityManager:
        """The design's CompatibilityManager for this node: its protocol versions (at least
        the one it runs), activations, the plugins' translators, verified deprecations."""
        from ..network import CompatibilityManager

        compat = self.coordinator().compatibility()
        if compat is not None:
            return compat
        return CompatibilityManager(
            self._trusted().root.network_id, (), translators=self.translators()
        )

    def coordination_status(self) -> dict[str, Any] | None:
        """Pending activations, proposals, rollouts, halts, deprecations (``node status``)."""
        if self._coordination is None:
            index = self._trusted().index
            if index is None or not index.coordination():
                return None  # nothing listed: nothing to report (and no network code to load)
        try:
            coordinator = self.coordinator()
        except (BlackholeSyncError, OSError) as exc:
            return {"error": str(exc)}
        if not coordinator.docs.to_dict()["proposals"] and not coordinator.docs.raw:
            return None
        return coordinator.status()

    def _coordination_gate(
        self, infos: list[UpdateInfo]
    ) -> tuple[list[UpdateInfo], Decision | None]:
        """Split the candidates by what network coordination says: releases whose proposal
        failed or whose rollout halted are dropped; releases waiting for their activation or
        for this node's phase are held back (the first one's ``wait`` decision is returned);
        the rest go to the policy, best first. The policy's ``wait_for_network_consensus``
        hears each release's consensus here."""
        coordinator = self.coordinator()
        kept: list[UpdateInfo] = []
        waiting: Decision | None = None
        for info in infos:
            self.policy_state().set_consensus(info.version, coordinator.consensus_for(info.version))
            gate = coordinator.release_gate(info.version, info.manifest.type)
            if gate is None:
                kept.append(info)
            elif gate.action == "skip":
                log.info("not installing %s: %s", info.version, gate.reason)
            elif waiting is None:
                waiting = Decision("wait", gate.reason, info.version, not_before=gate.not_before)
        return kept, waiting

    async def _roll_back_halted(self) -> None:
        """With ``[network] rollback_on_halt``, leave a current version whose rollout halted."""
        current = self.store.current_version()
        if current is None or not self.config.network.rollback_on_halt:
            return
        reason = self.coordinator().halts().get(current)
        if reason is None:
            return
        try:
            target = await self.rollback()
        except NoSuchVersionError as exc:
            log.warning("rollout of %s halted, but there is nothing to roll back to: %s",
                        current, exc)  # fmt: skip
            return
        self._emit("rolled-back", current, reason=f"rollout halted: {reason}", to=target)

    def _peer_held_versions(self) -> frozenset[str]:
        """Versions whose blobs peers report holding (the agent's network view): the update
        optimizer counts their bytes as cheaper than origin bytes."""
        try:
            return frozenset(self.coordinator().view.held_versions())
        except (BlackholeSyncError, OSError):
            return frozenset()

    def _current_since(self) -> _dt.datetime | None:
        current = self.store.current_version()
        info = next((v for v in self.store.installed_versions() if v.version == current), None)
        if info is None or not info.installed_at:
            return None
        return parse_time(info.installed_at)

    def _fork_id(self) -> str | None:
        try:
            compat = self.coordinator().compatibility()
        except (BlackholeSyncError, OSError):
            return None
        return None if compat is None else compat.fork_id().hash

    async def health_report(self, version: str, healthy: bool, **detail: Any) -> bytes | None:
        """Sign and spread this node's health report on ``version`` (after installing it);
        None when the index does not list it."""
        try:
            payload = self.coordinator().health_report(version, healthy, detail)
        except LookupError:
            return None
        if self._peers is not None and self._peers.active:
            await self._peers.announce("health", payload)
        return payload

    async def follow_downgrade(self) -> UpdateResult | None:
        """Follow a downgrade the trusted index lists and the release threshold signed:
        return to its version, keeping ``data/`` (whose schema must be at least its floor).

        A version below the current one is otherwise never taken (a rollback attack); this
        document is the deliberate exception. None when there is nothing to follow.
        """
        from ..node import schema_version_of

        current = self.store.current_version()
        coordinator = self.coordinator()
        if current is None:
            return None
        followed = set(json.loads(self.store.get_meta("downgrades_followed") or "[]"))
        for target, doc in sorted(coordinator.docs.downgrades.items(),
                                  key=lambda kv: version_key(kv[0]), reverse=True):  # fmt: skip
            key = f"{target}@{doc.version}"
            if key in followed or compare_versions(target, current) >= 0:
                continue
            schema = schema_version_of(self.store.app_db_path)
            if schema < doc.schema_floor:
                raise MigrationError(
                    f"downgrade to {target}: the data schema {schema} is below its floor "
                    f"{doc.schema_floor}"
                )
            started = time.monotonic()
            if self.store.is_installed(target):
                await self.check_installed_tree(target)  # re-hashed before it goes live
                self.store.rollback(target, restore_data=False)
                method, fetched = "installed", 0
            else:
                state = self._trusted()
                data = await self._manifest_bytes(state, self._client(), target)
                package = await self.download_update(UpdateInfo.of(state.manifest(target), data))
                await self.verify_update(package)
                result = await self.apply_update(package)
                method, fetched = result.method, result.bytes_fetched
            followed.add(key)
            self.store.set_meta("downgrades_followed", json.dumps(sorted(followed)))
            self._set_held([*self.held_versions(), current])
            self._emit("downgraded", target, from_version=current, reason=doc.reason)
            return UpdateResult(target, current, method, fetched, time.monotonic() - started)
        return None

    async def confirm_current_health(self) -> str:
        """The agent's post-install watch over the current version (no crash loop).

        A version is marked good only once its health window (the release's ``health.window``
        or ``[commands] health_window``) has passed with its health check passing. Each failed
        check counts one failed start; after :data:`MAX_START_FAILURES` in a row the version is
        abandoned: rolled back and marked bad, so it is never retried automatically.
        Returns "none", "good", "watching", "unhealthy" or "abandoned".
        """
        current = self.store.current_version()
        if current is None:
            return "none"
        info = next((v for v in self.store.installed_versions() if v.version == current), None)
        if info is None or self.store.version_state(current) == "good":
            return "good"
        manifest = self.store.stored_manifest(current)
        command = manifest.health or self.config.health_command()
        try:
            await ManagerInstallHooks(self, manifest).health(current, manifest)
        except BlackholeSyncError as exc:
            failures = self.store.record_start_failure(current)
            self._emit("unhealthy", current, failures=failures, error=str(exc))
            if failures < MAX_START_FAILURES:
                return "unhealthy"
            # marked bad first: when the way back is refused (a damaged target nothing can
            # re-fetch) the node stays on it, and the next cycle tries again
            self.store.mark_bad(current, f"failed {failures} health checks in a row: {exc}")
            target = await self.rollback(hold=False)
            self._emit("abandoned", current, rolled_back_to=target)
            await self._notify("rolled-back", current, reason=str(exc), to=target)
            return "abandoned"
        window = (command.window if command is not None else None) or self.config.health_window
        installed = parse_time(info.installed_at) if info.installed_at else None
        if installed is not None and (self._clock() - installed).total_seconds() < window:
            return "watching"
        self.store.mark_good(current)
        self._emit("healthy", current)
        return "good"
