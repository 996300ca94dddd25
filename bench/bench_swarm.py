"""bench_swarm: N node processes fetch one artifact from an origin whose upload is limited --
over BitTorrent (the origin the only initial seeder), and over HTTP to every node.

The world, all on 127.0.0.1: a repository (fresh key) with release 1.0.0, one artifact of
``--size-mib`` pseudo-random bytes (incompressible, so the blob on the wire is the artifact;
its torrent has the plugin's piece size: 64 KiB at 64 MiB), built with the installed
transports' locators (its ``btih`` signed in the manifest, ``torrents/<btih>.torrent`` served).

The origin is ``blackhole-sync serve REPO --loopback-only --peer-config ...`` (gossip and IPFS
blocked): HTTP, and the BitTorrent plugin seeding each published blob in super-seeding mode
(BEP 16) with ``[bittorrent] upload_limit = --limit`` (the plugin's peer class filter makes
the limit hold for loopback peers). Its HTTP side is reached through an uplink shaper in this
process: a TCP relay passing at most ``--limit`` bytes per second over all its connections
together, so HTTP leaves the origin at the same limit; it connects to the origin from a
distinct 127.0.0.x address per connection (the HTTP server's per-client cap sees N hosts, as
it would on a network, not one).

Each run has fresh node directories, a fresh copy of the repository and its own origin:

* ``swarm``: N ``blackhole-sync node run`` agents (the real agent) with the BitTorrent
  plugin: ``[bittorrent] peers`` and ``dht_bootstrap`` = the origin's seed, loopback only.
  Peers find one another through the origin (PEX) and the DHT; an agent keeps seeding what it
  fetched, as agents do.
* ``http``: the same N agents with the BitTorrent plugin blocked: each downloads the whole
  artifact from the origin's HTTP server, through the shaper.

The agents start with nothing published and check every ``--check-interval`` seconds; once
each has finished its first check, the release is published (``t0``: their process start-up
is not counted). The time of a run is from ``t0`` until every node's ``current`` is 1.0.0 --
fetched, verified against the signed sha256, installed. Origin bytes come from the origin's
own counters (``REPO/.bhsync/origin/status.json``): the BitTorrent seed's upload of the blob
plus the HTTP server's bytes of ``blobs/<sha256>`` (web seeds, fallbacks), never from the
nodes' reports (which are printed beside them: bytes from peers, from the origin's seed, from
web seeds).

Figures: ``origin_copies`` = origin bytes / blob length in the swarm run (target at most 1.5;
the floor is 1.0; HTTP to every node is N); ``time_ratio_to_http`` = swarm time / HTTP time
(target at most 0.5). ``--quick``: 8 nodes, 16 MiB at 8 MB/s -- its time ratio is no verdict:
a super-seeding origin's first piece reaches a new peer about 10 s after it connects
(libtorrent 2.1, see the BitTorrent plugin's README), most of a 17-second HTTP run. The last
line is one JSON object with the figures and the targets; the exit status is 1 when a target
is missed.

    python bench/bench_swarm.py [--quick] [--nodes 16] [--size-mib 64] [--limit 16e6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from blackhole_sync.codecs import write_key_pair  # noqa: E402
from blackhole_sync.demo.processes import (  # noqa: E402
    Processes,
    cli_args,
    free_port,
    wait_for_line,
)
from blackhole_sync.documents import ReleaseManifest  # noqa: E402
from blackhole_sync.fetch import make_plugin_manager  # noqa: E402
from blackhole_sync.manager import init_node  # noqa: E402
from blackhole_sync.release import Repository  # noqa: E402

MiB = 1024 * 1024
VERSION = "1.0.0"
MAX_ORIGIN_COPIES = 1.5
MAX_TIME_RATIO = 0.5
#: Seconds a run may take before it is abandoned (a figure is then missing, never a pass).
RUN_TIMEOUT = 600.0


# ------------------------------------------------------------------------------ the uplink


class Uplink:
    """A shared token bucket: every byte the relay passes towards the nodes takes its turn,
    at ``rate`` bytes per second over all connections together (a burst of 50 ms)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next = time.monotonic()
        self.passed = 0

    async def take(self, n: int) -> None:
        now = time.monotonic()
        start = max(self.next, now - 0.05)
        self.next = start + n / self.rate
        self.passed += n
        delay = self.next - now
        if delay > 0:
            await asyncio.sleep(delay)


