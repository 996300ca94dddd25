"""What the demo shows: each node's state read from its directory (never through its lock), a
live terminal view (rich), and at the end the coverage curve and the summary table.

A node's row: its version (``current``), its phase in the rollout in play, download progress
(bytes in its download and staging areas), the source mix of what it fetched (from its
BitTorrent status: bytes from other peers vs from the origin's seed and web seed; from its
updates' metrics: bytes by IPFS, which only the nodes serve; the rest of what its history says
it fetched came over HTTP from the origin) and health (the state of its
current version, rollbacks). These rows are the nodes' own reports, for display only: the
origin's copies are computed from the origin's counters (:mod:`.story`).
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field

from .world import PHASES, DemoNode

__all__ = ["NodeRow", "View", "is_ipfs", "last_update_sources", "read_node"]

BARS = " ▁▂▃▄▅▆▇█"


@define
class NodeRow:
    name: str
    state: str  # "running", "offline", "stopped"
    version: str | None
    health: str
    rollbacks: int
    fetched: int
    from_peers: int
    from_origin_bt: int
    downloading: int
    history: list[dict[str, Any]] = field(factory=list)

    @property
    def from_origin(self) -> int:
        """Bytes from the origin: its BitTorrent seed and web seed, and HTTP (the rest)."""
        return max(0, self.fetched - self.from_peers)


#: Seconds a read of a node's state database keeps retrying while a writer holds it (an agent
#: committing with synchronous=FULL on a loaded machine can hold it past one busy timeout).
READ_PATIENCE = 10.0


def _query(db: Path, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query, [] when the database is not there (yet). A locked or busy
    database is read again until :data:`READ_PATIENCE` runs out: an empty answer must mean
    "nothing there", not "could not look" (the story's checks read histories through it)."""
    deadline = time.monotonic() + READ_PATIENCE
    while True:
        if not db.exists():
            return []
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
            try:
                return list(conn.execute(sql, tuple(args)).fetchall())
            finally:
                conn.close()
        except sqlite3.OperationalError:
            if time.monotonic() >= deadline:
                return []
            time.sleep(0.2)
        except sqlite3.Error:
            return []


def meta(node: Path, key: str) -> Any:
    rows = _query(node / "state.db", "SELECT value FROM meta WHERE key=?", (key,))
    if not rows or rows[0][0] is None:
        return None
    try:
        return json.loads(rows[0][0])
    except ValueError:
        return rows[0][0]


def history(node: Path) -> list[dict[str, Any]]:
    rows = _query(
        node / "state.db",
        "SELECT time, action, from_version, to_version, method, bytes_fetched FROM history "
        "ORDER BY id",
    )
    keys = ("time", "action", "from", "to", "method", "bytes")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _bytes_in(directory: Path, since: float) -> int:
    """Bytes on disk of the files under ``directory`` written to after ``since`` (downloads
    in progress; finished ones stay put a while)."""
    total = 0
    with contextlib.suppress(OSError):
        for path in directory.rglob("*"):
            with contextlib.suppress(OSError):
                info = path.stat()
                if path.is_file() and info.st_mtime >= since:
                    total += info.st_blocks * 512
    return total


def last_update_sources(node: DemoNode) -> tuple[str, dict[str, int]] | None:
    """The version of the node's last update and the bytes it fetched per source (a source
    URL, or a peer locator such as ``cid:...``), from its ``last_update_metrics``."""
    last = meta(node.path, "last_update_metrics")
    if not isinstance(last, dict) or not last.get("version"):
        return None
    sources = (last.get("download") or {}).get("bytes_by_source") or {}
    return str(last["version"]), {str(k): int(v) for k, v in sources.items()}


def is_ipfs(source: str) -> bool:
    """A fetch source that was an IPFS CID (``cid:...``, an ``ipfs://`` URL)."""
    return source.startswith(("cid:", "ipfs:"))


