"""Run the benchmarks and report their headline figures against their targets.

``nox -s bench`` runs every ``bench/bench_*.py`` in full; ``nox -s bench -- --quick`` in quick
mode; ``--only NAME`` (repeatable, ``verify`` or ``bench_verify``) picks some. Each benchmark
prints its own figures and, last, one JSON object; this runner reads that line, prints one
markdown table of headline figures against their targets, and writes it (with the machine it
ran on) to ``docs/benchmarks.md`` unless ``--no-write``.

A figure whose benchmark did not run, failed, or did not print it shows as "missing", never
as a pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


class Target(NamedTuple):
    key: str  # the JSON key of the figure
    label: str  # what it measures
    op: str  # "<=" or ">=" or "==key" (equal to another key's value)
    limit: float | str


#: The headline figures of each benchmark and their targets (from the issues).
TARGETS: dict[str, list[Target]] = {
    "bench_verify": [
        Target("ratio", "verify documents / bare pynacl", "<=", 2.0),
    ],
    "bench_check": [
        Target("ratio_1000_vs_1", "check with 1,000 releases / with 1", "<=", 1.5),
        Target(
            "verifications_1000", "signature checks, 1,000 vs 1 releases", "==", "verifications_1"
        ),
    ],
    "bench_delta": [
        Target("max_ratio_to_hdiffpatch", "patch bytes / HDiffPatch alone (worst pair)", "<=", 1.0),
        Target("max_ratio_to_best_alone", "patch bytes / best single tool (worst pair)", "<=", 1.1),
        Target(
            "max_create_cpu_ratio_to_hdiffpatch", "create CPU / HDiffPatch (worst pair)", "<=", 2.0
        ),
    ],
    "bench_http": [
        Target("ratio_vs_curl_sha256", "HTTP client / curl|tee|sha256sum (median)", ">=", 0.8),
    ],
    "bench_install": [
        Target("max_install_work_ratio", "install work / sha256sum+cp (largest ratio)", "<=", 1.5),
        Target("max_peak_rss_mb", "install peak RSS (MB)", "<=", 100),
        Target("max_rollback_work_s", "rollback work (s)", "<=", 0.05),
        Target("status_ratio_to_baseline", "node status / bare python (sqlite3+nacl)", "<=", 2.0),
        Target("rollback_ratio", "node rollback minus sha256sum / bare python", "<=", 2.0),
        Target("noop_update_ratio_to_baseline", "no-op node update / bare python", "<=", 3.0),
    ],
    "bench_update": [
        Target("max_time_ratio", "delta update time / full update time (worst pair)", "<=", 1.0),
        Target("max_bytes_ratio", "delta update bytes / full update bytes (worst pair)", "<=", 1.0),
    ],
    "bench_gossip": [
        Target("coverage_min", "gossip coverage (every run)", ">=", 1.0),
        Target("p99_s", "gossip latency p99 at 40 processes (s)", "<=", 1.0),
        Target("amplification", "wire bytes per node / payload bytes", "<=", 8.0),
    ],
    "bench_swarm": [
        Target("origin_copies", "origin bytes / artifact size (16 nodes)", "<=", 1.5),
        Target("time_ratio_to_http", "swarm time / 16 HTTP downloads", "<=", 0.5),
    ],
    "bench_ipfs": [
        Target("ratio_to_http", "IPFS throughput / HTTP plugin", ">=", 0.3),
    ],
    "bench_consensus": [
        Target("tally_ratio", "tally of 10,000 votes / bare pynacl", "<=", 1.5),
    ],
}


def _verdict(target: Target, figures: dict[str, Any]) -> tuple[str, str]:
    value = figures.get(target.key)
    if value is None:
        return "missing", "missing"
    if target.op == "==":
        other = figures.get(str(target.limit))
        return str(value), "yes" if other is not None and value == other else "NO"
    number = float(value)
    limit = float(target.limit)
    ok = number <= limit if target.op == "<=" else number >= limit
    return f"{number:.3g}", "yes" if ok else "NO"


def takes_quick(path: Path) -> bool:
    """Whether the benchmark has a quick mode (the others always run as they are)."""
    return '"--quick"' in path.read_text(encoding="utf-8")


def run_one(path: Path, quick: bool) -> tuple[dict[str, Any] | None, float, int]:
    quick = quick and takes_quick(path)
    argv = [sys.executable, str(path)] + (["--quick"] if quick else [])
    print(f"\n=== {path.name} {'(quick)' if quick else ''}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False, cwd=ROOT)
    seconds = time.monotonic() - started
    print(proc.stdout, end="", flush=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    figures = None
    if lines:
        try:
            parsed = json.loads(lines[-1])
            figures = parsed if isinstance(parsed, dict) else None
        except ValueError:
            figures = None
    return figures, seconds, proc.returncode


def machine() -> str:
    cpus = os.cpu_count() or 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
        memory = f"{mem_kb / 1024**2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "unknown memory"
    return (
        f"{platform.machine()}, {cpus} CPUs, {memory}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode")
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only}
    paths = sorted(BENCH.glob("bench_*.py"))
    if wanted:
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")
        paths = [p for p in paths if p.stem in wanted]
    rows = []
    failed = False
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = time.monotonic()
    for path in paths:
        figures, seconds, code = run_one(path, args.quick)
        if code != 0 or figures is None:
            failed = True
        for target in TARGETS.get(path.stem, []):
            shown, ok = _verdict(target, figures or {})
            if ok != "yes":
                failed = failed or ok == "missing"
            limit = target.limit if target.op != "==" else f"= {target.limit}"
            op = target.op if target.op != "==" else ""
            cells = [path.stem, target.label, shown, f"{op} {limit}".strip(), ok]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if path.stem not in TARGETS:
            rows.append(f"| {path.stem} | (no headline target) | ran in {seconds:.0f} s | | |")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(
        [
            "| benchmark | figure | measured | target | met |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(f"\n{table}\n")
    if not args.no_write:
        report = ROOT / "docs" / "benchmarks.md"
        mode = "quick mode" if args.quick else "full runs"
        report.write_text(
            "# Benchmark report\n\n"
            f"The latest `nox -s bench` ({mode}), {stamp}, on {machine()}; "
            f"{(time.monotonic() - started) / 60:.0f} minutes"
            + (f", load average {load:.1f} at the start" if load is not None else "")
            + ".\n"
            "Each figure is what its benchmark's last JSON line reported; the benchmarks' own\n"
            "docstrings say how they measure (paired, interleaved, medians).\n\n"
            f"{table}\n"
        )
        print(f"wrote {report.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
