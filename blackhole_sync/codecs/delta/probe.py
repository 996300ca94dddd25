"""The early probe: do two byte strings share content at all? (Before any diff is run.)

Diffing two unrelated 64 MB files costs minutes of CPU and gigabytes of memory for a patch no
smaller than the file. :func:`probe_related` looks up a few short pieces of new in old: related
inputs answer in milliseconds (pieces are found near the same relative position), unrelated
ones after :data:`STOP_UNRELATED` full scans of old (~0.3 s for 64 MiB), and the selection then
makes no delta.

The pieces: :data:`NEEDLES` positions spread evenly over new, visited in bit-reversed order
(the first few already cover the whole file); at each, the first :data:`NEEDLE_LEN`-byte window
with at least :data:`MIN_DISTINCT` distinct byte values (so no zero runs or padding, which
occur anywhere). Each is looked up within :data:`NEAR` bytes of its relative position in old,
then anywhere. A 12-byte piece of varied data occurs in unrelated bytes with negligible chance.
"""

from __future__ import annotations

import time

from attrs import frozen

from .base import MiB

__all__ = [
    "MIN_DISTINCT",
    "NEAR",
    "NEEDLES",
    "NEEDLE_LEN",
    "STOP_RELATED",
    "STOP_UNRELATED",
    "Probe",
    "probe_related",
]

#: Pieces of new looked up in old, at most.
NEEDLES = 32
#: Length of one piece.
NEEDLE_LEN = 12
#: Distinct byte values a piece needs.
MIN_DISTINCT = 8
#: How far around a piece's relative position old is searched first.
NEAR = 4 * MiB
#: Found pieces that settle "related".
STOP_RELATED = 3
#: Missed pieces (with none found) that settle "unrelated".
STOP_UNRELATED = 12
#: How far past a position a piece is looked for (in steps of 7 bytes).
_SCAN = 4096


@frozen
class Probe:
    """What the probe saw: pieces tried, found (``near`` without a full scan), full scans of
    old, the verdict and its CPU seconds."""

    needles: int
    hits: int
    near: int
    full_scans: int
    related: bool
    cpu_s: float

    def describe(self) -> str:
        return f"{self.hits} of {self.needles} pieces of new found in old"


def _bit_reversed(n: int) -> list[int]:
    bits = max(1, (n - 1).bit_length())
    order = sorted(range(1 << bits), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2))
    return [i for i in order if i < n]


def probe_related(old: bytes, new: bytes) -> Probe:
    """Look up short pieces of ``new`` in ``old`` (see the module docstring).

    Inputs too short or too uniform to give four pieces are called related (the probe spares
    big diffs; small or uniform ones are cheap); an empty old is related to nothing.
    """
    started = time.process_time()
    hits = near = scans = tried = 0
    if old and len(new) > NEEDLE_LEN:
        for i in _bit_reversed(NEEDLES):
            p = (2 * i + 1) * len(new) // (2 * NEEDLES)
            needle = None
            at = p
            for at in range(p, min(p + _SCAN, len(new) - NEEDLE_LEN), 7):
                piece = new[at : at + NEEDLE_LEN]
                if len(set(piece)) >= MIN_DISTINCT:
                    needle = piece
                    break
            if needle is None:
                continue
            tried += 1
            q = at * len(old) // len(new)
            if old.find(needle, max(0, q - NEAR), q + NEAR) >= 0:
                hits += 1
                near += 1
            else:
                scans += 1
                if old.find(needle) >= 0:
                    hits += 1
            if hits >= STOP_RELATED or (hits == 0 and tried >= STOP_UNRELATED):
                break
    if not old:
        related = len(new) <= NEEDLE_LEN  # nothing to match: a "patch" would be new, compressed
    else:
        related = tried < 4 or hits >= 2 or (hits >= 1 and tried < STOP_UNRELATED)
    return Probe(tried, hits, near, scans, related, time.process_time() - started)
