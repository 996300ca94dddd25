"""Making a delta: which codec, within which budget, and whether a delta is worth it at all.

:func:`select_patch` is the release builder's choice for one pair of byte strings:

1. :func:`~blackhole_sync.codecs.delta.probe.probe_related` -- unrelated inputs get no delta,
   before any diff runs (two unrelated 64 MB files: ~0.3 s, not minutes).
2. The reference codec (the first available candidate, ``hdiffpatch`` by default) always
   runs, segmented when one whole diff would not fit :attr:`CreateBudget.memory`.
3. ``zstd-patch`` (at :data:`ZSTD_SELECT_LEVEL`) runs only where it has been seen to win --
   the reference patch is over :data:`ZSTD_TRY_ABOVE_BP` of new (compressed or unmatchable
   inputs) -- and only when its predicted CPU (:func:`predict_zstd_cpu`) fits what is left of
   the CPU budget with a :data:`CPU_MARGIN` margin.
4. Any other candidate (a plugin codec, or a bsdiff codec asked for by name) runs while CPU
   budget is left and, when it declares ``diff_memory(old_len, new_len)``, it fits the memory
   budget. Its cost cannot be predicted, so it may overshoot the CPU budget once.
5. The smallest patch wins (ties to the earlier candidate); one no smaller than new is no
   delta.

The CPU budget is ``max(cpu_factor x the reference codec's own diff CPU, cpu_floor_s)``
(:class:`CreateBudget`; the floor keeps tiny pairs from being judged on timer noise). On the
seven measured pairs of real binaries the selection costs 0.97-1.18 x HDiffPatch alone and its
patches are 0.977-0.999 x HDiffPatch's.

:func:`make_delta` / :func:`generate_delta` do this for two files and verify the patch by
applying it (streamed into a hash, never held); :func:`member_deltas` for the members of two
unpacked archives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from attrs import field, frozen

from ..._fsutil import sha256, sha256_hex
from ...errors import PatchOutputError
from .apply import apply_patch_bytes
from .base import DeltaPatch, GiB, MiB, PatchCodec, StreamingPatchCodec, codec_available
from .probe import Probe, probe_related
from .registry import DEFAULT_CANDIDATES, codecs, get_codec

__all__ = [
    "CPU_FLOOR_S",
    "CPU_MARGIN",
    "DEFAULT_CPU_FACTOR",
    "DEFAULT_DIFF_MEMORY_BUDGET",
    "ZSTD_SELECT_LEVEL",
    "ZSTD_TRY_ABOVE_BP",
    "CreateBudget",
    "DeltaResult",
    "MemberDelta",
    "Selection",
    "generate_delta",
    "make_delta",
    "member_deltas",
    "predict_zstd_cpu",
    "select_patch",
    "verify_patch",
]

#: Peak memory of making one delta (the whole process: both inputs, the diff, the encoder).
DEFAULT_DIFF_MEMORY_BUDGET = 2 * GiB
#: The selection's CPU may be at most this multiple of the reference codec's own diff CPU.
DEFAULT_CPU_FACTOR = 2.0
#: ... but never less than this many seconds (small pairs are timer noise).
CPU_FLOOR_S = 1.0
#: Predicted costs must fit this fraction of what is left of the CPU budget.
CPU_MARGIN = 0.85
#: zstd-patch's level inside the selection (level 19 costs 2-5 x HDiffPatch on binaries).
ZSTD_SELECT_LEVEL = 9
#: zstd-patch is tried only when the reference patch is over this share of new (basis points).
ZSTD_TRY_ABOVE_BP = 5000
#: zstd-patch's CPU at :data:`ZSTD_SELECT_LEVEL`, calibrated on real binaries: seconds per MiB
#: of new and of old.
ZSTD_S_PER_MIB_NEW = 0.12
ZSTD_S_PER_MIB_OLD = 0.01
#: What a process holds besides the inputs, for codecs that declare no memory model.
_INTERPRETER = 64 * MiB


@frozen
class CreateBudget:
    """Limits of making one delta: peak memory of the process (inputs included) and CPU."""

    memory: int = DEFAULT_DIFF_MEMORY_BUDGET
    cpu_factor: float = DEFAULT_CPU_FACTOR
    cpu_floor_s: float = CPU_FLOOR_S


@frozen
class Selection:
    """The outcome of :func:`select_patch`: the chosen codec and patch, or why there is none.

    ``sizes``: patch bytes of each codec that ran; ``cpu_s``: CPU seconds per step (``probe``
    and each codec that ran); ``skipped``: why a candidate did not run.
    """

    codec: str | None
    patch: bytes | None = field(repr=False)
    reason: str
    probe: Probe | None = None
    sizes: Mapping[str, int] = field(factory=dict)
    cpu_s: Mapping[str, float] = field(factory=dict)
    skipped: Mapping[str, str] = field(factory=dict)

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())


def predict_zstd_cpu(old_len: int, new_len: int) -> float:
    """Predicted CPU seconds of a zstd-patch diff at :data:`ZSTD_SELECT_LEVEL`."""
    return ZSTD_S_PER_MIB_NEW * new_len / MiB + ZSTD_S_PER_MIB_OLD * old_len / MiB


def _diff_memory(codec: Any, old_len: int, new_len: int, budget: CreateBudget) -> int | None:
    """The codec's own memory model (None when it declares none)."""
    model = getattr(codec, "diff_memory", None)
    if model is None:
        return None
    if codec.name == "hdiffpatch":
        return int(model(old_len, new_len, budget.memory))
    if codec.name == "zstd-patch":
        return int(model(old_len, new_len, ZSTD_SELECT_LEVEL))
    return int(model(old_len, new_len))


