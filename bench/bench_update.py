"""bench_update: a node updates 1.0.0 -> 1.1.0 by delta vs in full over a 10 MB/s link.

In one process: a repository with a 20 MB artifact (1.0.0) and the same artifact with a small
change (1.1.0, with a delta from 1.0.0), served by the HTTP plugin's origin server embedded in
this process; two nodes with 1.0.0 installed; each updates to 1.1.0 through
``UpdateManager(..., transport_options={"rate_limit": 10_000_000})`` -- one by delta, one
with ``deltas=False``. Prints wall time and bytes fetched of each and their ratios; the last
line is one JSON object with the headline figures.

Targets: the delta update fetches at most 0.05x the bytes of the full one and takes at most
0.25x its time.  Run: ``.venv/bin/python bench/bench_update.py [--size-mb 20] [--limit 10e6]``
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from blackhole_sync_http.server import serve_repository

from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.manager import UpdateManager, init_node
from blackhole_sync.release import Repository

MAX_BYTES_RATIO = 0.05
MAX_TIME_RATIO = 0.25


def make_repo(base: Path, size: int) -> tuple[Path, bytes, bytes]:
    root_key, release_key, index_key = (PrivateKey.generate() for _ in range(3))
    repo = Repository.init(
        base / "repo",
        root_keys=[root_key.public_key],
        root_threshold=1,
        release_keys=[release_key.public_key],
        release_threshold=1,
        index_key=index_key.public_key,
        sign_with=[root_key],
    )
    rng = random.Random(20)
    v1 = rng.randbytes(size)
    v2 = bytearray(v1)
    for offset in (size // 7, size // 2, size - 4096):  # a small change in three places
        v2[offset : offset + 64] = rng.randbytes(64)
    for version, data, delta in (("1.0.0", v1, None), ("1.1.0", bytes(v2), ["1.0.0"])):
        src = base / version / "blackhole-node"
        src.parent.mkdir()
        src.write_bytes(data)
        src.chmod(0o755)
        repo.build_release(version, [src], delta_from=delta)
        repo.sign_release(version, release_key)
        repo.publish_release(version, index_key)
    return repo.path, v1, bytes(v2)


def make_node(base: Path, name: str, repo: Path, url: str) -> Path:
    node = base / name
    init_node(node, root_bytes=(repo / "root.json").read_bytes(), sources=[url])
    return node


async def update(node: Path, version: str, **options: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    async with UpdateManager(node, **options) as manager:
        result = await manager.update(version)
    assert result is not None and result.version == version
    return time.perf_counter() - started, result


async def main(size: int, limit: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_update-") as tmp:
        base = Path(tmp)
        repo, _v1, v2 = make_repo(base, size)
        async with serve_repository(repo, "127.0.0.1", 0) as server:
            url = server.url
            nodes = {}
            for name in ("delta", "full"):
                nodes[name] = make_node(base, name, repo, url)
                await update(nodes[name], "1.0.0")  # unlimited: the starting point
            limited = {"transport_options": {"rate_limit": limit}}
            t_delta, r_delta = await update(nodes["delta"], "1.1.0", **limited)
            t_full, r_full = await update(nodes["full"], "1.1.0", deltas=False, **limited)
        for name in nodes:
            installed = (nodes[name] / "current" / "blackhole-node").read_bytes()
            assert installed == v2, f"{name}: wrong bytes installed"
        assert r_delta.method == "delta", r_delta
        assert r_full.method == "full", r_full
    bytes_ratio = r_delta.bytes_fetched / r_full.bytes_fetched
    time_ratio = t_delta / t_full
    print(f"artifact: {size} bytes; link limited to {limit} B/s (client bandwidth limit)")
    print(f"delta update: {t_delta:8.3f} s  {r_delta.bytes_fetched:>12} bytes fetched")
    print(f"full update:  {t_full:8.3f} s  {r_full.bytes_fetched:>12} bytes fetched")
    print(f"bytes ratio (delta/full): {bytes_ratio:.5f}  (target <= {MAX_BYTES_RATIO})")
    print(f"time ratio  (delta/full): {time_ratio:.4f}  (target <= {MAX_TIME_RATIO})")
    ok = bytes_ratio <= MAX_BYTES_RATIO and time_ratio <= MAX_TIME_RATIO
    # the limit really applied: a full fetch cannot beat the link
    limit_held = r_full.bytes_fetched / t_full <= limit * 1.15
    return {
        "bench": "bench_update",
        "artifact_bytes": size,
        "bandwidth_limit": limit,
        "delta_seconds": round(t_delta, 4),
        "delta_bytes": r_delta.bytes_fetched,
        "full_seconds": round(t_full, 4),
        "full_bytes": r_full.bytes_fetched,
        "bytes_ratio": round(bytes_ratio, 6),
        "time_ratio": round(time_ratio, 4),
        "limit_held": limit_held,
        "targets_met": ok,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20)
    parser.add_argument("--limit", type=float, default=10_000_000, help="bytes/s")
    args = parser.parse_args()
    summary = anyio.run(main, int(args.size_mb * 1_000_000), int(args.limit))
    print(json.dumps(summary, sort_keys=True))
    sys.exit(0 if summary["targets_met"] and summary["limit_held"] else 1)
