"""The demo's story, step by step, each step checked (see the package docstring).

Timings are in seconds on the wall clock; the demo chain makes one block per :data:`BLOCK`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from .processes import Proc, Processes, cli_args, free_port, python_args, wait_for_line
from .view import View, history, is_ipfs, last_update_sources, meta
from .world import PHASES, DemoNode, World, choose_salt

__all__ = ["BLOCK", "Story"]

#: Seconds per block of the demo chain (the protocol activates at a height; a node notes the
#: switch at its next tick, about a second later: still the same block).
BLOCK = 3.0
#: Seconds each phase of a rollout lasts before the next opens.
PHASE_SECONDS = 10
#: The signalling window of the protocol proposal, and the blocks from its end to activation.
VOTE_WINDOW = 15
ACTIVATION_BLOCKS = 6
#: The bad release's first phase lasts longer (a canary soak): its nodes' failing reports
#: must reach the validators before the next phase opens, also on a busy machine.
CANARY_SECONDS = 20
PROPOSAL = "protocol-2"


class Story:
    """One run of the demo: builds the world, starts the processes, plays and checks."""

    def __init__(self, world: World, procs: Processes, view: View, *, nodes: int) -> None:
        self.world = world
        self.procs = procs
        self.view = view
        self.count = nodes
        self.steps: dict[str, bool] = {}
        self.figures: dict[str, Any] = {}
        self.t0 = time.time()
        self.agents: dict[str, Proc] = {}
        self.origin: dict[str, str] = {}
        self.installed_at: dict[str, dict[str, float]] = {}

    # -- helpers -------------------------------------------------------------------------

    @property
    def online(self) -> list[DemoNode]:
        return [n for n in self.world.nodes if not n.offline]

    @property
    def offline(self) -> DemoNode:
        return next(n for n in self.world.nodes if n.offline)

    def check(self, name: str, ok: bool, what: str) -> bool:
        self.steps[name] = bool(ok)
        self.view.say(f"[{'ok' if ok else 'FAILED'}] {what}")
        return ok

    def wait(self, condition: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.view.refresh()
            self._note_installs()
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            for name, proc in self.agents.items():
                if not proc.alive():
                    raise RuntimeError(f"the agent of {name} exited: {proc.lines()[-5:]}")
            time.sleep(every)

    def _note_installs(self) -> None:
        """When each node was first seen on each version (for coverage times)."""
        now = self.view.elapsed()
        for node in self.world.nodes:
            version = node.current()
            if version is not None:
                self.installed_at.setdefault(version, {}).setdefault(node.name, round(now, 1))

    def on(self, version: str, nodes: list[DemoNode] | None = None) -> bool:
        return all(n.current() == version for n in (self.online if nodes is None else nodes))

    def height(self) -> int:
        return int((time.time() - self.t0) / BLOCK)

    # -- the origin and the agents -------------------------------------------------------

    def start_origin(self) -> None:
        gossip_port, bt_port = free_port(), free_port()
        config = self.world.origin_peer_config(gossip_port, bt_port)
        origin = self.procs.start("origin", cli_args(
            "serve", str(self.world.repo.path), "--port", "0", "--loopback-only",
            "--index-key", str(self.world.index_key_path), "--peer-config", str(config),
        ))  # fmt: skip
        url = wait_for_line(origin, lambda ln: ln.startswith("http://"), 60)
        wait_for_line(origin, lambda ln: ln.startswith("peer bittorrent "), 60)
        gossip = wait_for_line(origin, lambda ln: ln.startswith("peer gossip "), 60)
        self.origin = {
            "url": url.strip(),
            "gossip": gossip.split()[2],
            "bittorrent": f"127.0.0.1:{bt_port}",
        }
        self.view.say(f"origin: {url.strip()}, gossip and BitTorrent on 127.0.0.1 (serve)")

    def make_nodes(self) -> None:
        for i in range(self.count):
            offline = i == self.count - 1
            self.world.add_node(
                f"node{i + 1}" if not offline else f"node{i + 1}-offline",
                url=self.origin["url"], gossip_port=free_port(), bt_port=free_port(),
                ipfs_port=free_port(),
                origin=self.origin, offline=offline,
            )  # fmt: skip

    def start_agent(self, node: DemoNode) -> None:
        args = ["-m", "blackhole_sync.demo.agent", str(node.path), repr(self.t0), repr(BLOCK)]
        self.agents[node.name] = self.procs.start(node.name, python_args(*args))
        self.view.states[node.name] = "running"

    def origin_counters(self) -> dict[str, Any]:
        path = self.world.repo.path / ".bhsync" / "origin" / "status.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def origin_copies(self) -> list[dict[str, Any]]:
        """Per released blob: what the origin sent of it (HTTP + BitTorrent seed), from the
        origin's own counters, and in copies of the blob."""
        counters = self.origin_counters()
        http = (counters.get("http") or {}).get("by_path", {})
        bt: dict[str, int] = {}
        for seed in ((counters.get("peers") or {}).get("bittorrent") or {}).get("seeding", []):
            bt[seed["sha256"]] = bt.get(seed["sha256"], 0) + int(seed.get("uploaded", 0))
        out = []
        for version in self.world.digests:
            for sha, blob in self.world.blobs(version).items():
                sent_http = int(http.get(f"blobs/{sha}", 0))
                sent_bt = bt.get(sha, 0)
                length = max(1, blob["length"])
                out.append({
                    **blob, "sha256": sha, "http": sent_http, "bittorrent": sent_bt,
                    "copies": round((sent_http + sent_bt) / length, 2),
                })  # fmt: skip
        return out

    def _show_origin(self) -> None:
        blobs = self.origin_copies()
        sent = sum(b["http"] + b["bittorrent"] for b in blobs)
        served = [b for b in blobs if b["http"] + b["bittorrent"]]
        self.view.origin = {
            "blob_bytes": sent,
            "copies_text": ", ".join(
                f"{b['version']} {b['kind']}: {b['copies']} copies" for b in served
            ),
        }

    # -- the story -----------------------------------------------------------------------

    def play(self) -> None:
        w, view = self.world, self.view
        view.step = "release engineering"
        w.build("1.0.0")
        view.say(
            f"fresh keys; a repository with 2-of-3 release and governance keys; 1.0.0 built "
            f"and signed ({w.size / 1e6:.0f} MB artifact)"
        )
        view.step = "starting the network"
        self.start_origin()
        self.make_nodes()
        w.validators(self.online)
        view.say(f"validator set: the {len(self.online)} online nodes (weight 1 each)")
        for node in self.online:
            self.start_agent(node)
        view.say(f"{len(self.online)} agents started; {self.offline.name} stays offline")
        ids = {n.node_id for n in self.online}

        def mesh() -> bool:
            for n in self.online:
                peers = set((meta(n.path, "coordination:view") or {}).get("peers", {}))
                if not (ids - {n.node_id}) <= peers:
                    return False
            return True

        view.step = "gossip mesh forming"
        formed = self.wait(mesh, 90)
        view.say("every node hears every other's signed status" if formed
                 else "the mesh is still forming; going on")  # fmt: skip
        self.release_1_0_0()
        self.release_1_1_0()
        self.release_1_2_0()
        self.protocol_update()
        self.offline_returns()

    def release_1_0_0(self) -> None:
        self.view.step = "1.0.0 from the swarm"
        started = self.view.elapsed()
        self.world.publish("1.0.0")
        index = self.world.repo.index()
        version = 0 if index is None else index.version
        self.view.say(f"1.0.0 published (index {version}); the origin announces it (gossip, DHT)")
        done = self.wait(lambda: self.on("1.0.0"), 150)
        heard = [n for n in self.online if self._heard(n, version)]
        self.figures["nodes_woken_by_announcement"] = len(heard)
        self.figures.setdefault("time_to_full_coverage_s", {})["1.0.0"] = (
            round(self.view.elapsed() - started, 1) if done else None
        )
        self._show_origin()
        full = [b for b in self.origin_copies() if b["version"] == "1.0.0"]
        copies = max((b["copies"] for b in full), default=0.0)
        self.check(
            "release_1_0_0_on_every_node", done and len(heard) == len(self.online),
            f"every online node runs 1.0.0; {len(heard)} of {len(self.online)} checked at once "
            "on hearing the announcement",
        )  # fmt: skip
        self.check(
            "origin_sent_about_one_copy", done and 0 < copies <= 2.0,
            f"the origin sent {copies} copies of the 1.0.0 artifact (its own counters)",
        )  # fmt: skip

    def _heard(self, node: DemoNode, index_version: int) -> bool:
        """Whether the node's agent was woken by an announcement of at least that index
        (its log says so; the check that follows is recorded with trigger "announce")."""
        proc = self.agents.get(node.name)
        for line in [] if proc is None else proc.lines():
            if "announcement of index " in line:
                try:
                    heard = int(line.split("announcement of index ", 1)[1].split(":")[0])
                except ValueError:
                    continue
                if heard >= index_version:
                    return True
        return False

    def _rollout(
        self, version: str, *, avoid_first: list[str], first: int = PHASE_SECONDS
    ) -> tuple[dict[str, int], float]:
        """Publish a plan then ``version``; each online node's phase, and the start time."""
        digest = self.world.digests[version]
        online = self.online
        salt, phases = choose_salt([n.node_id for n in online], digest, avoid_first=avoid_first)
        by_name = {n.name: p for n, p in zip(online, phases, strict=True)}
        halt_bp = sum(1 for p in phases if p == 0) * 10_000 // len(online)
        plan = self.world.plan(
            version, salt, durations=[first, PHASE_SECONDS, 3600], halt_bp=halt_bp
        )
        self.world.publish(version)
        self.view.phases = dict(by_name)
        counts = [phases.count(i) for i in range(len(PHASES))]
        self.view.say(
            f"{version}: plan with phases "
            + ", ".join(f"{n} {bp // 100}%" for n, bp in PHASES)
            + f" ({first} s, {PHASE_SECONDS} s, then all), salt {salt!r} (the first that puts {counts} nodes in "
            f"them); halts when validators of {halt_bp / 100:g}% weight report it unhealthy"
        )
        return by_name, plan.start.timestamp()

    def release_1_1_0(self) -> None:
        self.view.step = "1.1.0 in phases"
        started = self.view.elapsed()
        self.world.build("1.1.0", delta_from=["1.0.0"])
        phases, start = self._rollout("1.1.0", avoid_first=[])
        done = self.wait(lambda: self.on("1.1.0"), 3 * PHASE_SECONDS + 90)
        self.figures.setdefault("time_to_full_coverage_s", {})["1.1.0"] = (
            round(self.view.elapsed() - started, 1) if done else None
        )
        # the last nodes to switch may still be running their health checks, and an install
        # enters a node's history only once they pass: wait for both before judging the order
        healthy = self.wait(
            lambda: all(
                self.view.rows[n.name].health in ("good", "installed") for n in self.online
            ),
            60,
        )

        def entries() -> dict[str, dict[str, Any]]:
            found = {}
            for node in self.online:
                entry = next((h for h in history(node.path) if h["to"] == "1.1.0"), None)
                if entry is not None:
                    found[node.name] = entry
            return found

        recorded = self.wait(lambda: len(entries()) == len(self.online), 30)
        in_order, by_delta = True, True
        for name, entry in sorted(entries().items()):
            by_delta = by_delta and entry["method"] == "delta"
            installed = _epoch(entry["time"])
            opens = start + phases[name] * PHASE_SECONDS
            if installed < opens - 1:  # whole seconds in the history
                in_order = False
                self.view.say(f"{name} installed 1.1.0 before its phase opened")
        self._show_origin()
        missed = [
            what
            for what, held in (
                ("not every node got it in time", done),
                ("an install missing from a node's history", recorded),
                ("an install before its phase", in_order),
                ("a full download instead of the delta", by_delta),
                ("a node not healthy", healthy),
            )
            if not held
        ]
        self.check(
            "rollout_1_1_0_in_phases", not missed,
            "every online node runs 1.1.0, installed by delta in its own phase, healthy"
            + (f" -- {'; '.join(missed)}" if missed else ""),
        )  # fmt: skip

    def release_1_2_0(self) -> None:
        self.view.step = "a bad 1.2.0"
        self.world.build("1.2.0", delta_from=["1.1.0"], healthy=False, change=2)
        self.world.build("2.0.0", delta_from=["1.1.0"], update_type="protocol")
        self.world.publish("2.0.0")
        self.view.say("protocol release 2.0.0 published: it waits for an activation proposal")
        phases, start = self._rollout(
            "1.2.0", avoid_first=[self.offline.node_id], first=CANARY_SECONDS
        )
        first = [n for n in self.online if phases[n.name] == 0]
        later = [n for n in self.online if phases[n.name] > 0]

        def tried(node: DemoNode) -> bool:
            return any(h["to"] == "1.2.0" for h in history(node.path))

        def halted(node: DemoNode) -> bool:
            return "1.2.0" in (meta(node.path, "coordination:halts") or {})

        # a node's own report reaches its peers, not itself: the reporters are held by their
        # failed install, every other validator halts on their reports
        ok = self.wait(
            lambda: all(tried(n) and n.current() == "1.1.0" for n in first)
            and all(halted(n) for n in later),
            CANARY_SECONDS + 60,
        )  # fmt: skip
        reasons = {str((meta(n.path, "coordination:halts") or {}).get("1.2.0")) for n in later}
        self.check(
            "bad_1_2_0_halted_and_rolled_back", ok,
            f"1.2.0 failed its health check on the first phase's {len(first)} node(s), which "
            f"rolled back to 1.1.0 and reported it; the other validators halted it "
            f"({'; '.join(sorted(reasons))[:120]})",
        )  # fmt: skip
        self.world.halt("1.2.0", "failed health checks in the canary phase")
        self.view.say("governance confirms the halt with a signed halt document in the index")
        # the later phases open while halted: nobody installs it
        wait_until = start + CANARY_SECONDS + PHASE_SECONDS + 6
        self.wait(lambda: time.time() >= wait_until, CANARY_SECONDS + 2 * PHASE_SECONDS + 10)
        clean = not any(tried(n) for n in later) and self.on("1.1.0")
        rollbacks = sum(1 for n in self.online for h in history(n.path) if _rolled_back(h))
        self.figures["rollbacks"] = rollbacks
        self.check(
            "no_later_phase_installed_1_2_0", ok and clean,
            f"its later phases opened halted: none of their {len(later)} nodes installed it",
        )  # fmt: skip

    def protocol_update(self) -> None:
        self.view.step = "protocol update"
        self.view.phases = {}
        w = self.world
        window = VOTE_WINDOW + 3 * len(self.online)  # each validator's `node vote` has to run
        height = self.height() + math.ceil(window / BLOCK) + ACTIVATION_BLOCKS
        w.proposal("2.0.0", window=window, grace=180, height=height)
        self.view.say(
            f"proposal {PROPOSAL}: protocol 2 (release 2.0.0), 75% of the validators' weight, "
            f"signalling for {window} s, activation at height {height}"
        )
        proposed = self.view.elapsed()
        votes = self.vote(time.monotonic() + window - 4)
        self.figures["votes"] = len(votes)
        self.view.say(f"{len(votes)} of {len(self.online)} validators voted for it")
        tracker = f"coordination:tracker:{PROPOSAL}:1"

        def locked(node: DemoNode) -> bool:
            return bool((meta(node.path, tracker) or {}).get("locked_in_by"))

        locked_in = self.wait(lambda: all(locked(n) for n in self.online), window + 40)
        self.view.say(
            f"locked in on every node (height {self.height()}), activation at {height}"
            if locked_in
            else "not locked in everywhere"
        )
        done = self.wait(lambda: self.on("2.0.0"),
                         max(0, height - self.height()) * BLOCK + 60)  # fmt: skip
        if done:
            self.figures["proposal_to_active_s"] = round(self.view.elapsed() - proposed, 1)
        heights = {n.name: (meta(n.path, tracker) or {}).get("active_height") for n in self.online}
        same = set(heights.values()) == {height}
        self.figures["activation_height"] = height
        self.figures["activation_heights"] = heights
        self.check(
            "protocol_active_same_height", locked_in and done and same,
            f"protocol 2 locked in and ACTIVE on every online node at height {height}: "
            f"{sorted(set(heights.values()), key=str)}",
        )  # fmt: skip

    def vote(self, deadline: float) -> set[str]:
        """Every online validator runs ``node vote`` (in parallel; again a second later while
        its node does not know the proposal yet) until ``deadline``; those that voted."""
        votes: set[str] = set()
        running: dict[str, Proc] = {}
        tries: dict[str, int] = {}
        while len(votes) < len(self.online) and time.monotonic() < deadline:
            for node in self.online:
                proc = running.get(node.name)
                if node.name in votes or (proc is not None and proc.alive()):
                    continue
                if proc is not None:
                    running.pop(node.name)
                    if self.procs.stop(proc.name) == 0:
                        votes.add(node.name)
                        continue
                tries[node.name] = tries.get(node.name, 0) + 1
                args = cli_args("node", "vote", str(node.path), "--proposal", PROPOSAL, "--json")
                running[node.name] = self.procs.start(f"vote-{node.name}-{tries[node.name]}", args)
            self.view.refresh()
            time.sleep(0.5)
        for name, proc in running.items():
            if self.procs.stop(proc.name) == 0:
                votes.add(name)
        return votes

    def offline_returns(self) -> None:
        self.view.step = "the offline node returns"
        node = self.offline
        self.start_agent(node)
        self.view.say(f"{node.name} starts: it missed 1.0.0 to 2.0.0, the halt and the votes")
        started = self.view.elapsed()
        by_source: dict[str, dict[str, int]] = {}  # version -> source -> bytes

        def caught_up() -> bool:
            last = last_update_sources(node)
            if last is not None and last[1]:
                by_source[last[0]] = last[1]
            return node.current() == "2.0.0"

        done = self.wait(caught_up, 150)
        caught_up()
        self.figures["offline_catch_up_s"] = (
            round(self.view.elapsed() - started, 1) if done else None
        )
        ipfs = sum(n for per in by_source.values() for s, n in per.items() if is_ipfs(s))
        other = sum(n for per in by_source.values() for s, n in per.items() if not is_ipfs(s))
        self.figures["offline_bytes_by_source"] = by_source
        self.figures["offline_ipfs_bytes"] = ipfs
        past = history(node.path)
        never_bad = not any(h["to"] == "1.2.0" for h in past)
        self.check(
            "offline_node_caught_up", done and never_bad,
            f"{node.name} caught up to 2.0.0 "
            f"({' -> '.join(str(h['to']) for h in past if h['to'])}), never installing 1.2.0; "
            f"{_mb(ipfs)} over IPFS from its peers, {_mb(other)} from the origin's HTTP",
        )  # fmt: skip

    def finish(self) -> dict[str, Any]:
        self._show_origin()
        blobs = self.origin_copies()
        fetched = sum(r.fetched for r in self.view.rows.values())
        sent = sum(b["http"] + b["bittorrent"] for b in blobs)
        counters = self.origin_counters()
        http_total = int((counters.get("http") or {}).get("bytes_sent", 0))
        self.figures.update(
            duration_s=round(self.view.elapsed(), 1),
            nodes=self.count,
            origin_blob_bytes=sent,
            origin_http_bytes_total=http_total,
            nodes_fetched_bytes=fetched,
            peer_bytes=max(0, fetched - sent),
            origin_copies_max=max(
                (
                    b["copies"]
                    for b in blobs
                    if b["kind"] == "artifact" and b["http"] + b["bittorrent"]
                ),
                default=0.0,
            ),
            origin_blobs=[b for b in blobs if b["http"] + b["bittorrent"]],
            coverage=self.view.series,
            installed_at=self.installed_at,
        )
        return self.figures


def _rolled_back(entry: dict[str, Any]) -> bool:
    """A history entry of a rollback: an operator's or the agent's, or an install that failed
    its health check after the switch and went back."""
    return "roll" in str(entry["action"]) or entry["action"] == "failed"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _epoch(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
