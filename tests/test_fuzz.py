"""Hostile input, continuously: a bounded run of every fuzz target, and each crash it found.

``nox -s fuzz`` runs the targets in ``fuzz/`` for long; here each runs about 2,000 inputs
(its seeds, the inputs that once crashed it in ``fuzz/regressions/<target>/``, then mutations)
as a subprocess, and must finish them all without a crash. Below, each crash the fuzzers found
is staged as the attack it is, against the fixed code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from blackhole_sync.codecs.archive import extract_archive, iter_entries, list_members
from blackhole_sync.documents import Member, Unpack
from blackhole_sync.errors import FormatError
from blackhole_sync.testing import run

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))
#: Inputs per target in the test session (seeds and regressions included).
SMOKE_RUNS = 2000


def test_every_target_is_smoke_tested() -> None:
    assert set(TARGETS) >= {"documents", "archive", "delta", "peer_messages"}


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_survives_a_short_run(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (a test dependency) runs the fuzz targets")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    regressions = FUZZ / "regressions" / target
    argv = [
        sys.executable,
        str(FUZZ / f"fuzz_{target}.py"),
        f"-runs={SMOKE_RUNS}",
        "-timeout=60",  # one input that runs this long is a hang: a failure
        f"-artifact_prefix={tmp_path}{os.sep}",
        "-print_final_stats=1",
        str(corpus),
        *([str(regressions)] if regressions.is_dir() else []),
    ]
    result = run(argv, timeout=900, cwd=tmp_path)
    tail = (result.stdout + result.stderr)[-4000:]
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, f"fuzz_{target} crashed {crashes}:\n{tail}"
    assert f"Done {SMOKE_RUNS} runs" in result.stderr, f"fuzz_{target} did not run:\n{tail}"
    assert any(corpus.iterdir()), "the target wrote no seeds"


# -- the crashes the fuzzers found, each staged ---------------------------------------------------


def _regression(target: str, name: str) -> bytes:
    """A crash input as the target got it (its first byte picked the format or mode)."""
    return (FUZZ / "regressions" / target / name).read_bytes()


@pytest.mark.parametrize("name", ["zip-negative-header-offset", "zip-name-not-utf8"])
def test_a_malformed_zip_is_refused_as_malformed_not_with_an_operating_system_error(
    tmp_path: Path, name: str
) -> None:
    """fuzz_archive: a zip whose central directory puts a member before the start of the file
    made zipfile seek to a negative offset (``OSError``), and a name flagged UTF-8 that is not
    raised ``UnicodeDecodeError``: neither was the ``FormatError`` an archive's reader and
    installer handle. Both are malformed archives."""
    data = _regression("archive", name)
    assert data[0] % 5 == 4  # the target's zip
    archive = tmp_path / "release.zip"
    archive.write_bytes(data[1:])
    with pytest.raises(FormatError, match="malformed archive"):
        list_members(archive, "zip")
    with pytest.raises(FormatError):
        for _ in iter_entries(archive, "zip"):
            pass
    unpack = Unpack("zip", (Member("README", 0o644, "file", 1, {"sha256": "0" * 64}),))
    with pytest.raises(FormatError):
        extract_archive(archive, unpack, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
