"""Every example and the demo run for real, as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_release_end_to_end_example_installs_full_then_delta(backend: str) -> None:
    result = run(sys.executable, str(EXAMPLES / "release_end_to_end.py"), backend)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "installed 1.0.0 (full, 1048597 bytes)" in lines
    delta = next(line for line in lines if line.startswith("installed 1.1.0"))
    assert "(delta, " in delta
    assert int(delta.split(", ")[1].split()[0]) < 10_000
    assert lines[-1] == "current: 1.1.0 installed: ['1.0.0', '1.1.0']"


def test_example_plugin_transport_health_check_and_observer_are_used() -> None:
    result = run(sys.executable, str(EXAMPLES / "example_plugin.py"))
    assert result.returncode == 0, result.stderr
    assert "trace: fetching ['blobs'," in result.stdout
    assert "installed 1.0.0 through the trace transport, health-checked" in result.stdout
    assert "events seen by the plugin: checking, checked, downloading" in result.stdout


def test_example_plugin_files_are_all_tested() -> None:
    tested = {"release_end_to_end.py", "example_plugin.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_demo_runs_a_local_network_and_every_check_holds(tmp_path: Path) -> None:
    exe = shutil.which("blackhole-sync", path=str(Path(sys.executable).parent))
    assert exe is not None
    result = run(exe, "demo", "--workdir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[FAILED]" not in out
    assert out.count("[ok]") == 7
    assert "gamma refused the tampered blob and fell back to the origin" in out
    assert "demo finished: every check held" in out
