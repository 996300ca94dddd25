"""Benchmark of the IPFS plugin: one embedded node to another, against the HTTP plugin.

    python bench/bench_ipfs.py [--size 64MiB] [--rounds 3] [--quick]

Two embedded Kubo nodes, each in a process of its own (the plugin's test kit: the transport
inside the core's PeerNetwork, as ``node run`` holds it), on 127.0.0.1. Each round:

- **add**: node A publishes a fresh random blob (``publish``: sha256 check, the CIDv1 raw-leaves
  DAG written to its blockstore, pinned) -- timed in A's process, reported per MiB;
- **IPFS fetch**: node B, connected to A, fetches it by CID into the core's ``VerifyingSink``
  (a file; sha256 while writing, checked at the end) -- timed in B's process;
- **HTTP fetch**: in this process, the HTTP plugin's transport fetches a blob of the same size
  from the HTTP plugin's origin server (a subprocess) into the same kind of sink.

The two fetches of a round run back to back (their order alternating), so a noisy neighbour
hurts both alike; the headline is the median over the rounds of the per-round ratio
``IPFS throughput / HTTP throughput`` (target >= 0.3). Interpreter start-up is not counted on
either side. ``--quick``: 16 MiB. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

MIB = 1024 * 1024
TARGETS = {"ratio_to_http": 0.3}


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    if text.endswith("g"):
        return int(float(text[:-1]) * 1024 * MIB)
    if text.endswith("m"):
        return int(float(text[:-1]) * MIB)
    return int(float(text) * MIB)


def make_blob(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


async def http_fetch(url: str, sha: str, size: int, out: Path) -> float:
    """Seconds the HTTP plugin takes to fetch ``url`` into a verifying file sink."""
    from blackhole_sync_http import HttpTransport

    from blackhole_sync import Locator, VerifyingSink

    async with HttpTransport() as transport:
        started = time.perf_counter()
        with open(out, "w+b") as f:
            sink = VerifyingSink(f, max_length=size, expected_length=size, expected_sha256=sha)
            await transport.fetch(Locator.url(url), sink, max_length=size)
            sink.verify()
        return time.perf_counter() - started


def options(**ipfs: Any) -> str:
    return json.dumps({"network_id": "bench", "loopback_only": True, "node_config": {"ipfs": ipfs}})


async def ipfs_fetch(b: Any, cid: str, sha: str, size: int, out: Path) -> float:
    """Seconds node B takes to fetch ``cid`` into a verifying file sink (timed in B)."""
    got = await b.call(
        "fetch", kind="cid", value=cid, max_length=size, expected_length=size,
        expected_sha256=sha, out=str(out),
    )  # fmt: skip
    if not got["verified"]:
        raise SystemExit(f"IPFS fetch failed: {got['failure']}")
    return float(got["elapsed"])


async def run(size: int, rounds: int, work: Path, url: str, http_sha: str) -> dict[str, Any]:
    from blackhole_sync_ipfs.testing import TRANSPORT_SCRIPT, NodeProcess

    async with NodeProcess(
        work / "a", script=TRANSPORT_SCRIPT, extra_args=("--options", options())
    ) as a:
        seed = a.ready["transports"]["ipfs"]["addresses"][0]
        b_options = options(bootstrap=[seed], fetch_timeout=60)
        async with NodeProcess(
            work / "b", script=TRANSPORT_SCRIPT, extra_args=("--options", b_options)
        ) as b:
            print(
                f"blob: {size / MIB:.0f} MiB; {rounds} rounds; A {a.ready['pid']}, B {b.ready['pid']}"
            )
            await http_fetch(url, http_sha, size, work / "http-out")  # warm-up
            rows = []
            for i in range(rounds + 1):  # round 0 warms up both nodes
                blob = work / f"blob-{i}"
                sha = await anyio.to_thread.run_sync(make_blob, blob, size)
                added = await a.call("publish_timed", path=str(blob), sha256=sha)
                if i % 2:
                    ipfs_s = await ipfs_fetch(b, added["cid"], sha, size, work / "ipfs-out")
                    http_s = await http_fetch(url, http_sha, size, work / "http-out")
                else:
                    http_s = await http_fetch(url, http_sha, size, work / "http-out")
                    ipfs_s = await ipfs_fetch(b, added["cid"], sha, size, work / "ipfs-out")
                blob.unlink()
                if i == 0:
                    continue
                row = {
                    "ipfs_MBps": size / ipfs_s / 1e6,
                    "http_MBps": size / http_s / 1e6,
                    "ratio": http_s / ipfs_s,
                    "add_s_per_MiB": added["elapsed"] / (size / MIB),
                }
                rows.append(row)
                print(
                    f"round {i}: IPFS {row['ipfs_MBps']:6.1f} MB/s, HTTP {row['http_MBps']:6.1f} MB/s, "
                    f"ratio {row['ratio']:.3f}; add {row['add_s_per_MiB'] * 1000:.1f} ms/MiB"
                )
    return {
        "size_MiB": size / MIB,
        "rounds": rounds,
        "ipfs_MBps": round(statistics.median(r["ipfs_MBps"] for r in rows), 1),
        "http_MBps": round(statistics.median(r["http_MBps"] for r in rows), 1),
        "ratio_to_http": round(statistics.median(r["ratio"] for r in rows), 3),
        "ratio_to_http_min": round(min(r["ratio"] for r in rows), 3),
        "add_ms_per_MiB": round(statistics.median(r["add_s_per_MiB"] for r in rows) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=None, help="blob size (default 64MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="16 MiB")
    args = parser.parse_args()
    size = args.size or (16 * MIB if args.quick else 64 * MIB)
    with tempfile.TemporaryDirectory(prefix="bench-ipfs-") as tmp:
        work = Path(tmp)
        (work / "repo" / "blobs").mkdir(parents=True)
        http_blob = work / "repo" / "blobs" / "tmp"
        http_sha = make_blob(http_blob, size)
        http_blob.rename(work / "repo" / "blobs" / http_sha)
        server = subprocess.Popen(
            [sys.executable, "-m", "blackhole_sync_http", str(work / "repo"), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = f"{server.stdout.readline().strip()}/blobs/{http_sha}"
            result = anyio.run(run, size, args.rounds, work, url, http_sha)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"IPFS {result['ipfs_MBps']} MB/s, HTTP {result['http_MBps']} MB/s (medians); "
        f"ratio {result['ratio_to_http']} (min {result['ratio_to_http_min']}, "
        f"target >= {TARGETS['ratio_to_http']}); add {result['add_ms_per_MiB']} ms/MiB"
    )
    result["targets"] = TARGETS
    result["pass"] = result["ratio_to_http"] >= TARGETS["ratio_to_http"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
