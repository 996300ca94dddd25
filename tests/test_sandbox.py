"""UpdateSandbox: each test stages the self-test misbehaviour it is named after.

Real subprocesses, real namespaces (these machines run the tests as root; where namespaces
are unavailable the isolation tests are skipped with the launcher's own reason).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blackhole_sync.documents import Command
from blackhole_sync.errors import SandboxError
from blackhole_sync.node.sandbox import UpdateSandbox, run_sandbox_test

pytestmark = pytest.mark.anyio

PY = sys.executable


def py(code: str, timeout: int = 30) -> Command:
    return Command((PY, "-c", code), timeout=timeout)


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    tree = tmp_path / "staged"
    tree.mkdir()
    (tree / "VERSION").write_text("2.0.0\n")
    (tree / "app.py").write_text("print('app ok')\n")
    return tree


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "node.db").write_bytes(b"original")
    return data


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback (connections complete in the backlog)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield int(srv.getsockname()[1])


async def require_namespaces(tmp_path: Path, staged: Path) -> None:
    box = UpdateSandbox(scratch_dir=tmp_path / "probe")
    async with await box.create_sandbox(staged) as sandbox:
        for status in (await box.isolate_network(sandbox), await box.isolate_filesystem(sandbox)):
            if not status.isolated:
                pytest.skip(status.describe())


async def test_passing_self_test(tmp_path: Path, staged: Path, data_dir: Path) -> None:
    code = (
        "import os, pathlib; "
        "assert pathlib.Path('VERSION').read_text() == '2.0.0\\n'; "
        "db = pathlib.Path(os.environ['BLACKHOLE_SYNC_DATA'], 'node.db'); "
        "assert db.read_bytes() == b'original'; db.write_bytes(b'migrated in sandbox'); "
        "print('self-test ok')"
    )
    result = await run_sandbox_test(staged, data_dir, py(code), scratch_dir=tmp_path / "scratch")
    assert result.passed and result.exit_code == 0 and b"self-test ok" in result.output
    assert result.anomalies == ()
    assert (data_dir / "node.db").read_bytes() == b"original"  # a copy was written, not this
    assert list((tmp_path / "scratch").iterdir()) == []  # the sandbox was removed


async def test_failing_self_test_raises_sandbox_error(tmp_path: Path, staged: Path) -> None:
    with pytest.raises(SandboxError, match="exit-status: exit status 1: broken build"):
        await run_sandbox_test(staged, None, py("import sys; print('broken build'); sys.exit(1)"))


async def test_hanging_self_test_times_out(tmp_path: Path, staged: Path) -> None:
    box = UpdateSandbox()
    async with await box.create_sandbox(staged) as sandbox:
        result = await box.test_update(sandbox, Command(("sleep", "30"), timeout=1))
        assert result.timed_out and not result.passed
        assert [a.kind for a in await box.detect_anomalies(sandbox)] == ["timeout"]
        validation = await box.validate_behavior(sandbox)
        assert not validation.valid and validation.reasons[0].startswith("timeout")


async def test_write_outside_sandbox_detected_without_isolation(
    tmp_path: Path, staged: Path, data_dir: Path
) -> None:
    victim = data_dir / "node.db"
    code = f"open({str(victim)!r}, 'wb').write(b'tampered')"
    box = UpdateSandbox()
    async with await box.create_sandbox(staged, data_dir) as sandbox:
        result = await box.test_update(sandbox, py(code))
    assert result.exit_code == 0 and not result.passed
    assert not result.filesystem.isolated and not result.filesystem.requested
    (anomaly,) = result.anomalies
    assert anomaly.kind == "outside-write" and anomaly.path == str(victim.resolve())


async def test_write_to_watched_node_dir_detected(tmp_path: Path, staged: Path) -> None:
    node = tmp_path / "node"
    (node / "versions").mkdir(parents=True)
    code = f"open({str(node / 'versions' / 'planted')!r}, 'w').write('x')"
    with pytest.raises(SandboxError, match="outside-write: created outside the sandbox"):
        await run_sandbox_test(staged, None, py(code), isolate_filesystem=False, watch_paths=[node])


async def test_write_outside_sandbox_prevented_by_isolation(
    tmp_path: Path, staged: Path, data_dir: Path
) -> None:
    await require_namespaces(tmp_path, staged)
    victim = data_dir / "node.db"
    elsewhere = tmp_path / "elsewhere.txt"
    code = (
        f"import os; os.makedirs(os.environ['TMPDIR'], exist_ok=True); "
        f"open(os.path.join(os.environ['TMPDIR'], 'scratch'), 'w').write('inside is fine'); "
        f"open({str(victim)!r}, 'wb').write(b'tampered')"
    )
    box = UpdateSandbox()
    async with await box.create_sandbox(staged, data_dir) as sandbox:
        assert (await box.isolate_filesystem(sandbox)).isolated
        result = await box.test_update(sandbox, py(code))
        assert (sandbox.root / "tmp" / "scratch").read_text() == "inside is fine"
        second = await box.test_update(sandbox, py(f"open({str(elsewhere)!r}, 'w')"))
    assert result.filesystem.isolated and not result.passed
    assert b"Read-only file system" in result.output
    assert victim.read_bytes() == b"original"
    assert [a.kind for a in result.anomalies] == ["exit-status"]
    assert not second.passed and not elsewhere.exists()


async def test_network_isolation_blocks_host_loopback(
    tmp_path: Path, staged: Path, listener: int
) -> None:
    await require_namespaces(tmp_path, staged)
    code = f"import socket; socket.create_connection(('127.0.0.1', {listener}), timeout=3)"
    # Without isolation the self-test reaches the host's loopback server...
    plain = await run_sandbox_test(staged, None, py(code), isolate_network=False)
    assert plain.passed and not plain.network.requested
    # ...inside the namespace the same connection is refused.
    with pytest.raises(SandboxError, match="ConnectionRefusedError"):
        await run_sandbox_test(staged, None, py(code), isolate_network=True)


async def test_isolated_loopback_is_up_for_the_self_test(tmp_path: Path, staged: Path) -> None:
    await require_namespaces(tmp_path, staged)
    code = (
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); "
        "c = socket.create_connection(s.getsockname(), timeout=3); print('loopback up')"
    )
    result = await run_sandbox_test(staged, None, py(code))
    assert result.network.isolated and b"loopback up" in result.output


async def test_memory_limit_exceeded_is_an_anomaly(tmp_path: Path, staged: Path) -> None:
    code = "b = bytearray(1024 * 1024 * 1024); print('allocated')"
    box = UpdateSandbox(memory_limit=256 * 1024 * 1024)
    async with await box.create_sandbox(staged) as sandbox:
        result = await box.test_update(sandbox, py(code))
    assert not result.passed and b"allocated" not in result.output
    kinds = [a.kind for a in result.anomalies]
    assert "memory" in kinds and "exit-status" in kinds
    assert result.peak_rss is not None and result.peak_rss < 256 * 1024 * 1024


async def test_missing_self_test_program_fails(tmp_path: Path, staged: Path) -> None:
    with pytest.raises(SandboxError, match="exit status 127"):
        await run_sandbox_test(staged, None, Command(("./no-such-selftest",)))


async def test_sandbox_copies_are_not_hardlinks(
    tmp_path: Path, staged: Path, data_dir: Path
) -> None:
    box = UpdateSandbox()
    async with await box.create_sandbox(staged, data_dir) as sandbox:
        copy = sandbox.data / "node.db"
        assert copy.stat().st_ino != (data_dir / "node.db").stat().st_ino
        assert copy.stat().st_nlink == 1
        assert (sandbox.tree / "VERSION").stat().st_ino != (staged / "VERSION").stat().st_ino
        assert oct(sandbox.root.stat().st_mode & 0o777) == "0o700"
        root = sandbox.root
    assert not root.exists()


async def test_plugin_self_test_failure_fails_the_sandbox(tmp_path: Path, staged: Path) -> None:
    class Check:
        name = "schema-opens"

        async def check(self, node_dir: Path, version: str) -> str | None:
            assert (node_dir / "tree" / "VERSION").exists()
            return f"schema of {version} does not open"

    with pytest.raises(SandboxError, match=r"check: schema-opens: schema of 2\.0\.0"):
        await run_sandbox_test(staged, None, py("pass"), checks=[Check()], version="2.0.0")