def read_node(node: DemoNode, state: str) -> NodeRow:
    path = node.path
    version = node.current()
    health = "-"
    if version is not None:
        rows = _query(path / "state.db", "SELECT state FROM versions WHERE version=?", (version,))
        health = rows[0][0] if rows else "?"
    past = history(path)
    rollbacks = sum(1 for h in past if "roll" in str(h["action"]) or h["action"] == "failed")
    fetched = sum(int(h["bytes"] or 0) for h in past)
    peers = origin_bt = 0
    with contextlib.suppress(OSError, ValueError):
        bt = json.loads((path / "bittorrent" / "status.json").read_text())
        origin_bt = int(bt.get("from_origin", 0)) + int(bt.get("from_web_seeds", 0))
        peers = max(0, int(bt.get("from_peers", 0)) - int(bt.get("from_origin", 0)))
    since = time.time() - 2
    downloading = sum(
        _bytes_in(path / sub, since) for sub in ("staging", "partial", "bittorrent/downloads")
    )
    return NodeRow(
        node.name, state, version, health, rollbacks, fetched, min(peers, fetched),
        origin_bt, downloading, past,
    )  # fmt: skip


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class View:
    """The live view and the figures over time (see the module docstring)."""

    def __init__(self, nodes: list[DemoNode], *, live: bool, console: Any = None) -> None:
        self.nodes = nodes
        self.live_enabled = live
        self.console = console
        self.step = "starting"
        self.t0 = time.monotonic()
        self.states: dict[str, str] = {}
        self.phases: dict[str, int | None] = {}
        self.release: str | None = None
        self.rows: dict[str, NodeRow] = {}
        #: node -> version -> bytes its update to that version fetched over IPFS
        self.ipfs_bytes: dict[str, dict[str, int]] = {}
        self.series: list[dict[str, Any]] = []
        self.origin: dict[str, Any] = {}
        self.log: list[str] = []
        self._live: Any = None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @contextlib.contextmanager
    def running(self) -> Iterator[View]:
        if not self.live_enabled:
            yield self
            return
        from rich.live import Live

        with Live(self.render(), console=self.console, refresh_per_second=4) as live:
            self._live = live
            try:
                yield self
            finally:
                live.update(self.render())
                self._live = None

    def say(self, text: str) -> None:
        line = f"[{self.elapsed():6.1f}s] {text}"
        self.log.append(line)
        if self._live is not None:
            self._live.update(self.render())
        elif self.console is not None:
            self.console.print(line, markup=False, highlight=False)

    def refresh(self) -> None:
        """Read every node again and add a point to the coverage series."""
        for node in self.nodes:
            row = read_node(node, self.states.get(node.name, "not started"))
            last = last_update_sources(node)
            if last is not None:  # bytes by IPFS, per update (only the last one is kept)
                seen = self.ipfs_bytes.setdefault(node.name, {})
                seen[last[0]] = sum(n for src, n in last[1].items() if is_ipfs(src))
            ipfs = sum(self.ipfs_bytes.get(node.name, {}).values())
            row.from_peers = min(row.fetched, row.from_peers + ipfs)
            self.rows[node.name] = row
        counts: dict[str, int] = {}
        for row in self.rows.values():
            if row.version is not None and row.state != "not started":
                counts[row.version] = counts.get(row.version, 0) + 1
        point = {"t": round(self.elapsed(), 1), "versions": counts}
        if not self.series or self.series[-1]["versions"] != counts:
            self.series.append(point)
        if self._live is not None:
            self._live.update(self.render())

    # -- rendering -----------------------------------------------------------------------

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        table = Table(title=f"blackhole-sync demo -- {self.step}  ({self.elapsed():.0f} s)")
        for column in ("node", "version", "phase", "download", "peers / origin", "health"):
            table.add_column(column)
        for node in self.nodes:
            row = self.rows.get(node.name)
            state = self.states.get(node.name, "not started")
            if row is None:
                table.add_row(node.name, "-", "-", "-", "-", state)
                continue
            phase = self.phases.get(node.name)
            phase_text = "-" if phase is None else f"{phase}: {PHASES[phase][0]}"
            download = _mb(row.downloading) if row.downloading else "-"
            mix = "-"
            if row.fetched:
                share = 100 * row.from_peers // max(1, row.fetched)
                mix = f"{share}% peers, {_mb(row.from_origin)} origin"
            health = row.health + (f", {row.rollbacks} rollback(s)" if row.rollbacks else "")
            if state != "running":
                health = f"{state}; {health}"
            table.add_row(node.name, row.version or "-", phase_text, download, mix, health)
        footer = ""
        if self.origin:
            footer = (
                f"origin sent {_mb(self.origin.get('blob_bytes', 0))} of blobs "
                f"({self.origin.get('copies_text', '')})"
            )
        return Group(table, footer, *self.log[-6:])

    def curve(self, online: int) -> str:
        """The coverage curve: per version, how many nodes ran it over time (one column per
        time slice, bar height = share of the nodes)."""
        if not self.series:
            return ""
        end = max(self.elapsed(), 1.0)
        width = 60
        versions = sorted(
            {v for p in self.series for v in p["versions"]},
            key=lambda v: tuple(int(x) for x in v.split(".")),
        )
        lines = [f"coverage over {end:.0f} s (each column {end / width:.1f} s; full bar = "
                 f"{online} nodes)"]  # fmt: skip
        for version in versions:
            cells = []
            for i in range(width):
                t = end * (i + 1) / width
                point = next((p for p in reversed(self.series) if p["t"] <= t), None)
                count = 0 if point is None else point["versions"].get(version, 0)
                cells.append(BARS[min(8, round(8 * count / max(1, online)))])
            lines.append(f"{version:>7} |{''.join(cells)}|")
        return "\n".join(lines)

    def summary(self, figures: dict[str, Any], steps: dict[str, bool]) -> Any:
        from rich.table import Table

        table = Table(title="summary")
        table.add_column("what")
        table.add_column("result")
        for name, ok in steps.items():
            label = re.sub(r"_(\d+)_(\d+)_(\d+)", r" \1.\2.\3", name).replace("_", " ")
            table.add_row(label, "ok" if ok else "FAILED")
        for key in ("duration_s", "origin_blob_bytes", "peer_bytes", "origin_copies_max", "offline_catch_up_s", "proposal_to_active_s",
                    "rollbacks", "votes"):  # fmt: skip
            if key in figures:
                table.add_row(key.replace("_", " "), str(figures[key]))
        for version, seconds in figures.get("time_to_full_coverage_s", {}).items():
            table.add_row(f"time to full coverage {version}", f"{seconds} s")
        for blob in figures.get("origin_blobs", []):
            table.add_row(
                f"origin copies {blob['version']} {blob['kind']}",
                f"{blob['copies']} ({_mb(blob['http'])} HTTP + {_mb(blob['bittorrent'])} BT "
                f"of {_mb(blob['length'])})",
            )
        return table
