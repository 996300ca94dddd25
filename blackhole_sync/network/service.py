"""The agent's coordination side: what ``node run`` does for consensus, rollouts and the network
view while it lives.

:class:`CoordinationService` keeps one :class:`~blackhole_sync.network.coordinator.Coordinator`
for the node, rebuilt when a check changed the trusted index (new proposals, plans, halts, a new
validator set). It gives the peer-message gate what votes and certificates are checked against
(:meth:`validators`, :meth:`proposal`), the handshake's fork id (:meth:`hello`, :meth:`admit`:
the ``hello`` and ``admit`` transport options), and runs two tasks beside the agent's cycles:

* :meth:`listen` -- accepted votes, certificates, health reports, halts and statuses go to the
  coordinator; a halt, a lock-in or a gossiped governance document wakes a cycle (which
  re-checks the index and lets the manager act: hold back, install, roll back);
* :meth:`run` -- about once a second, :meth:`Coordinator.tick`: catch-up and evaluation at the
  end of a signalling window, the certificate of a lock-in, this node's votes spread again,
  and activation; on activation it fires the ``protocol-activated`` event and wakes a cycle,
  which installs the protocol release.

It opens the node's state database on its own connection (the coordinator's writes are single
statements; the node's lock is not taken, so operator commands and cycles run in between).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..clock import utcnow
from ..documents import Envelope, Index, Proposal, TrustedState, ValidatorSet
from ..errors import BlackholeSyncError
from ..events import UpdateEvent
from .compat import admit as admit_hello, hello_bytes
from .coordinator import Coordinator
from .governance import load_coordination

if TYPE_CHECKING:
    from ..fetch import PluginHost
    from ..node import StateDB
    from .peers import PeerNetwork

__all__ = ["COORDINATION_KINDS", "TICK", "CoordinationService"]

log = logging.getLogger(__name__)

#: Peer message kinds the coordination listens to.
COORDINATION_KINDS = (
    "vote",
    "certificate",
    "health",
    "halt",
    "status",
    "proposal",
    "rollout",
    "validators",
    "deprecation",
    "downgrade",
)
#: Seconds between ticks.
TICK = 1.0


class CoordinationService:
    """The node's coordination while the agent runs (see the module docstring)."""

    def __init__(
        self,
        node_dir: Path,
        plugins: PluginHost,
        store: StateDB,
        *,
        clock: Callable[[], _dt.datetime] = utcnow,
    ) -> None:
        from ..node import NodeConfig, NodeLayout, TrustStore

        self.node_dir = node_dir
        self.plugins = plugins
        self.store = store
        self.clock = clock
        self.layout = NodeLayout(node_dir)
        self.trust = TrustStore(self.layout)
        self.config = NodeConfig.from_file(self.layout.config)
        self._seen: tuple[bytes, bytes | None] | None = None
        self._coordinator: Coordinator | None = None

    # -- the coordinator, rebuilt when the trusted state changed --------------------------

    def height(self) -> int | None:
        answer = self.plugins.hook.blackhole_sync_chain_height(node_dir=self.node_dir)
        return None if answer is None else int(answer)

    def protocol_versions(self) -> tuple[int, ...]:
        answer = self.plugins.hook.blackhole_sync_protocol_versions(node_dir=self.node_dir)
        if answer is not None:
            return tuple(int(v) for v in answer)
        return tuple(self.config.protocol_versions)

    @property
    def coordinator(self) -> Coordinator:
        root_bytes, index_bytes = self.trust.root_bytes(), self.trust.index_bytes()
        if self._coordinator is None or self._seen != (root_bytes, index_bytes):
            from ..codecs import load_private_key

            root = TrustedState(root_bytes).root
            index = None
            if index_bytes is not None:
                index = Envelope.from_bytes(index_bytes, expected_type="index").parse(
                    Index.from_dict
                )
            docs = load_coordination(self.trust, index, root, self.clock())
            digests = {} if index is None else {
                v: m.sha256 for v, m in index.all_releases().items()
            }  # fmt: skip
            self._coordinator = Coordinator(
                self.store, load_private_key(self.layout.identity_key), root, docs,
                digests=digests, clock=self.clock, height=self.height,
                protocol_versions=self.protocol_versions(),
                translators=[
                    t for found in self.plugins.hook.blackhole_sync_protocol_translators()
                    for t in found
                ],
            )  # fmt: skip
            self._seen = (root_bytes, index_bytes)
        return self._coordinator

    def reload(self) -> None:
        """Rebuild from the stored state on next use (after a cycle)."""
        self._coordinator = None

    # -- for the gate and the handshake ---------------------------------------------------

    def validators(self) -> ValidatorSet | None:
        return self.coordinator.docs.validators

    def proposal(self, proposal_id: str) -> Proposal | None:
        return self.coordinator.docs.proposal(proposal_id)

    def hello(self) -> bytes | None:
        """This node's fork id as handshake bytes (None when it declares no protocol
        versions: the transport's default, the network id)."""
        compat = self.coordinator.compatibility()
        return None if compat is None else hello_bytes(compat.fork_id())

    def admit(self, peer: str, hello: bytes) -> bool:
        """The handshake's admission: a peer whose fork id is compatible with ours (or that
        runs no host protocol); re-evaluated at each handshake, so activations count."""
        compat = self.coordinator.compatibility()
        local = None if compat is None else compat.fork_id()
        return admit_hello(local, peer, hello, self.coordinator.root.network_id)

    def transport_options(self) -> dict[str, Any]:
        """The ``hello`` and ``admit`` options every peer transport is given."""
        hello = self.hello()
        return {"admit": self.admit, **({} if hello is None else {"hello": hello})}

    # -- the agent's tasks ----------------------------------------------------------------

    def _emit(self, kind: str, version: str | None, **detail: Any) -> None:
        try:
            self.plugins.hook.blackhole_sync_update_event(
                event=UpdateEvent(kind=kind, version=version, detail=detail)
            )
        except Exception:  # observers cannot break the agent
            log.exception("update event observer failed")

    def _handle(self, happened: list[str], wake: Callable[[str], None]) -> None:
        for item in happened:
            what, _, subject = item.partition(":")
            if what == "activated":
                tracker = self.coordinator.trackers[subject]
                p = tracker.proposal
                log.warning("protocol %d activated (%s): switching to %s",
                            p.protocol_version, p.id, p.release)  # fmt: skip
                self._emit(
                    "protocol-activated", p.release, proposal=p.id,
                    protocol_version=p.protocol_version, height=self.height(),
                )  # fmt: skip
                wake("activation")
            elif what in ("halted", "locked_in", "failed", "refresh"):
                log.info("coordination: %s", item)
                wake(what)

    async def listen(self, peers: PeerNetwork, wake: Callable[[str], None]) -> None:
        """Feed accepted coordination messages to the coordinator (catching up first)."""
        for kind in ("certificate", "halt", "status"):
            for decided in await peers.catch_up(kind):
                try:
                    happened = self.coordinator.on_message(
                        kind, decided.document, decided.envelope
                    )
                except (BlackholeSyncError, sqlite3.Error) as exc:
                    log.warning("coordination could not take a %s: %s", kind, exc)
                    continue
                self._handle(happened, wake)
        # closed here, in this task, also when the loop ends by an exception (an async
        # generator holding a task group must not be finalised from another task)
        async with contextlib.aclosing(peers.messages(COORDINATION_KINDS)) as messages:
            async for decided in messages:
                try:
                    happened = self.coordinator.on_message(
                        decided.kind, decided.document, decided.envelope
                    )
                except (BlackholeSyncError, sqlite3.Error) as exc:
                    # sqlite3: the state database stayed locked past its timeout (a command such
                    # as `node vote` writing): the message is dropped, peers' catch-up brings it
                    # again; the agent goes on
                    log.warning("coordination could not take a %s: %s", decided.kind, exc)
                    continue
                self._handle(happened, wake)

    async def run(self, peers: PeerNetwork | None, wake: Callable[[str], None]) -> None:
        """Tick about once a second until cancelled."""
        publish = None if peers is None or not peers.active else peers.announce
        catch_up = None if peers is None or not peers.active else peers.catch_up
        while True:
            try:
                self._handle(await self.coordinator.tick(publish, catch_up), wake)
            except (BlackholeSyncError, OSError, ValueError, sqlite3.Error) as exc:
                log.warning("coordination tick failed: %s", exc)
            await anyio.sleep(TICK)
