"""Install benchmark: a 1 GiB artifact from a local file, against `sha256sum` + `cp`.

Prints peak RSS of the install (measured in a child process; target < 100 MB), install time
as a ratio to `sha256sum FILE && cp FILE DEST` (target <= 1.5x), the time of the `current`
switch and of a rollback to a retained version without data restore (target < 50 ms each),
and the data-restore time separately. The last line is one JSON object.

The install is end to end: the artifact is copied from the local source into staging while
hashed (what a local transport fetch does), staged, then installed (re-verify + fsync, rename,
rollback point, switch, commit). The baseline neither verifies against metadata nor fsyncs.

    python bench/bench_install.py [--size-mib 1024] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from blackhole_sync.documents import Artifact, Envelope, ReleaseManifest
from blackhole_sync.node.store import NodeStore


def make_source(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            chunk = i.to_bytes(8, "big") + block[8:]
            f.write(chunk)
            digest.update(chunk)
    os.sync()
    return digest.hexdigest()


def manifest_for(version: str, size: int, sha: str) -> tuple[ReleaseManifest, bytes]:
    m = ReleaseManifest(
        version=version,
        type="binary",
        channel="stable",
        artifacts=(Artifact("blob.bin", size, {"sha256": sha}, mode=0o755),),
        released=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )
    return m, Envelope.of(m.to_dict(), []).raw


def fetch_into(src: Path, dst: Path, sha: str) -> None:
    """Copy while hashing (a local fetch into staging)."""
    digest = hashlib.sha256()
    buf = bytearray(1 << 20)
    with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
        while n := fi.readinto(buf):
            view = memoryview(buf)[:n]
            digest.update(view)
            fo.write(view)
    if digest.hexdigest() != sha:
        raise SystemExit("hash mismatch")


def child(args: argparse.Namespace) -> None:
    node, src, sha, size, version = (
        Path(args.node),
        Path(args.src),
        args.sha,
        args.size,
        args.version,
    )
    m, b = manifest_for(version, size, sha)

    async def run() -> dict[str, float]:
        with NodeStore.open(node, reserve_bytes=0) as store:
            t0 = time.perf_counter()
            tree = store.new_staging_dir()
            blob = store.staging_dir / "blob.part"
            fetch_into(src, blob, sha)
            store.stage_file(blob, m.artifacts[0], tree)
            await store.install(m, b, tree)
            return {"install_s": time.perf_counter() - t0}

    out = anyio.run(run)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--dir", default=None)
    p.add_argument("--child", action="store_true")
    p.add_argument("--node"), p.add_argument("--src"), p.add_argument("--sha")
    p.add_argument("--size", type=int), p.add_argument("--version")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        src = work / "source.bin"
        sha = make_source(src, size)
        # baseline: sha256sum + cp (page cache warm for both, as for the install)
        subprocess.run(["sha256sum", str(src)], check=True, capture_output=True)
        t0 = time.perf_counter()
        subprocess.run(["sha256sum", str(src)], check=True, capture_output=True)
        subprocess.run(["cp", str(src), str(work / "copy.bin")], check=True)
        baseline = time.perf_counter() - t0
        os.unlink(work / "copy.bin")
        os.sync()

        node = work / "node"
        with NodeStore.create(node, root_bytes=b"{}", config_text="") as store:
            db = sqlite3.connect(store.data_dir / "node.db")
            db.execute("CREATE TABLE t(x BLOB)")
            db.executemany("INSERT INTO t VALUES (?)", [(os.urandom(1024),) for _ in range(20_000)])
            db.commit()
            db.close()
        results = {}
        for version in ("1.0.0", "2.0.0"):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "--node",
                    str(node),
                    "--src",
                    str(src),
                    "--sha",
                    sha,
                    "--size",
                    str(size),
                    "--version",
                    version,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[version] = json.loads(proc.stdout.splitlines()[-1])
            os.sync()
        install = results["2.0.0"]
        with NodeStore.open(node) as store:
            switch_times = []
            for target in ("1.0.0", "2.0.0") * 5:
                t0 = time.perf_counter()
                store._switch(target, "bench")  # the `current` switch alone
                switch_times.append(time.perf_counter() - t0)
            rb_times = []
            for _ in range(5):
                t0 = time.perf_counter()
                store.rollback("1.0.0", restore_data=False)
                rb_times.append(time.perf_counter() - t0)
                store.rollback("2.0.0", restore_data=False)
            point = store.rollbacks.rollback_points()[-1]
            t0 = time.perf_counter()
            store.rollbacks.restore_state(point.backup)
            restore = time.perf_counter() - t0
            data_mb = point.size / 1e6
        summary = {
            "artifact_mib": args.size_mib,
            "install_s": round(install["install_s"], 3),
            "baseline_sha256sum_cp_s": round(baseline, 3),
            "install_ratio": round(install["install_s"] / baseline, 3),
            "peak_rss_mb": round(install["peak_rss_mb"], 1),
            "switch_ms": round(1000 * sorted(switch_times)[len(switch_times) // 2], 2),
            "rollback_no_data_ms": round(1000 * sorted(rb_times)[len(rb_times) // 2], 2),
            "data_restore_ms": round(1000 * restore, 2),
            "data_mb": round(data_mb, 1),
        }
        print(
            f"install {summary['install_s']} s vs sha256sum+cp {summary['baseline_sha256sum_cp_s']} s"
            f" -> ratio {summary['install_ratio']} (target <= 1.5)"
        )
        print(f"peak RSS {summary['peak_rss_mb']} MB (target < 100)")
        print(
            f"switch {summary['switch_ms']} ms, rollback w/o data {summary['rollback_no_data_ms']} ms"
            f" (target < 50 each); data restore {summary['data_restore_ms']} ms for {summary['data_mb']} MB"
        )
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
