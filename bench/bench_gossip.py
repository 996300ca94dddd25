"""Benchmark: announcements over the gossip plugin, N processes on 127.0.0.1.

Each process runs the gossip transport (the plugin, under trio) with the core's
``PeerMessageGate`` as its validator, over the benchmark repository's root (seq floors kept in
memory); it dials ``--degree`` random peers (its bootstrap list; ``target_outbound_peers`` =
degree) and learns more by peer exchange. Node 0 publishes ``--messages`` signed announcements
of the real size (index announcements signed by the index key, one new index version each),
``--interval`` seconds apart; every process records when its gate accepted each.

Two runs:

1. steady: every node up for the whole run;
2. churn: 10% of the nodes (never node 0) are killed (SIGKILL) after half the messages, and one
   late joiner starts then (bootstrapped to ``--degree`` random live nodes; it catches up by
   query) before the second half.

Figures per run:

- coverage: for each message, the fraction of the nodes alive at the end (and up when it was
  published; the late joiner counts for messages published after it joined, and its catch-up
  must return the newest announcement published before) whose gate accepted it;
- latency: publish call to acceptance, median and p99 over every (message, node);
- amplification: wire bytes written per node during the announcements (each process counts
  the bytes its TCP streams hand to the kernel: Noise- and yamux-framed, control traffic
  included; ``/proc/PID/io`` does not count ``send()`` on sockets), averaged over nodes,
  divided by the payload bytes published.

Targets: coverage 100% in every run, p99 at most 1.0 s at 40 processes on loopback,
amplification at most D + 2 = 8. The last line printed is one JSON object with
``coverage_min``, ``p99_s`` and ``amplification`` and the targets.

Run: ``python bench/bench_gossip.py [--nodes 40] [--quick]`` (``--quick``: 16 nodes). A node
process is this file run with ``--node JSON``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TARGET_P99_S = 1.0
MESH_DEGREE = 6
TARGET_AMPLIFICATION = MESH_DEGREE + 2
TARGET_COVERAGE = 1.0
KIND = "announcement"


# -- the node process ----------------------------------------------------------------------------


def node_main(settings: dict[str, Any]) -> None:
    import logging

    import trio

    logging.disable(logging.CRITICAL)  # py-libp2p logs failed dials at ERROR level
    sent = [0]
    original = trio.SocketStream.send_all

    async def counting_send_all(self: trio.SocketStream, data: Any) -> None:
        sent[0] += len(data)
        await original(self, data)

    trio.SocketStream.send_all = counting_send_all  # type: ignore[method-assign]

    from blackhole_sync_gossip.transport import GossipTransport

    from blackhole_sync import Envelope, PeerMessage, Root
    from blackhole_sync.network import PeerMessageGate

    root = Envelope.from_bytes(bytes.fromhex(settings["root"])).parse(Root.from_dict)

    class Floors:
        def __init__(self) -> None:
            self.floors: dict[tuple[str, str], int] = {}

        def get_seq_floor(self, kind: str, node_id: str) -> int | None:
            return self.floors.get((kind, node_id))

        def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
            self.floors[(kind, node_id)] = seq

    gate = PeerMessageGate(lambda: root, Floors())
    out_lock = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    async def main() -> None:
        transport = GossipTransport(
            message_validator=gate,
            network_id=root.network_id,
            identity_key=bytes.fromhex(settings["seed"]),
            loopback_only=True,
            listen=f"/ip4/127.0.0.1/tcp/{settings['port']}",
            bootstrap=settings["bootstrap"],
            node_config={
                "gossip": {
                    "target_outbound_peers": settings["degree"],
                    "dial_backoff_initial": 0.5,
                    "dial_backoff_max": 4.0,
                    "peer_cache": False,
                }
            },
        )
        async with transport, trio.open_nursery() as nursery:
            sub = transport.subscribe([KIND])

            def record(message: PeerMessage, via: str) -> None:
                doc = Envelope.from_bytes(message.payload).signed
                emit({"event": "got", "v": doc["index_version"], "t": time.time(), "via": via})

            async def listen() -> None:
                if settings.get("catch_up"):
                    for answer in await transport.query(KIND):
                        if gate(answer).name == "ACCEPT":
                            record(answer, "catch_up")
                async for message in sub:
                    record(message, "gossip")

            nursery.start_soon(listen)
            emit({"event": "ready", "peer_id": transport.peer_id})
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            buf = b""
            async with stdin:
                while True:
                    chunk = await stdin.receive_some(65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        cmd = json.loads(line)
                        if cmd["cmd"] == "announce":
                            payload = bytes.fromhex(cmd["payload"])
                            gate(PeerMessage(KIND, payload))  # as the core does first
                            t = time.time()
                            await transport.announce(KIND, payload)
                            emit({"event": "announced", "v": cmd["v"], "t": t})
                        elif cmd["cmd"] == "sent":
                            emit({"event": "sent", "bytes": sent[0], "stdout_ok": True})
                        elif cmd["cmd"] == "mesh":
                            mesh = await transport.read_engine("mesh_peers", KIND)
                            emit({"event": "mesh", "n": len(mesh)})
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- the orchestrator ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, index: int, settings: dict[str, Any]) -> None:
        self.index = index
        logdir = os.environ.get("BENCH_GOSSIP_LOGS")
        stderr: Any = subprocess.DEVNULL
        if logdir:
            stderr = open(Path(logdir) / f"node{index}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--node", json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.got: dict[int, tuple[float, str]] = {}
        self.ready_at: float | None = None
        self.alive = True
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["event"] == "got":
                self.got.setdefault(event["v"], (event["t"], event["via"]))
            elif event["event"] == "ready":
                self.ready_at = time.time()
            else:
                self.events.put(event)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def ask(self, event: str, timeout: float = 30.0, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"node {self.index} did not answer {cmd} (exit status {self.proc.poll()})"
                ) from None
            if item["event"] == event:
                return item

    def kill(self) -> None:
        self.alive = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def make_announcements(count: int, work: Path) -> tuple[bytes, list[tuple[int, bytes]]]:
    from blackhole_sync import PrivateKey, Repository
    from blackhole_sync.network import make_announcement

    key = PrivateKey.generate()
    repo = Repository.init(
        work / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key.public_key,
        sign_with=[key],
    )  # fmt: skip
    out = []
    for _ in range(count):
        index = repo.refresh(key)
        data = repo.index_bytes()
        assert data is not None
        out.append((index.version, make_announcement(data, repo.root(), "stable", key)))
    return repo.root_bytes(), out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def start_nodes(
    n: int, degree: int, root: bytes, rng: random.Random
) -> tuple[list[Node], list[dict[str, Any]]]:
    from blackhole_sync.codecs import libp2p_peer_id
    from blackhole_sync.documents import PrivateKey

    specs = []
    for _ in range(n):
        seed = rng.randbytes(32)
        specs.append(
            {
                "seed": seed.hex(),
                "port": free_port(),
                "peer_id": libp2p_peer_id(PrivateKey(seed).public_key),
            }
        )
    nodes = []
    for i, spec in enumerate(specs):
        others = [j for j in range(n) if j != i]
        boot = rng.sample(others, min(degree, len(others)))
        nodes.append(Node(i, node_settings(spec, specs, boot, degree, root)))
    return nodes, specs


def node_settings(
    spec: dict[str, Any],
    specs: list[dict[str, Any]],
    boot: list[int],
    degree: int,
    root: bytes,
    catch_up: bool = False,
) -> dict[str, Any]:
    return {
        "seed": spec["seed"],
        "port": spec["port"],
        "bootstrap": [
            f"/ip4/127.0.0.1/tcp/{specs[j]['port']}/p2p/{specs[j]['peer_id']}" for j in boot
        ],
        "degree": degree,
        "root": root.hex(),
        "catch_up": catch_up,
    }


def wait_ready(nodes: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(n.ready_at is not None for n in nodes):
            return
        dead = [n.index for n in nodes if n.proc.poll() is not None]
        if dead:
            raise RuntimeError(f"nodes exited during start-up: {dead}")
        time.sleep(0.2)
    raise RuntimeError("nodes did not start in time")


def wait_meshed(nodes: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while time.monotonic() < deadline:
            if node.ask("mesh", cmd="mesh")["n"] >= 1:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"node {node.index} has no mesh peer")


def run(
    label: str,
    n: int,
    degree: int,
    root: bytes,
    announcements: list[tuple[int, bytes]],
    interval: float,
    churn: bool,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes, specs = start_nodes(n, degree, root, rng)
    late: Node | None = None
    killed: list[int] = []
    try:
        started = time.monotonic()
        wait_ready(nodes, 300)
        wait_meshed(nodes, 120)
        time.sleep(3.0)  # let the mesh settle past its first heartbeats
        setup_s = time.monotonic() - started
        publisher = nodes[0]
        before = {node.index: node.ask("sent", cmd="sent")["bytes"] for node in nodes}
        published: dict[int, float] = {}
        late_since: float | None = None
        late_newest_before: int | None = None
        half = len(announcements) // 2
        for k, (version, payload) in enumerate(announcements):
            if churn and k == half:
                victims = rng.sample(range(1, n), max(1, n // 10))
                for i in victims:
                    nodes[i].kill()
                killed = victims
                alive = [i for i in range(n) if i not in victims]
                spec = {
                    "seed": rng.randbytes(32).hex(),
                    "port": free_port(),
                }
                from blackhole_sync.codecs import libp2p_peer_id
                from blackhole_sync.documents import PrivateKey

                spec["peer_id"] = libp2p_peer_id(PrivateKey(bytes.fromhex(spec["seed"])).public_key)
                boot = rng.sample(alive, min(degree, len(alive)))
                late = Node(n, node_settings(spec, specs, boot, degree, root, catch_up=True))
                wait_ready([late], 120)
                wait_meshed([late], 60)
                late_since = time.time()
                late_newest_before = announcements[k - 1][0]
            reply = publisher.ask("announced", cmd="announce", v=version, payload=payload.hex())
            published[version] = reply["t"]
            time.sleep(interval)
        # Wait for stragglers (bounded), then read the counters.
        everyone = [x for x in [*nodes, *([late] if late else [])] if x.alive]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(all(v in x.got for v in published) for x in everyone if x is not late):
                break
            time.sleep(0.2)
        after = {node.index: node.ask("sent", cmd="sent")["bytes"] for node in everyone}
    finally:
        for node in [*nodes, *([late] if late else [])]:
            node.stop()

    payload_bytes = sum(len(p) for _, p in announcements)
    receivers = [x for x in everyone if x is not publisher]
    coverage: dict[int, float] = {}
    latencies: list[float] = []
    for version, t_pub in published.items():
        eligible = [x for x in receivers if x is not late or (late_since or 0) <= t_pub]
        have = [x for x in eligible if version in x.got]
        coverage[version] = len(have) / len(eligible) if eligible else 1.0
        latencies += [x.got[version][0] - t_pub for x in have if x.got[version][1] == "gossip"]
    caught_up = None
    if late is not None and late_newest_before is not None:
        caught_up = late_newest_before in late.got
        if not caught_up:
            coverage[late_newest_before] = min(coverage[late_newest_before], 0.0)
    written = [after[x.index] - before[x.index] for x in everyone if x.index in before]
    amplification = statistics.mean(written) / payload_bytes
    result = {
        "run": label,
        "nodes": n,
        "alive_at_end": len(everyone),
        "killed": len(killed),
        "late_joiner_caught_up": caught_up,
        "setup_s": round(setup_s, 1),
        "messages": len(published),
        "payload_bytes_each": round(payload_bytes / len(announcements)),
        "coverage_min": round(min(coverage.values()), 4),
        "coverage_mean": round(statistics.mean(coverage.values()), 4),
        "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "amplification": round(amplification, 2),
        "wire_bytes_per_node": round(statistics.mean(written)),
    }
    print(
        f"{label:7} {n} nodes ({len(killed)} killed, {'1 late joiner' if late else 'no joiner'}):"
        f" coverage min {result['coverage_min']:.2%}, latency median "
        f"{result['latency_median_s']} s p99 {result['latency_p99_s']} s, amplification "
        f"{result['amplification']} ({result['wire_bytes_per_node']:,} B/node for "
        f"{payload_bytes:,} B published)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="16 nodes")
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.node:
        node_main(json.loads(args.node))
        return
    n = 16 if args.quick else args.nodes
    with tempfile.TemporaryDirectory(prefix="bench-gossip-") as work:
        root, announcements = make_announcements(args.messages, Path(work))
    runs = [
        run("steady", n, args.degree, root, announcements, args.interval, False, args.seed),
        run("churn", n, args.degree, root, announcements, args.interval, True, args.seed + 1),
    ]
    p99 = max(r["latency_p99_s"] or float("inf") for r in runs)
    summary = {
        "benchmark": "gossip",
        "nodes": n,
        "messages": args.messages,
        "coverage_min": min(r["coverage_min"] for r in runs),
        "p99_s": p99,
        "latency_median_s": max(r["latency_median_s"] or float("inf") for r in runs),
        "amplification": max(r["amplification"] for r in runs),
        "runs": runs,
        "targets": {
            "coverage_min": TARGET_COVERAGE,
            "p99_s": TARGET_P99_S,
            "amplification": TARGET_AMPLIFICATION,
        },
        "met": {
            "coverage": min(r["coverage_min"] for r in runs) >= TARGET_COVERAGE,
            "p99": p99 <= TARGET_P99_S,
            "amplification": max(r["amplification"] for r in runs) <= TARGET_AMPLIFICATION,
        },
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
