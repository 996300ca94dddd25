"""Helpers for crash and fault tests: test releases, nodes, and a subprocess driver.

The driver (``python tests/crashlib.py SPEC.json``) opens a node and runs one operation
(install or rollback) so that a test can kill it (``BLACKHOLE_SYNC_CRASH_AT`` or a timed
SIGKILL) or inject faults (``LD_PRELOAD``) in a real, separate process. Manifests are built
with the metadata models directly; there is no publisher in these tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from blackhole_sync.documents import (
    Artifact,
    ConfigChange,
    Envelope,
    Migration,
    ReleaseManifest,
)
from blackhole_sync.errors import HealthCheckError
from blackhole_sync.node import (
    DefaultInstallHooks,
    NodeStore,
    RollbackPoint,
    SignedManifest,
    backup_data_dir,
)
from blackhole_sync.testing import run, scaled, spawn

RELEASED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
HERE = Path(__file__).resolve()

M1 = Migration("m1", 0, 1, "CREATE TABLE t1(x INTEGER); INSERT INTO t1 VALUES (1);")
M2 = Migration("m2", 1, 2, "CREATE TABLE t2(y TEXT); ALTER TABLE t1 ADD COLUMN z INTEGER;")
# inside its rollback window for the whole test: a rollback undoes it
PEERS_V2 = ConfigChange("net.peers", 16, rollback_window=86_400)


def make_release(
    version: str,
    files: Mapping[str, bytes],
    *,
    migrations: Sequence[Migration] = (),
    config_changes: Sequence[ConfigChange] = (),
    mode: int = 0o755,
) -> tuple[ReleaseManifest, bytes]:
    """A manifest with one plain artifact per file, and its stored bytes (unsigned envelope)."""
    artifacts = tuple(
        Artifact(name, len(data), {"sha256": hashlib.sha256(data).hexdigest()}, mode=mode)
        for name, data in files.items()
    )
    manifest = ReleaseManifest(
        version=version,
        type="binary",
        channel="stable",
        artifacts=artifacts,
        released=RELEASED,
        migrations=tuple(migrations),
        config_changes=tuple(config_changes),
    )
    return manifest, Envelope.of(manifest.to_dict(), []).raw


def release_files(version: str, size: int = 64 * 1024) -> dict[str, bytes]:
    seed = hashlib.sha256(version.encode()).digest()
    body = (seed * (size // len(seed) + 1))[:size]
    return {"app": b"#!/bin/sh\necho " + version.encode() + b"\n", "lib.bin": body}


def v1_release(size: int = 64 * 1024) -> tuple[ReleaseManifest, bytes]:
    return make_release("1.0.0", release_files("1.0.0", size), migrations=[M1])


def v2_release(size: int = 64 * 1024) -> tuple[ReleaseManifest, bytes]:
    return make_release(
        "2.0.0", release_files("2.0.0", size), migrations=[M1, M2], config_changes=[PEERS_V2]
    )


def stage(store: NodeStore, manifest: ReleaseManifest, files: Mapping[str, bytes]) -> Path:
    tree = store.new_staging_dir()
    for artifact in manifest.artifacts:
        blob = store.staging_dir / f"blob-{artifact.sha256[:16]}"
        blob.write_bytes(files[artifact.name])
        store.stage_file(blob, artifact, tree)
    return tree


async def install_release(
    store: NodeStore,
    manifest: ReleaseManifest,
    data: bytes,
    files: Mapping[str, bytes],
    **kwargs: Any,
) -> Any:
    tree = stage(store, manifest, files)
    release = SignedManifest.from_bytes(data)
    assert release.manifest == manifest
    return await store.install(release, tree, **kwargs)


def init_node(path: Path) -> None:
    """A node with data/config.json and release 1.0.0 installed (schema 1)."""
    store = NodeStore.create(path, root_bytes=b'{"root": true}', config_text="[node]\n")
    with store:
        (store.data_dir / "config.json").write_text(json.dumps({"net": {"peers": 8}}))
        m1, b1 = v1_release()
        anyio.run(install_release, store, m1, b1, release_files("1.0.0"))


def copy_node(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# -- invariants -------------------------------------------------------------------------------


def schema_of(db: Path) -> tuple[int, set[str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        conn.execute("SELECT * FROM t1").fetchall()
        return version, tables
    finally:
        conn.close()


EXPECTED_SCHEMA = {"1.0.0": (1, {"t1"}), "2.0.0": (2, {"t1", "t2"})}
EXPECTED_PEERS = {"1.0.0": 8, "2.0.0": 16}


def check_node(path: Path, allowed: Sequence[str] = ("1.0.0", "2.0.0")) -> str:
    """Reopen (recovering) and check every invariant; the version the node runs."""
    with NodeStore.open(path) as store:
        current = store.current_version()
        assert current in allowed, current
        assert store.verify_installed() == []
        assert os.listdir(store.staging_dir) == []
        assert store.active_operation() is None
        assert not [p for p in os.listdir(store.data_dir) if p.startswith(".")]
        assert not [p for p in os.listdir(path) if p.startswith((".current", ".data-"))]
        assert current is not None
        assert schema_of(store.data_dir / "node.db") == EXPECTED_SCHEMA[current]
        config = json.loads((store.data_dir / "config.json").read_text())
        assert config["net"]["peers"] == EXPECTED_PEERS[current]
        installed = [i.version for i in store.installed_versions()]
        assert current in installed
        for version in installed:
            if not store.is_bad(version):
                assert store.verify_installed(version) == []
        return current


# -- hooks ------------------------------------------------------------------------------------


class UnhealthyHooks(DefaultInstallHooks):
    """Every health check fails."""

    async def health(self, version: str, manifest: ReleaseManifest) -> None:
        raise HealthCheckError(f"{version} is unhealthy")


class ForeignPointHooks(DefaultInstallHooks):
    """A host's own rollback points, kept outside the node directory (``where``).

    ``backup`` points are state backups the store can read; other points hold a file of the
    host's own format that only this object can restore.
    """

    def __init__(self, store: NodeStore, where: Path, *, backup: bool = True) -> None:
        super().__init__(store.rollbacks)
        self.data_dir = store.data_dir
        self.where = where
        self.backup = backup
        self.restored: list[RollbackPoint] = []

    async def create_rollback_point(self, previous_version: str | None, version: str) -> Any:
        self.where.mkdir(parents=True, exist_ok=True)
        point_id = 1000 + len(list(self.where.iterdir()))
        path = self.where / f"host-{point_id}"
        if self.backup:
            size = backup_data_dir(self.data_dir, path).size
        else:
            path.mkdir()
            (path / "host-format.bin").write_bytes(b"opaque")
            size = 6
        return RollbackPoint(point_id, previous_version, version, "now", path, size)

    async def restore_state(self, point: RollbackPoint) -> None:
        self.restored.append(point)
        if self.backup:
            await super().restore_state(point)


# -- the subprocess driver --------------------------------------------------------------------


def run_driver(
    spec: Mapping[str, Any],
    *,
    crash_at: str | None = None,
    env: Mapping[str, str] | None = None,
    kill_after: float | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run the driver on ``spec``; with ``kill_after``, SIGKILL it that long after READY."""
    full_env = {k: v for k, v in os.environ.items() if k != "BLACKHOLE_SYNC_CRASH_AT"}
    if crash_at is not None:
        full_env["BLACKHOLE_SYNC_CRASH_AT"] = crash_at
    full_env.update(env or {})
    args = [sys.executable, str(HERE), json.dumps(dict(spec))]
    if kill_after is None:  # timeouts (scaled) stop hangs; the process group dies with them
        return run(args, env=full_env, timeout=timeout)
    with spawn(args, env=full_env) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", line
        time.sleep(kill_after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=scaled(timeout))
    return subprocess.CompletedProcess(args, proc.returncode, line + out, err)