def _run(codec: Any, old: bytes, new: bytes, budget: CreateBudget) -> bytes:
    if codec.name == "hdiffpatch":
        return bytes(codec.diff(old, new, memory_budget=budget.memory))
    if codec.name == "zstd-patch":
        return bytes(codec.diff(old, new, level=ZSTD_SELECT_LEVEL))
    return bytes(codec.diff(old, new))


def default_candidates(table: Mapping[str, PatchCodec]) -> list[str]:
    """The built-in candidates, then every plugin codec of ``table`` (in table order)."""
    return [*(n for n in DEFAULT_CANDIDATES if n in table), *(n for n in table if n not in codecs)]


def select_patch(
    old: bytes,
    new: bytes,
    *,
    table: Mapping[str, PatchCodec] | None = None,
    candidates: Sequence[str] | None = None,
    budget: CreateBudget | None = None,
    probe: bool = True,
    cpu: Callable[[], float] = time.process_time,
) -> Selection:
    """Choose a codec and make the patch within ``budget`` (see the module docstring).

    ``Selection.codec is None`` means "no delta: ship the full artifact".
    """
    table = codecs if table is None else table
    budget = budget or CreateBudget()
    names = list(default_candidates(table) if candidates is None else candidates)
    impls = [get_codec(n, table) for n in names]
    seen = probe_related(old, new) if probe else None
    spent: dict[str, float] = {} if seen is None else {"probe": seen.cpu_s}
    if seen is not None and not seen.related:
        return Selection(None, None, f"unrelated: {seen.describe()}", seen, {}, spent)
    sizes: dict[str, int] = {}
    skipped: dict[str, str] = {}
    best: tuple[str, bytes] | None = None
    allowed: float | None = None  # CPU seconds the whole selection may spend
    for impl in impls:
        name = impl.name
        if not codec_available(impl):
            skipped[name] = "unavailable (its self-test failed)"
            continue
        need = _diff_memory(impl, len(old), len(new), budget)
        if need is not None and need > budget.memory:
            skipped[name] = f"needs ~{need // MiB} MiB, over the {budget.memory // MiB} MiB budget"
            continue
        if allowed is not None:
            left = allowed - sum(spent.values())
            if name == "zstd-patch":
                if best is not None and len(best[1]) * 10_000 <= ZSTD_TRY_ABOVE_BP * len(new):
                    skipped[name] = "the reference patch is good: zstd-patch never wins there"
                    continue
                if predict_zstd_cpu(len(old), len(new)) > CPU_MARGIN * left:
                    skipped[name] = "its predicted CPU is over the budget left"
                    continue
            elif left <= 0:
                skipped[name] = "no CPU budget left"
                continue
        started = cpu()
        patch = _run(impl, old, new, budget)
        spent[name] = cpu() - started
        sizes[name] = len(patch)
        if allowed is None:  # the reference codec sets the budget
            allowed = max(budget.cpu_factor * spent[name], budget.cpu_floor_s)
        if best is None or len(patch) < len(best[1]):
            best = (name, patch)
    if best is None:
        return Selection(None, None, "no candidate codec could run", seen, sizes, spent, skipped)
    if len(best[1]) >= len(new):
        return Selection(
            None, None, "no patch is smaller than the new bytes", seen, sizes, spent, skipped
        )
    return Selection(best[0], best[1], "smallest of those run", seen, sizes, spent, skipped)


