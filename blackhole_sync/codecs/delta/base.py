"""What every delta codec is, and the record of one generated patch.

A codec is anything with ``name``, ``diff(old, new) -> bytes`` and
``apply(old, patch, *, max_output) -> bytes`` (:class:`PatchCodec`): that is all a plugin must
write. The built-in codecs also implement the optional extensions below, which the selection,
the apply worker and the node's planner use when present:

``declared_output_length(head)`` (:class:`SizedPatchCodec`)
    the output length a patch declares, from its first :data:`HEAD_BYTES` bytes, so that a
    patch promising more than the manifest allows is refused before any work.
``apply_to(old, patch, *, max_output, sink)`` (:class:`StreamingPatchCodec`)
    writes the output to ``sink`` as it is produced: the apply worker then never holds the
    output, and its address space is bounded by the input sizes plus the output length plus a
    fixed overhead (see :class:`~blackhole_sync.codecs.delta.apply.ApplyLimits`).
``diff_memory(old_len, new_len)``
    peak memory of one diff, both inputs included; the selection skips a codec over its budget.
``available()``
    False when the codec cannot work in this process (a failed self-test): it is then never
    chosen, and a patch made with it is not applied (the node downloads the full artifact).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from attrs import field, frozen

from ..._fsutil import fsync_fd, replace, sha256_hex
from ...errors import PatchOutputError

__all__ = [
    "HEAD_BYTES",
    "DeltaPatch",
    "GiB",
    "MiB",
    "PatchCodec",
    "SizedPatchCodec",
    "StreamingPatchCodec",
    "check_declared",
    "codec_available",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: How much of a patch's start ``declared_output_length`` may look at.
HEAD_BYTES = 4096


@runtime_checkable
class PatchCodec(Protocol):
    """A patch format. Implementations must be picklable (they are sent to the apply worker).

    ``apply`` must raise :class:`~blackhole_sync.errors.PatchFormatError` on a malformed patch
    and :class:`~blackhole_sync.errors.PatchOutputError` when the output would exceed
    ``max_output`` bytes -- before allocating it.
    """

    name: str

    def diff(self, old: bytes, new: bytes) -> bytes: ...

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes: ...


@runtime_checkable
class SizedPatchCodec(PatchCodec, Protocol):
    """A codec whose patches declare their output length in a header (optional extension)."""

    def declared_output_length(self, head: bytes) -> int:
        """Return the output length declared by a patch, given its first bytes (up to 4 KiB)."""
        ...


@runtime_checkable
class StreamingPatchCodec(PatchCodec, Protocol):
    """A codec that writes its output as it goes (optional extension): never holds it whole."""

    def apply_to(self, old: bytes, patch: bytes, *, max_output: int, sink: BinaryIO) -> int:
        """Write the output to ``sink``; return its length (at most ``max_output``)."""
        ...


def codec_available(codec: Any) -> bool:
    """Whether ``codec`` can work in this process (its self-test; True when it has none)."""
    check = getattr(codec, "available", None)
    return True if check is None else bool(check())


def check_declared(output_len: int, max_output: int) -> None:
    """Refuse a patch that declares more output than the signed metadata allows."""
    if output_len > max_output:
        raise PatchOutputError(
            f"patch declares {output_len} output bytes, more than the allowed {max_output}"
        )


@frozen
class DeltaPatch:
    """A generated patch and what it connects (the fields a manifest's delta entry carries)."""

    from_sha256: str
    from_length: int
    to_sha256: str
    to_length: int
    codec: str
    patch_sha256: str
    patch_length: int
    patch: bytes = field(repr=False)

    @classmethod
    def from_bytes(cls, old: bytes, new: bytes, patch: bytes, codec: str) -> DeltaPatch:
        return cls(
            from_sha256=sha256_hex(old),
            from_length=len(old),
            to_sha256=sha256_hex(new),
            to_length=len(new),
            codec=codec,
            patch_sha256=sha256_hex(patch),
            patch_length=len(patch),
            patch=patch,
        )

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the patch bytes to ``path`` (a new file) atomically."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.patch)
                fh.flush()
                fsync_fd(fh.fileno())
            replace(tmp, target, sync=False)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
