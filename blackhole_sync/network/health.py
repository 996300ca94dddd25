"""The network's view of an update: versions, coverage, propagation, health per phase.

Fed with what the peer-message gate accepted: nodes' signed status documents (which version
each runs, since when, what it holds) and health reports. A status document proves only that
the node's own key signed it -- any node can claim anything about itself -- so everything
computed from statuses is **unauthenticated** and feeds metrics only (``network status``, the
design's UpdateMetrics network figures). Decisions (halts) rest on validator health reports
alone (:class:`~blackhole_sync.network.rollout.HealthTally`).

Pure: times are passed in or read from the documents. Bounded: at most :data:`MAX_PEERS`
nodes are tracked (the oldest report is dropped beyond).
"""

from __future__ import annotations

import datetime as _dt
import statistics
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from ..documents import HealthReport, NodeStatusDoc, RolloutPlan, format_time, sort_versions
from .rollout import node_phase

__all__ = ["MAX_PEERS", "NetworkView", "PeerStatus"]

#: Most nodes a view tracks.
MAX_PEERS = 100_000


@frozen
class PeerStatus:
    """One node's newest status, as it reported it (unauthenticated)."""

    node_id: str
    version: str | None
    state: str
    since: _dt.datetime | None
    seq: int
    held: tuple[str, ...]
    fork_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "state": self.state,
            "since": None if self.since is None else format_time(self.since),
            "seq": self.seq,
            "held": list(self.held),
            "fork_id": self.fork_id,
        }


class NetworkView:
    """What one node knows about the others' updates (see the module docstring)."""

    def __init__(self, *, max_peers: int = MAX_PEERS) -> None:
        self.max_peers = max_peers
        self.peers: OrderedDict[str, PeerStatus] = OrderedDict()
        self.health: dict[tuple[str, str], HealthReport] = {}  # (release, node) -> newest

    def add_status(self, doc: NodeStatusDoc) -> bool:
        old = self.peers.get(doc.node_id)
        if old is not None and old.seq >= doc.seq:
            return False
        self.peers[doc.node_id] = PeerStatus(
            doc.node_id, doc.current_version, doc.state, doc.since, doc.seq, doc.held, doc.fork_id
        )
        self.peers.move_to_end(doc.node_id)
        while len(self.peers) > self.max_peers:
            self.peers.popitem(last=False)
        return True

    def add_health(self, report: HealthReport) -> bool:
        key = (report.release, report.node_id)
        old = self.health.get(key)
        if old is not None and old.seq >= report.seq:
            return False
        self.health[key] = report
        return True

    # -- figures -------------------------------------------------------------------------

    def versions(self) -> dict[str, int]:
        """How many nodes run each version (``"none"``: nothing installed yet)."""
        counts = Counter(p.version or "none" for p in self.peers.values())
        ordered = sort_versions([v for v in counts if v != "none"])
        out = {v: counts[v] for v in ordered}
        if "none" in counts:
            out["none"] = counts["none"]
        return out

    def coverage_bp(self, version: str) -> int | None:
        """Basis points of known nodes running ``version`` (None: no node known)."""
        if not self.peers:
            return None
        on = sum(1 for p in self.peers.values() if p.version == version)
        return on * 10_000 // len(self.peers)

    def propagation(self, version: str) -> dict[str, Any]:
        """How fast ``version`` spread: the first and the latest switch, the median delay
        after the first, and nodes per hour."""
        times = sorted(
            p.since for p in self.peers.values() if p.version == version and p.since is not None
        )
        if not times:
            return {"nodes": 0}
        first = times[0]
        delays = [(t - first).total_seconds() for t in times]
        span = delays[-1]
        return {
            "nodes": len(times),
            "first": format_time(first),
            "latest": format_time(times[-1]),
            "median_delay_s": statistics.median(delays),
            "nodes_per_hour": None if span <= 0 else round(len(times) * 3600 / span, 1),
        }

    def holders(self, version: str) -> int:
        """Nodes that report holding ``version``'s blobs (source choice)."""
        return sum(1 for p in self.peers.values() if version in p.held or p.version == version)

    def held_versions(self) -> dict[str, int]:
        """Version -> how many nodes hold its blobs (the update optimizer's peer input)."""
        out: Counter[str] = Counter()
        for p in self.peers.values():
            for v in {*p.held, *([p.version] if p.version else [])}:
                out[v] += 1
        return dict(out)

    def failing_by_phase(
        self, plan: RolloutPlan, release_digest: str, validators: Mapping[str, int] | None = None
    ) -> list[dict[str, Any]]:
        """Health reports on ``plan``'s release per phase: healthy and failing, split into
        validators' and others' when the validator set is given."""
        rows: list[dict[str, Any]] = [
            {"phase": i, "name": ph.name, "healthy": 0, "failing": 0, "failing_validators": 0}
            for i, ph in enumerate(plan.phases)
        ]
        outside: dict[str, Any] = {"phase": None, "name": "outside", "healthy": 0, "failing": 0,
                   "failing_validators": 0}  # fmt: skip
        for (release, node), report in self.health.items():
            if release != plan.release or report.release_digest != release_digest:
                continue
            index = node_phase(plan, node, release_digest)
            row = outside if index is None else rows[index]
            if report.healthy:
                row["healthy"] += 1
            else:
                row["failing"] += 1
                if validators is not None and node in validators:
                    row["failing_validators"] += 1
        return rows + ([outside] if outside["healthy"] or outside["failing"] else [])

    def summary(self, target: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "authenticated": False,  # statuses are each node's own claim
            "nodes": len(self.peers),
            "versions": self.versions(),
            "peers": {n: p.to_dict() for n, p in self.peers.items()},
        }
        if target is not None:
            out["target"] = target
            out["coverage_bp"] = self.coverage_bp(target)
            out["propagation"] = self.propagation(target)
        return out
