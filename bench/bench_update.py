"""bench_update: a node updates between real adjacent releases, by delta and in full.

Per pair (the real pairs of ``bench_delta.py``, cached in the same bench cache; default the 4
small ones and scipy10, ``--pairs`` to choose): a repository with the old file as release
1.0.0 and the new one as 1.1.0 (a delta from 1.0.0; artifacts travel zstd-compressed when that
saves bytes), served by the HTTP plugin's origin embedded in this process; two nodes on 1.0.0;
each updates to 1.1.0 through ``UpdateManager`` -- one by delta, one with ``deltas=False`` --
over a link limited to ``--limit`` bytes per second (the client's bandwidth limit; default
10 MB/s), and with ``--unlimited`` also over the unlimited loopback. The timed update is the
whole of it: check, fetch, stage (apply or decompress), install, health.

Prints per pair and link: wall seconds and bytes fetched of each, their ratios, the codec of
the patch, and the full download's bytes compressed vs the artifact's raw length. The last
line is one JSON object with the figures and the targets.

Targets: a delta update is not slower than the full install of the same artifact from the
same source (time ratio <= 1.0 on the limited link), and fetches fewer bytes.

    python bench/bench_update.py [--pairs orjson crypto ...] [--limit 10e6] [--unlimited]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_delta  # noqa: E402  (the pairs and the bench cache)
from blackhole_sync_http.server import serve_repository  # noqa: E402

from blackhole_sync.documents.signing import PrivateKey  # noqa: E402
from blackhole_sync.manager import UpdateManager, init_node  # noqa: E402
from blackhole_sync.release import Repository  # noqa: E402

MAX_TIME_RATIO = 1.0
DEFAULT_PAIRS = (*bench_delta.QUICK, "scipy10")


def make_repo(base: Path, old: Path, new: Path) -> tuple[Path, Any, Any]:
    key = PrivateKey.generate()
    repo = Repository.init(
        base / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key, sign_with=[key],
    )  # fmt: skip
    manifests = []
    for version, src, delta in (("1.0.0", old, None), ("1.1.0", new, ["1.0.0"])):
        art = base / version / "blackhole-node"
        art.parent.mkdir()
        art.write_bytes(src.read_bytes())
        art.chmod(0o755)
        manifests.append(repo.build_release(version, [art], delta_from=delta))
        repo.sign_release(version, key)
        repo.publish_release(version, key)
    return repo.path, manifests[1], manifests[1].artifacts[0]


async def update(node: Path, version: str, **options: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    async with UpdateManager(node, **options) as manager:
        result = await manager.update(version)
    assert result is not None and result.version == version
    return time.perf_counter() - started, result


async def one_pair(name: str, cache: Path, limits: list[int | None]) -> dict[str, Any]:
    old_p, new_p = bench_delta.pair_paths(cache, name)
    out: dict[str, Any] = {"old_bytes": old_p.stat().st_size, "new_bytes": new_p.stat().st_size}
    with tempfile.TemporaryDirectory(prefix="bench_update-") as tmp:
        base = Path(tmp)
        repo, manifest, artifact = make_repo(base, old_p, new_p)
        out["full_blob_bytes"] = artifact.blob.length
        out["raw_bytes"] = artifact.length
        out["transfer_codec"] = artifact.transfer.codec if artifact.transfer else None
        out["delta_codec"] = manifest.deltas[0].codec if manifest.deltas else None
        out["patch_bytes"] = manifest.deltas[0].patch.length if manifest.deltas else None
        async with serve_repository(repo, "127.0.0.1", 0) as server:
            for limit in limits:
                label = "unlimited" if limit is None else f"{limit}"
                nodes = {}
                for kind in ("delta", "full"):
                    node = base / f"{kind}-{label}"
                    init_node(node, root_bytes=(repo / "root.json").read_bytes(), sources=[server.url])
                    await update(node, "1.0.0")
                    nodes[kind] = node
                opts: dict[str, Any] = {}
                if limit is not None:
                    opts["transport_options"] = {"rate_limit": limit}
                t_delta, r_delta = await update(nodes["delta"], "1.1.0", **opts)
                t_full, r_full = await update(nodes["full"], "1.1.0", deltas=False, **opts)
                for node in nodes.values():
                    assert (node / "current" / "blackhole-node").read_bytes() == new_p.read_bytes()
                out[label] = {
                    "delta_method": r_delta.method,
                    "delta_reason": r_delta.method_reason,
                    "delta_seconds": round(t_delta, 3),
                    "delta_bytes": r_delta.bytes_fetched,
                    "full_seconds": round(t_full, 3),
                    "full_bytes": r_full.bytes_fetched,
                    "time_ratio": round(t_delta / t_full, 3),
                    "bytes_ratio": round(r_delta.bytes_fetched / max(r_full.bytes_fetched, 1), 5),
                }
                row = out[label]
                print(
                    f"{name:9s} {label:>10s}  delta {row['delta_seconds']:7.3f} s "
                    f"{row['delta_bytes']:>11,d} B ({r_delta.method})   full {row['full_seconds']:7.3f} s "
                    f"{row['full_bytes']:>11,d} B   time x{row['time_ratio']}  bytes x{row['bytes_ratio']}",
                    flush=True,
                )
    print(
        f"{name:9s} full download {out['full_blob_bytes']:,d} B compressed "
        f"({out['transfer_codec'] or 'not compressed'}) vs {out['raw_bytes']:,d} B raw; "
        f"patch {out['patch_bytes']} B ({out['delta_codec']})"
    )
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    cache = bench_delta.cache_dir(args.cache)
    limits: list[int | None] = [int(args.limit)]
    if args.unlimited:
        limits.append(None)
    pairs = {name: await one_pair(name, cache, limits) for name in args.pairs}
    limited = str(int(args.limit))
    ratios = [p[limited]["time_ratio"] for p in pairs.values()]
    all_delta = all(p[limited]["delta_method"] == "delta" for p in pairs.values())
    summary: dict[str, Any] = {
        "bench": "bench_update",
        "bandwidth_limit": int(args.limit),
        "pairs": pairs,
        "max_time_ratio": max(ratios),
        "max_bytes_ratio": max(p[limited]["bytes_ratio"] for p in pairs.values()),
        "full_bytes_compressed": sum(p["full_blob_bytes"] for p in pairs.values()),
        "full_bytes_raw": sum(p["raw_bytes"] for p in pairs.values()),
        "targets": {"max_time_ratio": MAX_TIME_RATIO, "fewer_bytes_by_delta": True},
    }
    if args.unlimited:
        summary["max_time_ratio_unlimited"] = max(p["unlimited"]["time_ratio"] for p in pairs.values())
    summary["targets_met"] = (
        all_delta and max(ratios) <= MAX_TIME_RATIO and summary["max_bytes_ratio"] < 1.0
    )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS))
    parser.add_argument("--limit", type=float, default=10_000_000, help="bytes/s")
    parser.add_argument("--unlimited", action="store_true", help="also without a rate limit")
    parser.add_argument("--cache", help="the bench cache directory (see bench_delta.py)")
    result = anyio.run(main, parser.parse_args())
    print(json.dumps(result, sort_keys=True))
    sys.exit(0 if result["targets_met"] else 1)
