"""Delta patches: codecs, choosing one within a budget, bounded apply, update-path planning.

A patch turns the bytes of an installed artifact (the *source*) into the bytes of a newer one
(the *output*). Patches are untrusted until their sha256 matches signed metadata, and even then
a patch is only a recipe: the output is accepted only when its own sha256 matches the manifest.
Deltas are always between installed bytes (never between compressed transfer blobs).

One concern per module:

=================  ==========================================================================
``base``           the codec protocols (:class:`PatchCodec` and its optional extensions) and
                   :class:`DeltaPatch`, the record of one generated patch
``streams``        raw LZMA2 streams inside our containers: encoded whole, decoded under bounds
``hdiff``          the ``hdiffpatch`` codec (the default) and its container
``_hpatch``        the ctypes bridge to HDiffPatch's C patcher (streaming, bounded apply)
``zstdpatch``      the ``zstd-patch`` codec (``zstd --patch-from --long``)
``bsdiff``         the ``bsdiff4`` and ``bsdiff4-lzma`` codecs (applied; made only on request)
``registry``       the codec table: built-ins plus plugin codecs
``probe``          the early probe that recognises unrelated inputs before any diff
``select``         the release builder's choice of codec within a CPU and memory budget
``apply``          applying a patch in a bounded child interpreter (``ApplyLimits``)
``plan``           ``UpdateOptimizer``: the cheapest chain of patches, or the full artifact
=================  ==========================================================================

Names load lazily (PEP 562): importing this package loads no codec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

#: name -> the module of this package that provides it
_EXPORTS: dict[str, str] = {
    "ASSUMED_BANDWIDTH": "plan",
    "ApplyLimits": "apply",
    "ApplyWorker": "apply",
    "AvailableUpdates": "plan",
    "BUILTIN_CODECS": "registry",
    "Bsdiff4Codec": "bsdiff",
    "Bsdiff4LzmaCodec": "bsdiff",
    "CreateBudget": "select",
    "DEFAULT_CANDIDATES": "registry",
    "DEFAULT_CODEC": "registry",
    "DEFAULT_CPU_FACTOR": "select",
    "DEFAULT_DIFF_MEMORY_BUDGET": "select",
    "DeltaEdge": "plan",
    "DeltaPatch": "base",
    "DeltaResult": "select",
    "FullDownload": "plan",
    "HDiffPatchCodec": "hdiff",
    "MemberDelta": "select",
    "PatchCodec": "base",
    "Probe": "probe",
    "Selection": "select",
    "SizedPatchCodec": "base",
    "StreamingPatchCodec": "base",
    "UpdateOptimizer": "plan",
    "UpdatePath": "plan",
    "ZstdPatchCodec": "zstdpatch",
    "apply_patch": "apply",
    "apply_patch_bytes": "apply",
    "codec_available": "base",
    "codec_table": "registry",
    "codecs": "registry",
    "diff_memory_needed": "bsdiff",
    "generate_delta": "select",
    "get_codec": "registry",
    "make_delta": "select",
    "member_deltas": "select",
    "probe_related": "probe",
    "select_patch": "select",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static names for type checkers
    from .apply import (
        ApplyLimits as ApplyLimits,
        apply_patch as apply_patch,
        apply_patch_bytes as apply_patch_bytes,
    )
    from .base import (
        DeltaPatch as DeltaPatch,
        PatchCodec as PatchCodec,
        SizedPatchCodec as SizedPatchCodec,
        StreamingPatchCodec as StreamingPatchCodec,
        codec_available as codec_available,
    )
    from .bsdiff import (
        Bsdiff4Codec as Bsdiff4Codec,
        Bsdiff4LzmaCodec as Bsdiff4LzmaCodec,
        diff_memory_needed as diff_memory_needed,
    )
    from .hdiff import HDiffPatchCodec as HDiffPatchCodec
    from .plan import (
        ASSUMED_BANDWIDTH as ASSUMED_BANDWIDTH,
        AvailableUpdates as AvailableUpdates,
        DeltaEdge as DeltaEdge,
        FullDownload as FullDownload,
        UpdateOptimizer as UpdateOptimizer,
        UpdatePath as UpdatePath,
    )
    from .probe import Probe as Probe, probe_related as probe_related
    from .registry import (
        BUILTIN_CODECS as BUILTIN_CODECS,
        DEFAULT_CANDIDATES as DEFAULT_CANDIDATES,
        DEFAULT_CODEC as DEFAULT_CODEC,
        codec_table as codec_table,
        codecs as codecs,
        get_codec as get_codec,
    )
    from .select import (
        DEFAULT_CPU_FACTOR as DEFAULT_CPU_FACTOR,
        DEFAULT_DIFF_MEMORY_BUDGET as DEFAULT_DIFF_MEMORY_BUDGET,
        CreateBudget as CreateBudget,
        DeltaResult as DeltaResult,
        MemberDelta as MemberDelta,
        Selection as Selection,
        generate_delta as generate_delta,
        make_delta as make_delta,
        member_deltas as member_deltas,
        select_patch as select_patch,
    )
    from .zstdpatch import ZstdPatchCodec as ZstdPatchCodec
