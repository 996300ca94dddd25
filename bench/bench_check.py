"""Benchmark: a node's check and status cost the same with 1 or 1,000 published releases.

Two repositories, one with 1 release and one with ``--releases`` (default 1,000); a node on
each, up to date with the newest release. In one process, after a warm-up, ``ROUNDS``
interleaved rounds time ``UpdateManager.check_for_updates()`` (refresh the index from a
``file://`` source, look for newer releases) and ``get_update_status()``. Every signature
verification is counted (``PublicKey.verify`` is wrapped) during one check and one status of
each node.

Targets (the architecture issue): the time ratio 1,000 vs 1 at most 1.5 for each operation
(JSON keys ``ratio_1000_vs_1`` for the check, ``status_ratio_1000_vs_1``), and the same number
of signature verifications in both (``verifications_1`` == ``verifications_1000``): a check
verifies the root chain and the new index, and no stored manifest it does not need.

Run: ``.venv/bin/python bench/bench_check.py [--releases N] [--rounds N] [--quick]``. The last
line printed is one JSON object with the figures and the targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from blackhole_sync import PrivateKey, Repository, UpdateManager, init_node
from blackhole_sync.documents import signing

TARGET_RATIO = 1.5


def make_repo(base: Path, releases: int) -> Path:
    key = PrivateKey.generate()
    repo = Repository.init(
        base / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key.public_key,
        sign_with=[key], index_expires_seconds=30 * 86_400,
    )  # fmt: skip
    artifact = base / "service"
    for n in range(releases):
        artifact.write_bytes(f"release {n}\n".encode())
        version = f"1.{n}.0"
        repo.build_release(version, [artifact], delta_from=[])
        repo.sign_release(version, key)
        repo.publish_release(version, key)
    return repo.path


async def bring_up_to_date(node: Path) -> None:
    async with UpdateManager(node) as manager:
        await manager.update()


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self._original = signing.PublicKey.verify

    def __enter__(self) -> Counter:
        original = self._original

        def counted(key: signing.PublicKey, message: bytes, sig: bytes) -> bool:
            self.calls += 1
            return original(key, message, sig)

        signing.PublicKey.verify = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        signing.PublicKey.verify = self._original  # type: ignore[method-assign]


async def timed(operation: Callable[[], Awaitable[Any]], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        await operation()
    return (time.perf_counter() - started) / repeat


async def measure(nodes: dict[int, Path], rounds: int, repeat: int) -> dict[str, Any]:
    managers = {n: UpdateManager(path) for n, path in nodes.items()}
    for manager in managers.values():
        await manager.__aenter__()
    try:

        def check(n: int) -> Callable[[], Awaitable[Any]]:
            return managers[n].check_for_updates

        def status(n: int) -> Callable[[], Awaitable[Any]]:
            async def run() -> Any:
                managers[n]._state = None  # what a fresh `node status` does: load from disk
                return managers[n].get_update_status()

            return run

        for n in nodes:  # warm-up
            await check(n)()
            await status(n)()
        verifications: dict[str, int] = {}
        for n in nodes:
            with Counter() as counter:
                await check(n)()
            verifications[f"check_{n}"] = counter.calls
            with Counter() as counter:
                await status(n)()
            verifications[f"status_{n}"] = counter.calls
        times: dict[str, list[float]] = {f"{op}_{n}": [] for op in ("check", "status") for n in nodes}
        order = sorted(nodes)
        for r in range(rounds):
            for n in order if r % 2 == 0 else reversed(order):
                times[f"check_{n}"].append(await timed(check(n), repeat))
                times[f"status_{n}"].append(await timed(status(n), repeat))
        medians = {k: statistics.median(v) for k, v in times.items()}
        return {"medians_s": medians, "verifications": verifications}
    finally:
        for manager in managers.values():
            await manager.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--releases", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 releases, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.releases, args.rounds, args.repeat = 200, 3, 3
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        base = Path(tmp)
        nodes: dict[int, Path] = {}
        for count in (1, args.releases):
            started = time.perf_counter()
            (base / str(count)).mkdir()
            repo = make_repo(base / str(count), count)
            node = base / str(count) / "node"
            init_node(node, root_bytes=(repo / "root.json").read_bytes(), sources=[str(repo)])
            anyio.run(bring_up_to_date, node)
            nodes[count] = node
            print(f"repository with {count} releases built in {time.perf_counter() - started:.1f} s")
        result = anyio.run(measure, nodes, args.rounds, args.repeat)
    big, m = args.releases, result["medians_s"]
    v = result["verifications"]
    figures = {
        "releases": big,
        "check_s_1": round(m["check_1"], 5),
        f"check_s_{big}": round(m[f"check_{big}"], 5),
        "status_s_1": round(m["status_1"], 5),
        f"status_s_{big}": round(m[f"status_{big}"], 5),
        "ratio_1000_vs_1": round(m[f"check_{big}"] / m["check_1"], 3),
        "status_ratio_1000_vs_1": round(m[f"status_{big}"] / m["status_1"], 3),
        "verifications_1": v["check_1"] + v["status_1"],
        "verifications_1000": v[f"check_{big}"] + v[f"status_{big}"],
        "verifications": v,
        "target_ratio": TARGET_RATIO,
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