class _HashSink:
    """A write-only sink that hashes and counts (a verification never holds the output)."""

    def __init__(self, limit: int) -> None:
        self.digest = sha256()
        self.length = 0
        self.limit = limit

    def write(self, data: bytes) -> int:
        self.length += len(data)
        if self.length > self.limit:
            raise PatchOutputError("patch produced more bytes than allowed")
        self.digest.update(data)
        return len(data)


def verify_patch(
    old: bytes, new_sha256: str, new_length: int, patch: bytes, codec: PatchCodec
) -> None:
    """Apply ``patch`` in this process and check it gives new's bytes (PatchOutputError)."""
    if isinstance(codec, StreamingPatchCodec):
        sink = _HashSink(new_length)
        codec.apply_to(old, patch, max_output=new_length, sink=sink)  # type: ignore[arg-type]
        ok = (sink.digest.hexdigest(), sink.length) == (new_sha256, new_length)
    else:
        out = apply_patch_bytes(old, patch, codec=codec, max_output=new_length)
        ok = (sha256_hex(out), len(out)) == (new_sha256, new_length)
    if not ok:
        raise PatchOutputError(f"codec {codec.name!r} does not round-trip this pair")


def _names(codec: str | Sequence[str] | None) -> list[str] | None:
    if codec is None:
        return None
    return [codec] if isinstance(codec, str) else list(codec)


def _fits_memory(
    names: Sequence[str], table: Mapping[str, PatchCodec], old_len: int, new_len: int,
    budget: CreateBudget,
) -> bool:  # fmt: skip
    """Whether any candidate could run within the memory budget (before reading the files)."""
    for name in names:
        need = _diff_memory(get_codec(name, table), old_len, new_len, budget)
        if need is None or need <= budget.memory:
            return True
    return False


@frozen
class DeltaResult:
    """:func:`make_delta`'s answer: the verified delta (None: ship the full file) and why."""

    delta: DeltaPatch | None
    selection: Selection


