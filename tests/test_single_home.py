"""Each primitive has one home: a hash, an fsync, an atomic rename or a clock read written
anywhere else in the library is a second implementation that can drift (as the directory
fsync's EINVAL handling once did in three copies)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import blackhole_sync

PACKAGE = Path(blackhole_sync.__file__).parent
HOMES = {
    r"hashlib\.sha256\(": "_fsutil.py",
    r"os\.fsync\(": "_fsutil.py",
    r"os\.replace\(": "_fsutil.py",
    r"datetime\.now\(": "clock.py",
}


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("pattern", sorted(HOMES))
def test_primitive_lives_in_its_home_only(pattern: str) -> None:
    home = PACKAGE / HOMES[pattern]
    assert re.search(pattern, home.read_text()), f"{home.name} no longer defines {pattern}"
    strays = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in _sources()
        if path != home
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(pattern, line)
    ]
    assert not strays, f"{pattern} outside {HOMES[pattern]}: {strays}"


def test_the_scan_sees_the_whole_package() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in _sources()}
    assert {"_fsutil.py", "clock.py", "manager/core.py", "node/store.py"} <= names
