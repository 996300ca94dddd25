"""Delta benchmark on real adjacent releases: our selection against each tool alone.

Pairs (built on first use under the bench cache, never in the repository: ``--cache DIR``, else
``$BLACKHOLE_SYNC_BENCH_CACHE``, else ``~/.cache/blackhole-sync-bench``; wheels fetched with
``pip download --no-deps``, cp311 manylinux x86_64):

* ``orjson``, ``pydcore``, ``crypto``, ``numpy`` -- one native library of each wheel at two
  adjacent releases (the 4 small pairs, ``--quick``);
* ``scipy10``, ``scipy50``, ``scipy100`` -- the first 10 / 50 / 100 MiB of a deterministic tar
  (sorted names, mtime 0, uid/gid 0, modes 0644/0755) of scipy 1.14.0 and 1.14.1 unpacked;
* extras: ``--big300`` (a deterministic tar of scipy, numpy, pandas and polars at adjacent
  releases, ~340 MB each: the 2 GiB memory budget) and ``--random64`` (two unrelated 64 MiB
  random files: recognised early, no delta).

Per pair and codec: patch bytes, create CPU seconds (``process_time`` around the diff only;
the inputs are loaded first), create peak RSS of the process (inputs included), apply wall
seconds and apply peak RSS, and whether the output is new's bytes. Tools alone:

* ``hdiffpatch-alone`` -- the ``hdiffpatch`` wheel with its best compression (LZMA level 9,
  window 2**26), applied with the wheel's own ``apply``;
* ``zstd-patch-19`` -- ``zstd --patch-from --long -19`` through libzstd in the ``zstandard``
  wheel (old as a referenced prefix, long-distance matching);
* ``bsdiff4-lzma`` -- the previous default codec (``--no-bsdiff`` skips it: it costs minutes
  and 1.8 GB at 100 MiB).

Ours: ``selection`` -- :func:`blackhole_sync.codecs.select_patch` with the release builder's
budget (2 GiB, 2 x HDiffPatch's CPU); its apply is the node's: ``apply_patch`` in the bounded
worker (peak RSS of the worker). Every create and apply runs in a fresh interpreter (peak RSS
from ``os.wait4``). CPU of ``hdiffpatch-alone`` and of the selection are medians of
``--repeat`` runs (the machine's CPU timings vary by +-25 %).

Targets (the performance issue): patch bytes at most 1.0 x HDiffPatch alone and at most
1.10 x the smallest tool on every pair; create CPU at most 2.0 x HDiffPatch alone.
The last line printed is one JSON object with the figures and the targets.

    python bench/bench_delta.py [--quick] [--big300] [--random64] [--cache DIR] [--only NAME...]
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
HERE = Path(__file__).resolve()

# name: (distribution, old version, new version, member glob)
MEMBER_PAIRS: dict[str, tuple[str, str, str, str]] = {
    "orjson": ("orjson", "3.10.11", "3.10.12", "orjson/orjson.cpython-311-*.so"),
    "pydcore": (
        "pydantic-core", "2.27.1", "2.27.2", "pydantic_core/_pydantic_core.cpython-311-*.so"
    ),
    "crypto": ("cryptography", "43.0.0", "43.0.1", "cryptography/hazmat/bindings/_rust.abi3.so"),
    "numpy": ("numpy", "2.1.2", "2.1.3", "numpy/_core/_multiarray_umath.cpython-311-*.so"),
}  # fmt: skip
SCIPY = (("scipy", "1.14.0", "1.14.1"),)
# name: (distributions, truncate to)
TAR_PAIRS: dict[str, tuple[tuple[tuple[str, str, str], ...], int | None]] = {
    "scipy10": (SCIPY, 10 * MiB),
    "scipy50": (SCIPY, 50 * MiB),
    "scipy100": (SCIPY, 100 * MiB),
    "big300": (
        (
            ("scipy", "1.14.0", "1.14.1"),
            ("numpy", "2.1.2", "2.1.3"),
            ("pandas", "2.2.2", "2.2.3"),
            ("polars", "1.9.0", "1.10.0"),
        ),
        None,
    ),
}
QUICK = ("orjson", "pydcore", "crypto", "numpy")
TARGETS = (*QUICK, "scipy10", "scipy50", "scipy100")
TOOLS = ("hdiffpatch-alone", "zstd-patch-19", "bsdiff4-lzma")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

MAX_RATIO_TO_HDIFFPATCH = 1.0
MAX_RATIO_TO_BEST_ALONE = 1.10
MAX_CPU_RATIO_TO_HDIFFPATCH = 2.0


# -- the pairs ----------------------------------------------------------------------------------


def cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("BLACKHOLE_SYNC_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "blackhole-sync-bench"


def wheel(cache: Path, dist: str, version: str) -> Path:
    wheels = cache / "wheels"
    norm = dist.replace("-", "_").lower()
    for path in sorted(wheels.glob("*.whl")) if wheels.is_dir() else ():
        parts = path.name.split("-")
        if parts[0].lower() == norm and parts[1] == version:
            return path
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
        "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311", "--abi", "abi3", "--abi", "none",
    ]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, "-d", str(wheels), f"{dist}=={version}"], check=True)
    for path in sorted(wheels.glob("*.whl")):
        parts = path.name.split("-")
        if parts[0].lower() == norm and parts[1] == version:
            return path
    raise SystemExit(f"pip did not fetch {dist}=={version}")


def _entries(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return sorted((i for i in zf.infolist() if not i.is_dir()), key=lambda i: i.filename)


def member(cache: Path, dist: str, version: str, glob: str) -> bytes:
    with zipfile.ZipFile(wheel(cache, dist, version)) as zf:
        hits = [i for i in _entries(zf) if fnmatch.fnmatch(i.filename, glob)]
        if len(hits) != 1:
            raise SystemExit(f"{dist} {version}: {len(hits)} members match {glob}")
        return zf.read(hits[0])


def deterministic_tar(cache: Path, dists: tuple[tuple[str, str, str], ...], which: int) -> bytes:
    """A tar of the unpacked wheels: sorted names, mtime 0, uid/gid 0, normalised modes."""
    items: list[tuple[str, bytes, int]] = []
    for dist, *versions in dists:
        with zipfile.ZipFile(wheel(cache, dist, versions[which])) as zf:
            for info in _entries(zf):
                exe = info.filename.endswith(".so") or (info.external_attr >> 16) & 0o111
                items.append(
                    (f"{dist}/{info.filename}", zf.read(info), 0o755 if exe else 0o644)
                )
    items.sort(key=lambda item: item[0])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, mode in items:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pair_paths(cache: Path, name: str) -> tuple[Path, Path]:
    """The old and new files of pair ``name`` (built on first use)."""
    folder = cache / "pairs"
    old_p, new_p = folder / f"{name}.old", folder / f"{name}.new"
    if old_p.exists() and new_p.exists():
        return old_p, new_p
    folder.mkdir(parents=True, exist_ok=True)
    if name == "random64":
        old, new = random.Random(1).randbytes(64 * MiB), random.Random(2).randbytes(64 * MiB)
    elif name in MEMBER_PAIRS:
        dist, v_old, v_new, glob = MEMBER_PAIRS[name]
        old, new = member(cache, dist, v_old, glob), member(cache, dist, v_new, glob)
    else:
        dists, cut = TAR_PAIRS[name]
        old, new = deterministic_tar(cache, dists, 0), deterministic_tar(cache, dists, 1)
        if cut is not None:
            old, new = old[:cut], new[:cut]
    for path, data in ((old_p, old), (new_p, new)):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.rename(path)
    return old_p, new_p


# -- the measuring children ---------------------------------------------------------------------


def _tool(name: str) -> Any:
    if name == "hdiffpatch-alone":
        import hdiffpatch

        class Wheel:
            def diff(self, old: bytes, new: bytes) -> bytes:
                return hdiffpatch.diff(old, new, hdiffpatch.LzmaConfig(level=9, window=26), validate=False)

            def apply(self, old: bytes, patch: bytes) -> bytes:
                return hdiffpatch.apply(old, patch)

        return Wheel()
    from blackhole_sync.codecs.delta import Bsdiff4LzmaCodec, ZstdPatchCodec

    return ZstdPatchCodec(level=19) if name == "zstd-patch-19" else Bsdiff4LzmaCodec()


def child_create(old_p: str, new_p: str, name: str, out: str) -> dict[str, Any]:
    old, new = Path(old_p).read_bytes(), Path(new_p).read_bytes()
    if name == "selection":
        import hdiffpatch  # noqa: F401  (loaded before timing, as for the tool alone)
        from zstandard import _cffi  # type: ignore[attr-defined]  # noqa: F401

        from blackhole_sync.codecs.delta import codec_available, codecs, select_patch

        for codec in codecs.values():  # the one-time self-tests are not the diff's CPU
            codec_available(codec)
        started = time.process_time()
        sel = select_patch(old, new)
        cpu = time.process_time() - started
        if sel.patch is not None:
            Path(out).write_bytes(sel.patch)
        return {
            "codec": sel.codec,
            "bytes": None if sel.patch is None else len(sel.patch),
            "cpu_s": cpu,
            "reason": sel.reason,
            "sizes": dict(sel.sizes),
            "step_cpu_s": {k: round(v, 3) for k, v in sel.cpu_s.items()},
            "skipped": dict(sel.skipped),
        }
    tool = _tool(name)
    started = time.process_time()
    patch = tool.diff(old, new)
    cpu = time.process_time() - started
    Path(out).write_bytes(patch)
    return {"bytes": len(patch), "cpu_s": cpu}


def child_apply(old_p: str, new_p: str, name: str, patch_p: str) -> dict[str, Any]:
    old, patch = Path(old_p).read_bytes(), Path(patch_p).read_bytes()
    new_len = os.stat(new_p).st_size
    started = time.perf_counter()
    if name == "hdiffpatch-alone":
        out = _tool(name).apply(old, patch)
    else:
        out = _tool(name).apply(old, patch, max_output=new_len)
    seconds = time.perf_counter() - started
    return {"apply_s": seconds, "ok": out == Path(new_p).read_bytes()}


def node_apply(old_p: Path, new_p: Path, patch_p: Path, codec: str) -> dict[str, Any]:
    """The node's apply: ``apply_patch`` in its bounded worker; the worker's peak RSS."""
    code = (
        "import hashlib, json, resource, sys, time\n"
        "from blackhole_sync.codecs.delta import apply_patch\n"
        "old, new, patch, out, codec = sys.argv[1:6]\n"
        "h = lambda p: hashlib.sha256(open(p, 'rb').read()).hexdigest()\n"
        "n, sn, so, sp = len(open(new, 'rb').read()), h(new), h(old), h(patch)\n"
        "t = time.perf_counter()\n"
        "apply_patch(old, patch, out, source_sha256=so, patch_sha256=sp,\n"
        "    patch_length=len(open(patch, 'rb').read()), output_sha256=sn, output_length=n,\n"
        "    codec=codec)\n"
        "s = time.perf_counter() - t\n"
        "print(json.dumps({'apply_s': s, 'ok': True,\n"
        "    'apply_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(old_p), str(new_p), str(patch_p), str(Path(tmp, "out")), codec],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if proc.returncode:
        return {"ok": False, "error": proc.stderr.strip().splitlines()[-1:]}
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def run_child(*args: str) -> dict[str, Any]:
    """One fresh interpreter; its result plus its own peak RSS (MiB)."""
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    result = dict(json.loads(proc.stdout.splitlines()[-1]))
    result["rss_mb"] = result.pop("_rss_mb", None)
    return result


def child_main(argv: list[str]) -> None:
    import resource

    kind, *rest = argv
    result = child_create(*rest) if kind == "create" else child_apply(*rest)
    result["_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# -- the run ------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def measure(cache: Path, name: str, tools: tuple[str, ...], repeat: int, work: Path) -> dict[str, Any]:
    old_p, new_p = pair_paths(cache, name)
    res: dict[str, Any] = {"old_bytes": old_p.stat().st_size, "new_bytes": new_p.stat().st_size}
    for tool in (*tools, "selection"):
        patch_p = work / f"{name}.{tool}.patch"
        runs = [run_child("create", str(old_p), str(new_p), tool, str(patch_p))]
        if tool in ("hdiffpatch-alone", "selection") and "cpu_s" in runs[0]:
            runs += [
                run_child("create", str(old_p), str(new_p), tool, str(patch_p))
                for _ in range(repeat - 1)
            ]
        r = dict(runs[0])
        if "cpu_s" in r:
            r["cpu_runs_s"] = [round(x["cpu_s"], 3) for x in runs if "cpu_s" in x]
            r["cpu_s"] = statistics.median(x["cpu_s"] for x in runs if "cpu_s" in x)
        if r.get("bytes"):
            if tool == "selection":
                r.update(node_apply(old_p, new_p, patch_p, r["codec"]))
            else:
                applied = run_child("apply", str(old_p), str(new_p), tool, str(patch_p))
                r.update({k: v for k, v in applied.items() if k != "rss_mb"})
                r["apply_rss_mb"] = applied.get("rss_mb")
        res[tool] = r
        label = tool if tool != "selection" else f"SELECTION->{r.get('codec')}"
        print(
            f"{name:9s} {label:24s} {fmt(r.get('bytes'), ',d'):>12s} {fmt(r.get('cpu_s'), '.2f'):>8s} "
            f"{fmt(r.get('rss_mb'), '.0f'):>7s} {fmt(r.get('apply_s'), '.3f'):>8s} "
            f"{fmt(r.get('apply_rss_mb'), '.0f'):>8s} {fmt(r.get('ok'))} "
            f"{r.get('reason', '') if tool == 'selection' else ''}{r.get('error', '')}",
            flush=True,
        )
    return res


def summarize(results: dict[str, dict[str, Any]], tools: tuple[str, ...]) -> dict[str, Any]:
    per_pair: dict[str, Any] = {}
    r_hdp: list[float] = []
    r_best: list[float] = []
    r_cpu: list[float] = []
    for name, res in results.items():
        sel = res.get("selection", {})
        alone = {t: res[t] for t in tools if res.get(t, {}).get("bytes")}
        if name == "random64" or name == "big300":
            per_pair[name] = {
                k: sel.get(k)
                for k in ("codec", "bytes", "cpu_s", "rss_mb", "apply_s", "apply_rss_mb", "ok", "reason")
            }
            continue
        if not sel.get("bytes") or "hdiffpatch-alone" not in alone:
            per_pair[name] = {"error": "incomplete"}
            continue
        hdp = alone["hdiffpatch-alone"]
        best_tool = min(alone, key=lambda t: alone[t]["bytes"])
        winner = min([*alone, "selection"], key=lambda t: res[t]["bytes"])
        row = {
            "codec": sel["codec"],
            "bytes": sel["bytes"],
            "best_tool": best_tool,
            "winner": winner,
            "ratio_to_hdiffpatch": round(sel["bytes"] / hdp["bytes"], 4),
            "ratio_to_best_alone": round(sel["bytes"] / alone[best_tool]["bytes"], 4),
            "create_cpu_ratio_to_hdiffpatch": round(sel["cpu_s"] / hdp["cpu_s"], 3),
            "create_rss_mb": round(sel.get("rss_mb") or 0),
            "apply_s": round(sel.get("apply_s") or 0, 3),
            "apply_rss_mb": round(sel.get("apply_rss_mb") or 0),
            "apply_ok": sel.get("ok"),
        }
        per_pair[name] = row
        r_hdp.append(row["ratio_to_hdiffpatch"])
        r_best.append(row["ratio_to_best_alone"])
        r_cpu.append(row["create_cpu_ratio_to_hdiffpatch"])
    out: dict[str, Any] = {
        "bench": "bench_delta",
        "pairs": per_pair,
        "max_ratio_to_hdiffpatch": max(r_hdp) if r_hdp else None,
        "max_ratio_to_best_alone": max(r_best) if r_best else None,
        "max_create_cpu_ratio_to_hdiffpatch": max(r_cpu) if r_cpu else None,
        "targets": {
            "max_ratio_to_hdiffpatch": MAX_RATIO_TO_HDIFFPATCH,
            "max_ratio_to_best_alone": MAX_RATIO_TO_BEST_ALONE,
            "max_create_cpu_ratio_to_hdiffpatch": MAX_CPU_RATIO_TO_HDIFFPATCH,
        },
    }
    checks = [
        bool(r_hdp) and max(r_hdp) <= MAX_RATIO_TO_HDIFFPATCH,
        bool(r_best) and max(r_best) <= MAX_RATIO_TO_BEST_ALONE,
        bool(r_cpu) and max(r_cpu) <= MAX_CPU_RATIO_TO_HDIFFPATCH,
        all(p.get("apply_ok") for n, p in per_pair.items() if n not in ("random64", "big300")),
    ]
    if "big300" in per_pair:
        big = per_pair["big300"]
        checks.append(bool(big.get("bytes")) and (big.get("rss_mb") or 1e9) <= 2048 and bool(big.get("ok")))
    if "random64" in per_pair:
        rnd = per_pair["random64"]
        checks.append(rnd.get("codec") is None and (rnd.get("cpu_s") or 1e9) < 2.0)
    out["targets_met"] = all(checks)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the 4 small pairs only")
    ap.add_argument("--big300", action="store_true", help="also the ~340 MB pair (selection only)")
    ap.add_argument("--random64", action="store_true", help="also two unrelated 64 MiB files")
    ap.add_argument("--only", nargs="+", help="these pairs only")
    ap.add_argument("--no-bsdiff", action="store_true", help="skip the bsdiff4-lzma tool")
    ap.add_argument("--repeat", type=int, default=3, help="CPU medians over this many runs")
    ap.add_argument("--cache", help="the bench cache directory (wheels and pairs)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return
    cache = cache_dir(args.cache)
    names = list(args.only or (QUICK if args.quick else TARGETS))
    extras = [n for n, on in (("random64", args.random64), ("big300", args.big300)) if on]
    tools = tuple(t for t in TOOLS if not (args.no_bsdiff and t == "bsdiff4-lzma"))
    print(f"pairs cached in {cache}")
    print(
        f"{'pair':9s} {'codec':24s} {'patch bytes':>12s} {'cpu s':>8s} {'rss MB':>7s} "
        f"{'apply s':>8s} {'apply MB':>8s} ok"
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_delta-") as tmp:
        for name in names:
            results[name] = measure(cache, name, tools, args.repeat, Path(tmp))
        for name in extras:
            results[name] = measure(cache, name, (), 1, Path(tmp))
    summary = summarize(results, tools)
    print("winner per pair: " + ", ".join(
        f"{n}={p.get('winner', p.get('codec'))}" for n, p in summary["pairs"].items()
    ))  # fmt: skip
    print(
        f"max ratio to HDiffPatch alone {summary['max_ratio_to_hdiffpatch']} (target <= 1.0); "
        f"to the best tool {summary['max_ratio_to_best_alone']} (target <= 1.10); "
        f"create CPU {summary['max_create_cpu_ratio_to_hdiffpatch']} x HDiffPatch (target <= 2.0)"
    )
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    main()
