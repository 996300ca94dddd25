"""What every fuzz target shares: the command line, the seed corpus, the refusal rule.

A target is ``python fuzz/fuzz_NAME.py [libFuzzer flags] [CORPUS_DIR...]``. An empty corpus
directory is filled with the target's seeds first (valid inputs the fuzzer mutates), so a
short run already reaches past the first parse. ``--write-seeds DIR`` only writes them.

The rule every target enforces: hostile input is *refused* with one of the library's own errors
(:class:`~blackhole_sync.errors.BlackholeSyncError` and its subclasses, the exit-1/3 errors of
the command line). Any other exception -- ``TypeError``, ``KeyError``, ``RecursionError``,
``MemoryError``, an ``AssertionError`` of a target's own invariant -- is a crash: atheris
prints it, writes the input to ``crash-<sha1>`` (under ``-artifact_prefix``) and exits 1. A
crash is fixed in the library with a regression test, and its input goes into that test.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import atheris

__all__ = ["fuzz_main"]


def _write_seeds(directory: Path, seeds: Mapping[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / name).write_bytes(data)


def fuzz_main(
    test_one_input: Callable[[bytes], None], seeds: Callable[[], Mapping[str, bytes]]
) -> None:
    """Run libFuzzer on ``test_one_input`` with ``sys.argv``; seed empty corpus directories."""
    argv = list(sys.argv)
    if len(argv) == 3 and argv[1] == "--write-seeds":
        _write_seeds(Path(argv[2]), seeds())
        return
    corpora = [Path(a) for a in argv[1:] if not a.startswith("-") and Path(a).is_dir()]
    empty = [c for c in corpora if not any(c.iterdir())]
    if empty:
        made = seeds()
        for directory in empty:
            _write_seeds(directory, made)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
