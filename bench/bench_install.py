"""Install benchmark through the command line: signed releases of 10, 50 and 200 MiB.

Per size (``--quick``: 10 MiB only; ``--sizes`` to choose), every step is a real
``blackhole-sync`` command in a fresh process: ``key generate``, ``repo init``, ``release
build`` / ``sign`` / ``publish`` of 1.0.0 and 2.0.0 (the artifact with its last MiB changed;
``--delta-from none``: these are full installs), ``node init`` with the repository as its
source, then, timed:

* ``node update --version 1.0.0`` and ``node update`` (to 2.0.0): wall seconds and the
  process's peak RSS (``os.wait4``), against ``sha256sum FILE && cp FILE DEST`` on the same
  file (the baseline neither verifies against metadata nor fsyncs);
* ``node rollback`` (to 1.0.0, restoring the data saved for it) and ``node status --json``,
  the command line's own start-up cost, so that the rollback's work is the difference.

Then the command line's fixed start-up cost (issue 10), on the first size only (10 MiB with
``--quick``), median of 5 runs interleaved with the baseline ``python -c "import sqlite3,
nacl.signing"`` in the same interpreter: ``node status``, ``node rollback`` (from 2.0.0, the
node copied back before each run) against the baseline plus ``sha256sum`` over the target tree
(which it re-hashes), and a no-op ``node update`` of a second node whose source is the
repository's ``file://`` URL. These runs use compiled bytecode (a cache directory of their own,
warmed first), as an installed package does, even when ``PYTHONDONTWRITEBYTECODE`` is set.

The artifact is random bytes by default (it travels uncompressed: the compression probe
declines it), or ``--content binary``: real native libraries from this interpreter's
site-packages, which compress ~2-3 x (the install then decompresses).

Targets: an install's own work (command time minus the start-up cost) at most 1.5 x the
baseline, peak RSS of the install under 100 MB, and a rollback's own work under 50 ms; start-up:
``node status`` at most 2 x the import baseline, ``node rollback`` at most 2 x it plus the
``sha256sum`` time (``rollback_ratio``: (rollback - sha256sum) / baseline), a no-op update at
most 3 x it. The last line is one JSON object with the figures and the targets.

    python bench/bench_install.py [--quick] [--sizes 10 50 200] [--content random|binary] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
CLI = [sys.executable, "-m", "blackhole_sync"]
MAX_INSTALL_RATIO = 1.5
MAX_RSS_MB = 100
MAX_ROLLBACK_WORK_S = 0.05
MAX_STATUS_RATIO = 2.0
MAX_ROLLBACK_RATIO = 2.0
MAX_NOOP_UPDATE_RATIO = 3.0
STARTUP_RUNS = 5
BASELINE = [sys.executable, "-c", "import sqlite3, nacl.signing"]


def run(
    *argv: str, check: bool = True, env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """Run a command: (wall seconds, peak RSS in MB, stdout)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode()
        if check and proc.returncode:
            raise SystemExit(f"{' '.join(argv[2:])} failed: {err.read().decode()[-600:]}")
    return seconds, usage.ru_maxrss / 1024, text


def cli(*argv: str) -> tuple[float, float, str]:
    return run(*CLI, *argv)


