"""Planning an update: a chain of published patches, or the full artifact (``UpdateOptimizer``).

A node knows, from signed manifests, every patch published between its installed version and
the target (:class:`DeltaEdge`) and the full artifact's transfer length (:class:`FullDownload`).
:meth:`UpdateOptimizer.calculate_update_path` takes the cheapest chain by bytes, at most
``max_chain`` patches long, going only forward and never past the target; it skips an edge
whose codec this node lacks or cannot run, and an edge whose apply would need more memory
than ``apply_memory_budget`` (see
:meth:`~blackhole_sync.codecs.delta.apply.ApplyLimits.memory_needed`). The full artifact wins
when the chain costs more than ``max_chain_fraction`` of it, or when no chain remains; the
plan's ``reason`` then says why, for the node's log and its update report.

Given the link's speed (``link_bandwidth``: a node passes its download rate limit when it
has one), the plan also weighs time: applying a patch costs a bounded worker's start
(:data:`APPLY_START_S`) and a pass over its source and output (:data:`APPLY_S_PER_MIB`), a
full download its decompression (:data:`FULL_S_PER_MIB`); a chain expected to be slower than
the full download is not taken, so that an update by delta is not slower than a full install
from the same source. (Small artifacts on fast links, and artifacts whose compressed blob is
close to their patch, then come whole.) Without a known link speed the fewest bytes win: a
peer-to-peer network's upload capacity is the scarce resource deltas save.

Bytes that nearby peers hold are cheaper than origin bytes (``peer_held``: the versions whose
blobs peers report holding in their signed status -- the full blob of such a version and the
patches that lead to it -- each byte of them weighing ``peer_cost`` of an origin byte): the
chain and the full download are compared, and the chain found, by these weighted costs, and
the plan says how many of its bytes peers hold (:attr:`UpdatePath.peer_bytes`: fetch from the
peer transports first). The input is that one set of versions: what the network view
(``blackhole_sync.network.health.NetworkView.held_versions``) reports.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Collection, Mapping, Sequence

import attrs
import semver
from attrs import field, frozen

from ..._fsutil import sha256_hex
from ...errors import LengthOrHashMismatchError, NoSuchVersionError
from .apply import ApplyLimits, apply_patch_bytes
from .base import DeltaPatch, MiB, PatchCodec, codec_available
from .registry import DEFAULT_CODEC, codecs, get_codec
from .select import DEFAULT_DIFF_MEMORY_BUDGET, CreateBudget, make_delta, select_patch, verify_patch

__all__ = [
    "APPLY_START_S",
    "APPLY_S_PER_MIB",
    "ASSUMED_BANDWIDTH",
    "FULL_S_PER_MIB",
    "AvailableUpdates",
    "DeltaEdge",
    "FullDownload",
    "UpdateOptimizer",
    "UpdatePath",
]

#: The link speed (bytes/s) :meth:`UpdateOptimizer.expected_seconds` assumes when given none.
ASSUMED_BANDWIDTH = 10_000_000
#: Fixed time of applying one patch: the bounded worker's start and its checks.
APPLY_START_S = 0.2
#: Time per MiB of output of applying a patch (hash the source, apply, hash the output).
APPLY_S_PER_MIB = 0.012
#: Time per MiB of output of a full download beyond the transfer (decode while hashing).
FULL_S_PER_MIB = 0.004


@frozen
class DeltaEdge:
    """A published patch from one version of an artifact to another.

    ``source_length`` and ``output_length`` (0 when unknown) let the planner weigh the memory
    an apply needs.
    """

    from_version: str
    to_version: str
    patch_length: int
    codec: str = DEFAULT_CODEC
    source_length: int = 0
    output_length: int = 0


@frozen
class FullDownload:
    """The whole artifact of ``version`` (``length``: the bytes fetched)."""

    version: str
    length: int


@frozen
class AvailableUpdates:
    """What can be fetched for one artifact: full lengths by version, and delta edges."""

    full: Mapping[str, int] = field(factory=dict)
    deltas: Sequence[DeltaEdge] = ()


@frozen
class UpdatePath:
    """The plan: a chain of deltas, one full download, or nothing (already there).

    ``reason`` says why a full download was chosen over the published patches ("" otherwise).
    """

    current: str | None
    target: str
    steps: tuple[DeltaEdge | FullDownload, ...]
    total_bytes: int
    reason: str = ""
    #: bytes of the plan that nearby peers hold (fetch them from peers first)
    peer_bytes: int = 0

    @property
    def is_delta(self) -> bool:
        return bool(self.steps) and isinstance(self.steps[0], DeltaEdge)


@attrs.define
class UpdateOptimizer:
    """Plans how to reach a version with the fewest bytes, and makes / applies deltas.

    ``max_chain``: most deltas in one chain. ``max_chain_fraction``: a chain costing more than
    this fraction of the full artifact is not worth its risk; fetch the full artifact instead.
    ``apply_memory_budget``: an edge whose apply needs more (``limits``' memory model) is not
    taken (None: no budget). ``link_bandwidth`` (bytes/s): weigh time too (see the module
    docstring; None: bytes only). ``codec`` / ``diff_memory_budget``: what
    :meth:`generate_delta` tries (None: the default candidates and every plugin codec of
    ``table``).
    """

    max_chain: int = 8
    max_chain_fraction: float = 0.8
    table: Mapping[str, PatchCodec] = field(factory=lambda: dict(codecs))
    codec: str | Sequence[str] | None = None
    diff_memory_budget: int = DEFAULT_DIFF_MEMORY_BUDGET
    apply_memory_budget: int | None = None
    limits: ApplyLimits = field(factory=ApplyLimits)
    link_bandwidth: int | None = None
    #: versions whose blobs (full, and the patches leading to them) nearby peers hold
    peer_held: Collection[str] = frozenset()
    #: what a byte a peer holds costs, as a fraction of an origin byte
    peer_cost: float = 0.25

    def _weight(self, version: str) -> float:
        return self.peer_cost if version in self.peer_held else 1.0

    def _peer_bytes(self, steps: Sequence[DeltaEdge | FullDownload]) -> int:
        return sum(
            (s.patch_length if isinstance(s, DeltaEdge) else s.length)
            for s in steps
            if (s.to_version if isinstance(s, DeltaEdge) else s.version) in self.peer_held
        )

    def expected_seconds(self, chain: Sequence[DeltaEdge], full_length: int) -> tuple[float, float]:
        """(chain, full download): expected seconds over ``link_bandwidth``."""
        bandwidth = float(self.link_bandwidth or ASSUMED_BANDWIDTH)
        out_mib = (chain[-1].output_length if chain else 0) / MiB
        t_chain = sum(
            e.patch_length / bandwidth + APPLY_START_S + e.output_length / MiB * APPLY_S_PER_MIB
            for e in chain
        )
        return t_chain, full_length / bandwidth + out_mib * FULL_S_PER_MIB

    def apply_memory(self, edge: DeltaEdge) -> int:
        """The apply worker's memory bound for one edge."""
        codec = self.table[edge.codec]
        return self.limits.memory_needed(
            codec, edge.source_length, edge.patch_length, edge.output_length
        )

    def usable(self, edge: DeltaEdge, reasons: dict[str, str]) -> bool:
        """Whether ``edge`` may be taken here; when not, ``reasons`` says why (by kind)."""
        codec = self.table.get(edge.codec)
        if codec is None:
            reasons.setdefault("codec", f"no patch codec {edge.codec!r} on this node")
            return False
        if not codec_available(codec):
            reasons.setdefault("codec", f"patch codec {edge.codec!r} is unavailable here")
            return False
        if self.apply_memory_budget is not None:
            need = self.apply_memory(edge)
            if need > self.apply_memory_budget:
                reasons.setdefault(
                    "memory",
                    f"applying the patch needs ~{need // MiB} MiB, over the node's "
                    f"delta_memory_budget of {self.apply_memory_budget // MiB} MiB",
                )
                return False
        return True

    def calculate_update_path(
        self,
        current: str | None,
        target: str,
        *,
        available: AvailableUpdates,
        exclude: Collection[DeltaEdge] = (),
    ) -> UpdatePath:
        """The cheapest way from ``current`` to ``target`` (``exclude``: edges that failed)."""
        goal = semver.Version.parse(target)
        full_length = available.full.get(target)
        if current is not None and semver.Version.parse(current) == goal:
            return UpdatePath(current, target, (), 0)
        reasons: dict[str, str] = {}
        chain = None
        if current is not None:
            usable = [e for e in available.deltas if e not in exclude and self.usable(e, reasons)]
            chain = self._cheapest_chain(current, goal, usable)
        if chain is not None:
            cost = sum(e.patch_length for e in chain)
            weighted = sum(e.patch_length * self._weight(e.to_version) for e in chain)
            full_weighted = None if full_length is None else full_length * self._weight(target)
            slower = None
            if full_length is not None and self.link_bandwidth is not None:
                t_chain, t_full = self.expected_seconds(chain, full_length)
                if t_chain > t_full:
                    slower = (
                        f"applying the patches (~{t_chain:.2f} s) would be slower than the full "
                        f"download (~{t_full:.2f} s at {self.link_bandwidth / 1e6:g} MB/s)"
                    )
            if full_weighted is None or (
                weighted <= self.max_chain_fraction * full_weighted and slower is None
            ):
                return UpdatePath(
                    current, target, tuple(chain), cost, peer_bytes=self._peer_bytes(chain)
                )
            if slower is not None:
                reasons["cost"] = slower
            else:
                reasons["cost"] = (
                    f"the patches ({cost} bytes) cost more than {self.max_chain_fraction:.0%} "
                    f"of the full artifact ({full_length} bytes)"
                )
        if full_length is None:
            raise NoSuchVersionError(f"no full artifact or delta chain reaches {target}")
        if chain is None and not reasons and current is not None:
            reasons["none"] = "no published patch chain from the installed version"
        reason = "; ".join(reasons[k] for k in ("cost", "memory", "codec", "none") if k in reasons)
        full = (FullDownload(target, full_length),)
        return UpdatePath(
            current, target, full, full_length, reason, peer_bytes=self._peer_bytes(full)
        )

    def _cheapest_chain(
        self, current: str, goal: semver.Version, available: Sequence[DeltaEdge]
    ) -> list[DeltaEdge] | None:
        start = semver.Version.parse(current)
        edges: dict[semver.Version, list[tuple[semver.Version, DeltaEdge]]] = {}
        for edge in available:
            if edge.patch_length < 0:
                continue
            a, b = semver.Version.parse(edge.from_version), semver.Version.parse(edge.to_version)
            if start <= a < b <= goal:  # only forward, never past the target
                edges.setdefault(a, []).append((b, edge))
        # Dijkstra over (version, hops) so the hop bound stays exact.
        tie = itertools.count()
        queue: list[tuple[float, int, int, semver.Version, tuple[DeltaEdge, ...]]] = [
            (0.0, 0, next(tie), start, ())
        ]
        settled: set[tuple[semver.Version, int]] = set()
        while queue:
            cost, hops, _, version, path = heapq.heappop(queue)
            if version == goal:
                return list(path)
            if (version, hops) in settled or hops >= self.max_chain:
                continue
            settled.add((version, hops))
            for nxt, edge in edges.get(version, ()):
                step = edge.patch_length * self._weight(edge.to_version)
                heapq.heappush(queue, (cost + step, hops + 1, next(tie), nxt, (*path, edge)))
        return None

    def generate_delta(
        self, old: bytes | str | os.PathLike[str], new: bytes | str | os.PathLike[str]
    ) -> DeltaPatch | None:
        """Make a verified delta (bytes or file paths); None when there is none worth having."""
        budget = CreateBudget(memory=self.diff_memory_budget)
        names = None if self.codec is None else (
            [self.codec] if isinstance(self.codec, str) else list(self.codec)
        )  # fmt: skip
        if isinstance(old, bytes) and isinstance(new, bytes):
            selection = select_patch(old, new, table=self.table, candidates=names, budget=budget)
            if selection.codec is None or selection.patch is None:
                return None
            delta = DeltaPatch.from_bytes(old, new, selection.patch, selection.codec)
            verify_patch(
                old, delta.to_sha256, delta.to_length, delta.patch, self.table[delta.codec]
            )
            return delta
        if isinstance(old, bytes) or isinstance(new, bytes):
            raise TypeError("pass two byte strings or two paths")
        return make_delta(old, new, codec=names, table=self.table, budget=budget).delta

    def apply_delta(self, current: bytes, delta: DeltaPatch) -> bytes:
        """Apply ``delta`` to ``current`` in this process, checking every hash it carries."""
        if sha256_hex(delta.patch) != delta.patch_sha256 or len(delta.patch) != delta.patch_length:
            raise LengthOrHashMismatchError("the patch does not match its recorded sha256")
        return apply_patch_bytes(
            current,
            delta.patch,
            codec=get_codec(delta.codec, self.table),
            max_output=delta.to_length,
            source_sha256=delta.from_sha256,
            output_sha256=delta.to_sha256,
        )
