"""A bounded smoke run of every fuzz target (``fuzz/fuzz_gossip.py``): about 2,000 inputs each.

Long runs: ``python blackhole_sync_plugins/gossip/fuzz/fuzz_gossip.py TARGET -max_total_time=600``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

FUZZ = Path(__file__).parent.parent / "fuzz" / "fuzz_gossip.py"
TARGETS = ["hello", "query_request", "query_response", "peer_record", "gate"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_survives_2000_inputs(target: str, tmp_path: Path) -> None:
    flags = ["-runs=2000", "-max_len=4096", "-seed=1", f"-artifact_prefix={tmp_path}/"]
    run = subprocess.run(
        [sys.executable, str(FUZZ), target, *flags],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 2000 runs" in run.stderr