class Shaper:
    """A TCP relay on 127.0.0.1 in front of the origin's HTTP port (see the module docstring)."""

    def __init__(self, origin_port: int, rate: float) -> None:
        self.origin_port = origin_port
        self.uplink = Uplink(rate)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._addresses = itertools.cycle(
            f"127.0.{a}.{b}" for a in range(1, 4) for b in range(2, 255)
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _relay(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_r, up_w = await asyncio.open_connection(
                "127.0.0.1", self.origin_port, local_addr=(next(self._addresses), 0)
            )
        except OSError:
            down_w.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._pipe(down_r, up_w, shaped=False), self._pipe(up_r, down_w, shaped=True)
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a connection ends, or the relay closes
        finally:
            for w in (up_w, down_w):
                w.close()
            self._tasks.discard(task)

    async def _pipe(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, *, shaped: bool
    ) -> None:
        try:
            while data := await r.read(64 * 1024):
                if shaped:
                    await self.uplink.take(len(data))
                w.write(data)
                await w.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                w.write_eof()


# ------------------------------------------------------------------------------ the world


def build_repository(work: Path, size: int) -> tuple[Path, Path, ReleaseManifest]:
    """A repository with 1.0.0 built and signed (not published); (repo, key file, manifest)."""
    keys = work / "keys"
    keys.mkdir(mode=0o700, parents=True)
    key = write_key_pair(keys / "all")
    repo = Repository.init(
        work / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key, sign_with=[key],
    )  # fmt: skip
    artifact = work / "build" / "blackhole-node"
    artifact.parent.mkdir()
    artifact.write_bytes(random.Random(12).randbytes(size))
    plugins = make_plugin_manager(load_entrypoints=True, block=["ipfs", "gossip"])
    manifest = repo.build_release(VERSION, [artifact], delta_from=[], plugins=plugins)
    repo.sign_release(VERSION, key)
    [art] = manifest.artifacts
    if not any(x["kind"] == "btih" for x in art.locators):
        raise SystemExit("the BitTorrent plugin gave the artifact no btih locator")
    return repo.path, keys / "all", manifest


def node_config(
    path: Path, *, check_interval: int, swarm: bool, bt_port: int, origin_bt: str
) -> None:
    text = (path / "config.toml").read_text()
    block = ["ipfs", "gossip"] if swarm else ["ipfs", "gossip", "bittorrent"]
    for old, new in (
        ("check_interval = 3600", f"check_interval = {check_interval}"),
        ("loopback_only = false", "loopback_only = true"),
        ("\nblock = []", f"\nblock = {json.dumps(block)}"),
    ):
        if old not in text:
            raise SystemExit(f"config.toml has no {old!r}")
        text = text.replace(old, new, 1)
    if swarm:
        text += (
            "\n[bittorrent]\n"
            f"port = {bt_port}\n"
            f'peers = ["{origin_bt}"]\n'
            f'dht_bootstrap = ["{origin_bt}"]\n'
        )
    (path / "config.toml").write_text(text)


def current(node: Path) -> str | None:
    link = node / "current"
    try:
        return link.resolve().name if link.is_symlink() else None
    except OSError:
        return None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def origin_bytes(repo: Path, sha256: str) -> dict[str, int]:
    """What the origin sent of the blob, from its own counters."""
    status = read_json(repo / ".bhsync" / "origin" / "status.json")
    http = int(((status.get("http") or {}).get("by_path") or {}).get(f"blobs/{sha256}", 0))
    seeding = ((status.get("peers") or {}).get("bittorrent") or {}).get("seeding") or []
    bt = sum(int(s.get("uploaded", 0)) for s in seeding if s.get("sha256") == sha256)
    return {"http": http, "bittorrent": bt}


# ------------------------------------------------------------------------------ one run


async def run(
    kind: str, args: argparse.Namespace, base: Path, built: tuple[Path, Path, ReleaseManifest]
) -> dict[str, Any]:
    swarm = kind == "swarm"
    repo_src, key_file, manifest = built
    [art] = manifest.artifacts
    blob = art.blob
    work = base / kind
    repo = work / "repo"
    shutil.copytree(repo_src, repo, symlinks=True)
    limit = int(args.limit)
    origin_bt_port = free_port()
    peer_config = work / "origin-peers.toml"
    peer_config.write_text(
        '[plugins]\nblock = ["ipfs", "gossip"]\n\n'
        f"[bittorrent]\nport = {origin_bt_port}\nupload_limit = {limit}\nsuper_seeding = true\n"
    )
    with Processes(work / "logs") as procs:
        origin = procs.start("origin", cli_args(
            "serve", str(repo), "--port", "0", "--loopback-only", "--peer-config", str(peer_config),
        ))  # fmt: skip
        url = wait_for_line(origin, lambda ln: ln.startswith("http://"), 60).strip()
        wait_for_line(origin, lambda ln: ln.startswith("peer bittorrent "), 60)
        shaper = Shaper(int(url.rsplit(":", 1)[1].rstrip("/")), limit)
        await shaper.start()
        try:
            nodes = []
            for i in range(args.nodes):
                node = work / "nodes" / f"node{i + 1:02d}"
                node.parent.mkdir(exist_ok=True)
                init_node(
                    node,
                    root_bytes=(repo / "root.json").read_bytes(),
                    sources=[f"http://127.0.0.1:{shaper.port}"],
                )
                node_config(
                    node, check_interval=args.check_interval, swarm=swarm, bt_port=free_port(),
                    origin_bt=f"127.0.0.1:{origin_bt_port}",
                )  # fmt: skip
                nodes.append(node)
            agents = [procs.start(node.name, cli_args("node", "run", str(node))) for node in nodes]
            for agent in agents:  # each agent has finished its first check: nothing published
                await asyncio.to_thread(
                    wait_for_line, agent, lambda ln: ln[:2] == "20" and "Z " in ln, 120
                )
            print(f"{kind}: {len(agents)} agents running; publishing {VERSION}", flush=True)
            t0 = time.monotonic()
            Repository.open(repo).publish_release(VERSION, _key(key_file))
            done: dict[str, float] = {}
            deadline = t0 + RUN_TIMEOUT
            while len(done) < len(nodes):
                for node in nodes:
                    if node.name not in done and current(node) == VERSION:
                        done[node.name] = time.monotonic() - t0
                for agent in agents:
                    if not agent.alive():
                        raise RuntimeError(f"{agent.name} exited: {agent.lines()[-5:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{kind}: {len(done)} of {len(nodes)} nodes done in {RUN_TIMEOUT:.0f} s"
                    )
                await asyncio.sleep(0.1)
            seconds = max(done.values())
            await asyncio.sleep(2.5)  # the origin rewrites its counters every second
            sent = origin_bytes(repo, blob.sha256)
            nodes_bt = [read_json(node / "bittorrent" / "status.json") for node in nodes]
        finally:
            await shaper.close()
    for node in nodes:
        if (node / "current" / art.name).stat().st_size != art.length:
            raise RuntimeError(f"{node.name}: the installed artifact has the wrong length")
    total = sent["http"] + sent["bittorrent"]
    out: dict[str, Any] = {
        "seconds": round(seconds, 2),
        "first_done_s": round(min(done.values()), 2),
        "median_done_s": round(sorted(done.values())[len(done) // 2], 2),
        "origin_http_bytes": sent["http"],
        "origin_bittorrent_bytes": sent["bittorrent"],
        "origin_copies": round(total / blob.length, 3),
        "shaper_bytes": shaper.uplink.passed,
    }
    if swarm:
        out["nodes_from_peers"] = sum(int(s.get("from_peers", 0)) for s in nodes_bt)
        out["nodes_from_origin_seed"] = sum(int(s.get("from_origin", 0)) for s in nodes_bt)
        out["nodes_from_web_seeds"] = sum(int(s.get("from_web_seeds", 0)) for s in nodes_bt)
        out["nodes_uploaded"] = sum(int(s.get("uploaded", 0)) for s in nodes_bt)
        out["nodes_fetched_by_bittorrent"] = sum(1 for s in nodes_bt if int(s.get("fetches", 0)))
    print(
        f"{kind:5s}: all {len(nodes)} nodes on {VERSION} after {out['seconds']:.1f} s "
        f"(first {out['first_done_s']:.1f} s, median {out['median_done_s']:.1f} s); origin sent "
        f"{sent['bittorrent']:,d} B by BitTorrent + {sent['http']:,d} B by HTTP = "
        f"{out['origin_copies']:.3f} copies of the {blob.length:,d}-byte blob",
        flush=True,
    )
    if swarm:
        print(
            f"       nodes' own counters: {out['nodes_from_peers']:,d} B from peers "
            f"({out['nodes_from_origin_seed']:,d} of them from the origin's seed), "
            f"{out['nodes_from_web_seeds']:,d} B from web seeds, {out['nodes_uploaded']:,d} B "
            f"uploaded to each other; {out['nodes_fetched_by_bittorrent']} of {len(nodes)} "
            "fetched by BitTorrent",
            flush=True,
        )
    return out


def _key(path: Path) -> Any:
    from blackhole_sync.codecs import load_private_key

    return load_private_key(path)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.size_mib * MiB)
    limit = int(args.limit)
    print(
        f"bench_swarm: {args.nodes} node processes, a {size / MiB:.0f} MiB artifact, the origin's "
        f"upload limited to {limit / 1e6:.1f} MB/s (BitTorrent seed and HTTP alike)",
        flush=True,
    )
    base = Path(tempfile.mkdtemp(prefix="bench_swarm-", dir=args.workdir))
    try:
        built = await asyncio.to_thread(build_repository, base / "build", size)
        blob = built[2].artifacts[0].blob
        runs = {kind: await run(kind, args, base, built) for kind in args.runs}
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if set(runs) != {"swarm", "http"}:  # a diagnostic run: no ratio, no verdict
        return {"bench": "bench_swarm", "runs": runs, "targets_met": False}
    swarm, http = runs["swarm"], runs["http"]
    ratio = swarm["seconds"] / http["seconds"]
    summary: dict[str, Any] = {
        "bench": "bench_swarm",
        "quick": bool(args.quick),
        "nodes": args.nodes,
        "artifact_bytes": blob.length,
        "upload_limit": limit,
        "origin_copies": swarm["origin_copies"],
        "http_origin_copies": http["origin_copies"],
        "swarm_seconds": swarm["seconds"],
        "http_seconds": http["seconds"],
        "http_ideal_seconds": round(args.nodes * blob.length / limit, 2),
        "time_ratio_to_http": round(ratio, 3),
        "runs": runs,
        "targets": {"origin_copies": MAX_ORIGIN_COPIES, "time_ratio_to_http": MAX_TIME_RATIO},
    }
    summary["targets_met"] = swarm["origin_copies"] <= MAX_ORIGIN_COPIES and ratio <= MAX_TIME_RATIO
    print(
        f"origin copies {swarm['origin_copies']:.3f} (target <= {MAX_ORIGIN_COPIES}; floor 1.0; "
        f"HTTP {http['origin_copies']:.2f}); time {swarm['seconds']:.1f} s vs HTTP "
        f"{http['seconds']:.1f} s (at the limit at best {summary['http_ideal_seconds']:.1f} s): "
        f"ratio {ratio:.3f} (target <= {MAX_TIME_RATIO})",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 nodes, 16 MiB, 8 MB/s")
    parser.add_argument("--nodes", type=int, default=None, help="node processes (default 16)")
    parser.add_argument("--size-mib", type=float, default=None, help="artifact MiB (default 64)")
    parser.add_argument("--limit", type=float, default=None, help="origin upload, bytes/s (16e6)")
    parser.add_argument("--check-interval", type=int, default=1, help="agents' check interval")
    parser.add_argument("--workdir", default=None, help="where the temporary world goes")
    parser.add_argument("--keep", action="store_true", help="keep the world (logs, nodes)")
    parser.add_argument(
        "--runs", nargs="+", choices=("swarm", "http"), default=["swarm", "http"],
        help="which runs (both for the figures; one alone to look at it)",
    )  # fmt: skip
    ns = parser.parse_args()
    defaults = (8, 16, 8e6) if ns.quick else (16, 64, 16e6)
    ns.nodes = ns.nodes or defaults[0]
    ns.size_mib = ns.size_mib or defaults[1]
    ns.limit = ns.limit or defaults[2]
    result = asyncio.run(main(ns))
    print(json.dumps(result, sort_keys=True))
    sys.exit(0 if result["targets_met"] else 1)