async def _drive(spec: Mapping[str, Any]) -> dict[str, Any]:
    node = Path(spec["node"])
    result: dict[str, Any] = {}
    with NodeStore.open(node, reserve_bytes=0) as store:
        print("READY", flush=True)
        started = time.monotonic()
        for op in spec["ops"]:
            if op.startswith("install-v2"):
                hooks: DefaultInstallHooks | None = None
                if op == "install-v2-unhealthy":
                    hooks = UnhealthyHooks(store.rollbacks)
                elif op.startswith("install-v2-foreign"):
                    where = Path(spec["points"])
                    hooks = ForeignPointHooks(store, where, backup=op.endswith("backup"))
                m2, b2 = v2_release(spec.get("size", 64 * 1024))
                files = release_files("2.0.0", spec.get("size", 64 * 1024))
                try:
                    await install_release(store, m2, b2, files, hooks=hooks)
                    result[op] = "ok"
                except Exception as exc:
                    result[op] = f"{type(exc).__name__}: {exc}"
            elif op == "rollback":
                try:
                    result[op] = store.rollback()
                except Exception as exc:
                    result[op] = f"{type(exc).__name__}: {exc}"
            elif op == "rollback-keep-data":
                result[op] = store.rollback(restore_data=False)
            elif op == "activate-v1":
                result[op] = store.activate("1.0.0")
            else:
                raise ValueError(op)
        result["seconds"] = time.monotonic() - started
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = anyio.run(_drive, spec)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
