"""A repository with a governance role and nodes, for the network-coordination tests.

``CoordWorld`` publishes releases, signs governance documents with two of its three
governance keys (the threshold), and makes nodes whose identity keys form the validator set.
Heights: :class:`HeightPlugin` answers ``blackhole_sync_chain_height`` from the wall clock, one
block every ``BLOCK`` seconds since ``t0`` (the same in every process given the same ``t0``).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from blackhole_sync import (
    TRANSPORT_API,
    Deprecation,
    Downgrade,
    HaltDoc,
    PrivateKey,
    Proposal,
    Repository,
    RolloutPhase,
    RolloutPlan,
    TransportSpec,
    ValidatorSet,
    hookimpl,
    init_node,
)
from blackhole_sync.codecs import load_private_key
from blackhole_sync.release import publish_coordination, write_coordination_draft
from blackhole_sync.testing import MemoryHub, MemoryTransport

#: Seconds per block of the test chain.
BLOCK = 2.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class HeightPlugin:
    """The host's chain height: one block every :data:`BLOCK` seconds since ``t0``."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0

    @hookimpl
    def blackhole_sync_chain_height(self, node_dir: Path) -> int:
        return int((time.time() - self.t0) / BLOCK)


class HubPlugin:
    """The memory transport on one shared hub, as a peer-to-peer plugin would register it."""

    def __init__(self, hub: MemoryHub) -> None:
        self.hub = hub

    @hookimpl
    def blackhole_sync_transports(self) -> list[TransportSpec]:
        def factory(**options: Any) -> MemoryTransport:
            return MemoryTransport(hub=self.hub, **options)

        return [
            TransportSpec(
                "memory", factory, api=TRANSPORT_API, backends={"asyncio", "trio"},
                schemes={"memory"},
            )
        ]


class EventRecorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def blackhole_sync_update_event(self, event: Any) -> None:
        self.events.append(event)


class CoordWorld:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = PrivateKey.generate()
        self.gov = [PrivateKey.generate() for _ in range(3)]
        self.stranger = PrivateKey.generate()
        self.repo = Repository.init(
            tmp / "repo", root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1,
            index_key=self.key.public_key, sign_with=[self.key],
            governance_keys=[k.public_key for k in self.gov], governance_threshold=2,
        )  # fmt: skip

    def publish(self, version: str, *, update_type: str = "binary") -> str:
        src = self.tmp / "src" / version / "service"
        src.parent.mkdir(parents=True)
        src.write_bytes(f"service {version}\n".encode() * 200)
        self.repo.build_release(version, [src], delta_from=[], update_type=update_type)
        self.repo.sign_release(version, self.key)
        self.repo.publish_release(version, self.key)
        return self.digest(version)

    def digest(self, version: str) -> str:
        index = self.repo.index()
        assert index is not None
        listed = index.listing(version)
        assert listed is not None
        return listed.sha256

    def govern(self, document: Any, *, signers: int = 2) -> None:
        """Draft ``document``, sign it with ``signers`` governance keys, publish it."""
        keys = self.gov if document.TYPE != "downgrade" else [self.key]
        for key in keys[:signers]:
            write_coordination_draft(self.repo, document, key)
        publish_coordination(self.repo, self.key)

    def node(self, name: str, **config: str) -> Path:
        node = self.tmp / name
        init_node(node, root_bytes=self.repo.root_bytes(), sources=[str(self.repo.path)])
        text = (node / "config.toml").read_text()
        text = text.replace("status_interval = 300", "status_interval = 2")
        for key, value in config.items():
            text = text.replace(f"{key} = ", f"{key} = {value}\n# was: {key} = ", 1)
        (node / "config.toml").write_text(text)
        return node

    @staticmethod
    def node_id(node: Path) -> str:
        return load_private_key(node / "identity.key").public_key.hex

    def validators(self, nodes: list[Path], *, version: int = 1) -> ValidatorSet:
        doc = ValidatorSet(version, now() + dt.timedelta(days=1), {self.node_id(n): 1 for n in nodes})
        self.govern(doc)
        return doc

    def proposal(
        self,
        release: str,
        *,
        timeout: int,
        grace: int = 30,
        height: int | None = None,
        delay: int = 0,
        threshold: int = 7500,
        pid: str = "proto-2",
    ) -> Proposal:
        start = now() - dt.timedelta(seconds=1)
        doc = Proposal(
            pid, release, 2, threshold, start, now() + dt.timedelta(seconds=timeout),
            now() + dt.timedelta(days=1), delay, self.digest(release), grace, height,
        )  # fmt: skip
        self.govern(doc)
        return doc

    def plan(self, release: str, phases: list[tuple[str, int, int]], salt: str, halt: int) -> RolloutPlan:
        doc = RolloutPlan(
            release, 1, now() + dt.timedelta(days=1), now() - dt.timedelta(seconds=1),
            tuple(RolloutPhase(n, p, d) for n, p, d in phases), salt, halt,
        )  # fmt: skip
        self.govern(doc)
        return doc

    def halt(self, release: str, reason: str) -> HaltDoc:
        doc = HaltDoc(release, reason, 1, now() + dt.timedelta(days=1))
        self.govern(doc)
        return doc

    def deprecate(self, feature: str, remove_in: str) -> Deprecation:
        doc = Deprecation(feature, remove_in, 1, now() + dt.timedelta(days=1), "use v2 sync")
        self.govern(doc)
        return doc

    def downgrade(self, to: str, floor: int = 0) -> Downgrade:
        from blackhole_sync.release import next_coordination_version

        version = next_coordination_version(self.repo, "downgrade", to)
        doc = Downgrade(
            self.repo.root().network_id, to, floor, version, now() + dt.timedelta(days=1),
            "bad build",
        )  # fmt: skip
        self.govern(doc, signers=1)
        return doc


def current(node: Path) -> str | None:
    link = node / "current"
    return link.resolve().name if link.is_symlink() else None