def make_artifact(path: Path, size: int, content: str, seed: int) -> None:
    with open(path, "wb") as fh:
        if content == "random":
            rnd = random.Random(seed)
            for _ in range(size // MiB):
                fh.write(rnd.randbytes(MiB))
            return
        libs = sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.so"))
        written = 0
        while written < size:
            for lib in libs:
                data = lib.read_bytes()[: size - written]
                fh.write(data)
                written += len(data)
                if written >= size:
                    break


def startup(work: Path, repo: Path, node: Path) -> dict[str, Any]:
    """The fixed start-up figures (see the module's docstring); ``node`` is on 2.0.0 with
    1.0.0 installed, ``repo`` serves both."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(work / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    noop = work / "node-file-url"
    cli("node", "init", str(noop), "--trust", str(repo / "root.json"), "--source", repo.as_uri())
    cli("node", "update", str(noop))
    snapshot = work / "node-2.0.0"
    shutil.copytree(node, snapshot, symlinks=True)
    target = node / "versions" / "1.0.0"

    def restore() -> None:
        shutil.rmtree(node)
        shutil.copytree(snapshot, node, symlinks=True)

    commands: dict[str, list[str]] = {
        "baseline": BASELINE,
        "status": [*CLI, "node", "status", str(node)],
        "status_json": [*CLI, "node", "status", str(node), "--json"],
        "noop_update": [*CLI, "node", "update", str(noop)],
        "sha256sum": ["sh", "-c", f"find -L '{target}' -type f -exec sha256sum {{}} + >/dev/null"],
        "rollback": [*CLI, "node", "rollback", str(node)],
    }
    for argv in commands.values():  # warm: bytecode written, page cache filled
        run(*argv, env=env)
        restore()
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(STARTUP_RUNS):
        for name, argv in commands.items():
            times[name].append(run(*argv, env=env)[0])
            if name == "rollback":
                restore()
    med = {name: statistics.median(values) for name, values in times.items()}
    base = med["baseline"]
    return {
        "baseline_s": round(base, 4),
        "status_s": round(med["status"], 4),
        "status_json_s": round(med["status_json"], 4),
        "rollback_s": round(med["rollback"], 4),
        "sha256sum_target_s": round(med["sha256sum"], 4),
        "noop_update_s": round(med["noop_update"], 4),
        "status_ratio_to_baseline": round(med["status"] / base, 2),
        "status_json_ratio_to_baseline": round(med["status_json"] / base, 2),
        "rollback_ratio": round((med["rollback"] - med["sha256sum"]) / base, 2),
        "noop_update_ratio_to_baseline": round(med["noop_update"] / base, 2),
    }


def one_size(mib: int, content: str, base: Path, *, with_startup: bool) -> dict[str, Any]:
    work = base / f"{mib}mib"
    work.mkdir()
    key = work / "key"
    cli("key", "generate", str(key))
    repo, node, art = work / "repo", work / "node", work / "art" / "blackhole-node"
    cli(
        "repo", "init", str(repo), "--root-key", f"{key}.pub", "--root-threshold", "1",
        "--release-key", f"{key}.pub", "--release-threshold", "1", "--index-key", f"{key}.pub",
        "--sign-with", str(key),
    )  # fmt: skip
    art.parent.mkdir()
    make_artifact(art, mib * MiB, content, 1)
    build = {}
    for version in ("1.0.0", "2.0.0"):
        if version == "2.0.0":  # the last MiB changes
            with open(art, "r+b") as fh:
                fh.seek(-MiB, os.SEEK_END)
                fh.write(random.Random(2).randbytes(MiB))
        build[version], _, _ = cli(
            "release", "build", str(repo), "--version", version, "--artifact", str(art),
            "--delta-from", "none",
        )  # fmt: skip
        cli("release", "sign", str(repo), "--version", version, "--key", str(key))
        cli("release", "publish", str(repo), "--version", version, "--index-key", str(key))
        if version == "1.0.0":
            first = work / "first"
            first.write_bytes(art.read_bytes())
    cli("node", "init", str(node), "--trust", str(repo / "root.json"), "--source", str(repo))
    os.sync()
    t1, rss1, out1 = cli("node", "update", str(node), "--version", "1.0.0", "--json")
    os.sync()
    t2, rss2, out2 = cli("node", "update", str(node), "--json")
    os.sync()
    # the baseline on the 2.0.0 file, page cache warm as for the install
    run("sha256sum", str(art))
    started = time.perf_counter()
    run("sha256sum", str(art))
    run("cp", str(art), str(work / "copy"))
    baseline = time.perf_counter() - started
    status = sorted(cli("node", "status", str(node), "--json")[0] for _ in range(3))[1]
    start = startup(work, repo, node) if with_startup else None
    rollback, _, _ = cli("node", "rollback", str(node))
    after = json.loads(cli("node", "status", str(node), "--json")[2])
    assert after["current_version"] == "1.0.0", after
    assert (node / "current" / "blackhole-node").read_bytes() == first.read_bytes()
    updates = [json.loads(out1), json.loads(out2)]
    row = {
        "artifact_mib": mib,
        "build_s": round(build["2.0.0"], 2),
        "install_s": round(t2, 3),
        "first_install_s": round(t1, 3),
        "bytes_fetched": updates[1]["bytes_fetched"],
        "method": updates[1]["method"],
        "baseline_sha256sum_cp_s": round(baseline, 3),
        "cli_startup_s": round(status, 3),
        "install_ratio": round(t2 / baseline, 3),
        "install_work_ratio": round(max(t2 - status, 0) / baseline, 3),
        "peak_rss_mb": round(max(rss1, rss2), 1),
        "rollback_command_s": round(rollback, 3),
        "rollback_work_s": round(max(rollback - status, 0), 3),
    }
    print(
        f"{mib:4d} MiB  install {row['install_s']:.3f} s (start-up {row['cli_startup_s']:.3f} s) vs "
        f"sha256sum+cp {row['baseline_sha256sum_cp_s']:.3f} s: work x{row['install_work_ratio']} "
        f"(all x{row['install_ratio']}); peak RSS {row['peak_rss_mb']} MB; node rollback "
        f"{row['rollback_command_s']:.3f} s (work {row['rollback_work_s']:.3f} s)",
        flush=True,
    )
    if start is not None:
        row["startup"] = start
        print(
            f"start-up (median of {STARTUP_RUNS}, interleaved): baseline {start['baseline_s']:.3f} s; "
            f"node status {start['status_s']:.3f} s (x{start['status_ratio_to_baseline']}); "
            f"node rollback {start['rollback_s']:.3f} s, sha256sum {start['sha256sum_target_s']:.3f} s "
            f"(x{start['rollback_ratio']} beyond sha256sum); no-op update "
            f"{start['noop_update_s']:.3f} s (x{start['noop_update_ratio_to_baseline']})",
            flush=True,
        )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 MiB only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200], help="MiB")
    ap.add_argument("--content", choices=("random", "binary"), default="random")
    ap.add_argument("--dir", default=None, help="where to work (default: a temporary directory)")
    args = ap.parse_args()
    sizes = [10] if args.quick else args.sizes
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_install-") as tmp:
        rows = [
            one_size(mib, args.content, Path(tmp), with_startup=i == 0)
            for i, mib in enumerate(sorted(sizes))
        ]
    start = rows[0]["startup"]
    summary: dict[str, Any] = {
        "bench": "bench_install",
        "content": args.content,
        "sizes": rows,
        "max_install_work_ratio": max(r["install_work_ratio"] for r in rows),
        "max_peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "max_rollback_work_s": max(r["rollback_work_s"] for r in rows),
        "startup_artifact_mib": rows[0]["artifact_mib"],
        "baseline_s": start["baseline_s"],
        "status_ratio_to_baseline": start["status_ratio_to_baseline"],
        "rollback_ratio": start["rollback_ratio"],
        "noop_update_ratio_to_baseline": start["noop_update_ratio_to_baseline"],
        "targets": {
            "max_install_work_ratio": MAX_INSTALL_RATIO,
            "max_peak_rss_mb": MAX_RSS_MB,
            "max_rollback_work_s": MAX_ROLLBACK_WORK_S,
            "status_ratio_to_baseline": MAX_STATUS_RATIO,
            "rollback_ratio": MAX_ROLLBACK_RATIO,
            "noop_update_ratio_to_baseline": MAX_NOOP_UPDATE_RATIO,
        },
    }
    summary["targets_met"] = (
        summary["max_install_work_ratio"] <= MAX_INSTALL_RATIO
        and summary["max_peak_rss_mb"] < MAX_RSS_MB
        and summary["max_rollback_work_s"] < MAX_ROLLBACK_WORK_S
    )
    summary["startup_targets_met"] = (
        start["status_ratio_to_baseline"] <= MAX_STATUS_RATIO
        and start["rollback_ratio"] <= MAX_ROLLBACK_RATIO
        and start["noop_update_ratio_to_baseline"] <= MAX_NOOP_UPDATE_RATIO
    )
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