def make_delta(
    old_path: str | os.PathLike[str],
    new_path: str | os.PathLike[str],
    *,
    codec: str | Sequence[str] | None = None,
    table: Mapping[str, PatchCodec] | None = None,
    budget: CreateBudget | None = None,
    verify: bool = True,
) -> DeltaResult:
    """Select and make a delta between two files (see :func:`select_patch`); with ``verify``
    the patch is applied once (streamed into a hash) before it is returned."""
    table = codecs if table is None else table
    budget = budget or CreateBudget()
    names = _names(codec) or default_candidates(table)
    old_len, new_len = os.stat(old_path).st_size, os.stat(new_path).st_size
    if not _fits_memory(names, table, old_len, new_len, budget):
        reason = f"no candidate fits the {budget.memory // MiB} MiB memory budget"
        return DeltaResult(None, Selection(None, None, reason))
    old = Path(old_path).read_bytes()
    new = Path(new_path).read_bytes()
    selection = select_patch(old, new, table=table, candidates=names, budget=budget)
    if selection.codec is None or selection.patch is None:
        return DeltaResult(None, selection)
    delta = DeltaPatch(
        from_sha256=sha256_hex(old),
        from_length=len(old),
        to_sha256=sha256_hex(new),
        to_length=len(new),
        codec=selection.codec,
        patch_sha256=sha256_hex(selection.patch),
        patch_length=len(selection.patch),
        patch=selection.patch,
    )
    del new
    if verify:
        verify_patch(old, delta.to_sha256, delta.to_length, delta.patch, table[delta.codec])
    return DeltaResult(delta, selection)


def generate_delta(
    old_path: str | os.PathLike[str],
    new_path: str | os.PathLike[str],
    *,
    codec: str | Sequence[str] | None = None,
    table: Mapping[str, PatchCodec] | None = None,
    memory_budget: int = DEFAULT_DIFF_MEMORY_BUDGET,
    verify: bool = True,
) -> DeltaPatch | None:
    """The smallest verified delta between two files, or None (ship the full artifact):
    unrelated inputs, no candidate within ``memory_budget``, or no patch smaller than new."""
    return make_delta(
        old_path,
        new_path,
        codec=codec,
        table=table,
        budget=CreateBudget(memory=memory_budget),
        verify=verify,
    ).delta


# -- archives: per-member deltas ------------------------------------------------------------


@frozen
class MemberDelta:
    """How one member of an unpacked archive gets to its new contents.

    ``status``: ``"unchanged"`` (same sha256: copy the old member), ``"delta"`` (apply
    ``patch`` to the old member of the same path) or ``"full"`` (new member, or no delta pays
    off: it must come from the full download).
    """

    path: str
    status: Literal["unchanged", "delta", "full"]
    sha256: str
    length: int
    patch: DeltaPatch | None = None


def _hash_path(path: Path) -> tuple[str, int]:
    digest = sha256()
    total = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            total += len(chunk)
            digest.update(chunk)
    return digest.hexdigest(), total


def member_deltas(
    old_members: Mapping[str, str | os.PathLike[str]],
    new_members: Mapping[str, str | os.PathLike[str]],
    *,
    codec: str | Sequence[str] | None = None,
    table: Mapping[str, PatchCodec] | None = None,
    memory_budget: int = DEFAULT_DIFF_MEMORY_BUDGET,
    keep_larger: bool = False,
) -> dict[str, MemberDelta]:
    """Per-member deltas between two unpacked archives (member path -> file on disk).

    Pure: reads the files, writes nothing. Members only in the old tree are not listed.
    A patch at least as large as its member is reported "full" unless ``keep_larger``: a
    publisher that wants a complete set (every changed member patchable, so a node never
    needs the whole archive) keeps it and judges the set by its total size.
    """
    result: dict[str, MemberDelta] = {}
    for name in sorted(new_members):
        new_path = Path(new_members[name])
        digest, length = _hash_path(new_path)
        old_ref = old_members.get(name)
        if old_ref is not None and _hash_path(Path(old_ref)) == (digest, length):
            result[name] = MemberDelta(name, "unchanged", digest, length)
            continue
        delta = None
        if old_ref is not None:
            delta = generate_delta(
                old_ref, new_path, codec=codec, table=table, memory_budget=memory_budget
            )
        if delta is None or (delta.patch_length >= length and not keep_larger):
            result[name] = MemberDelta(name, "full", digest, length)
        else:
            result[name] = MemberDelta(name, "delta", digest, length, delta)
    return result
