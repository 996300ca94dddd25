"""Drive gossip_node.py processes from tests: spawn, command, kill.

Each node is a real GossipHost in its own process on 127.0.0.1. A reader
thread per process turns its stdout into a queue, so every wait has a timeout
and a dead node fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from nacl.signing import SigningKey

from blackhole_sync.testing.timeouts import scaled

NODE_SCRIPT = Path(__file__).with_name("gossip_node.py")
PUBLISHER = SigningKey(bytes(range(32)))
PUBLISHER_PUB = bytes(PUBLISHER.verify_key).hex()
FORGER = SigningKey(bytes(range(1, 33)))


def signed(seq: int, text: str = "hello", key: SigningKey = PUBLISHER) -> bytes:
    """A test payload: publisher-signed seq + text."""
    return bytes(key.sign(seq.to_bytes(8, "big") + text.encode()))


def seed(n: int) -> str:
    return bytes([n % 251 + 1] * 32).hex()


def peer_id_of(seed_hex: str) -> str:
    """The peer id a node started with this seed will have."""
    return ID.from_pubkey(create_new_key_pair(bytes.fromhex(seed_hex)).public_key).to_base58()


def addr_of(port: int, seed_hex: str) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(seed_hex)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    def __init__(self, settings: dict[str, Any], script: Path = NODE_SCRIPT) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(NODE_SCRIPT.parent.parent), env.get("PYTHONPATH", "")]
        )
        settings = {"publisher": PUBLISHER_PUB, **settings}
        self.settings = settings
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "error", str(script), json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        self.peer_id = peer_id_of(settings["seed"]) if "seed" in settings else ""
        self.addrs: list[str] = []

    def wait_ready(self, timeout: float = 120.0) -> NodeProcess:
        """Wait for the ready line (imports dominate: py-libp2p takes seconds on a busy box)."""
        ready = self._get(scaled(timeout))
        assert ready.get("event") == "ready", ready
        assert not self.peer_id or ready["peer_id"] == self.peer_id
        self.peer_id = ready["peer_id"]
        self.addrs = ready["addrs"]
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def _get(self, timeout: float) -> dict[str, Any]:
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("node did not answer in time") from None
        if item is None:
            raise RuntimeError(f"node exited (rc={self.proc.poll()})")
        return item

    def call(self, cmd: str, timeout: float = 30.0, **kwargs: Any) -> dict[str, Any]:
        self._next_id += 1
        request = {"id": self._next_id, "cmd": cmd, **kwargs}
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + scaled(timeout)
        while True:
            reply = self._get(max(0.01, deadline - time.monotonic()))
            if reply.get("id") == self._next_id:
                return reply

    @property
    def addr(self) -> str:
        return self.addrs[0]

    def received_payloads(self, kind: str = "announcement") -> list[str]:
        return [m["payload"] for m in self.call("received")["messages"] if m["kind"] == kind]

    def counters(self) -> dict[str, int]:
        return self.call("counters")["counters"]

    def request_stop(self) -> None:
        """Close stdin: the node shuts its host down and exits."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop(self, grace: float = 5.0) -> None:
        """Stop gracefully if possible; kill otherwise. Never leaves the process behind."""
        self.request_stop()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._reader.join(timeout=5)


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Network:
    """The processes of one test; :meth:`close` kills every one of them."""

    def __init__(self) -> None:
        self.nodes: list[NodeProcess] = []

    def spawn(self, settings: dict[str, Any], script: Path = NODE_SCRIPT) -> NodeProcess:
        node = NodeProcess(settings, script)
        self.nodes.append(node)
        return node

    def start(self, *settings: dict[str, Any]) -> list[NodeProcess]:
        """Spawn all at once (imports dominate start-up), then wait for each."""
        nodes = [self.spawn(s) for s in settings]
        return [n.wait_ready() for n in nodes]

    def close(self) -> None:
        """Ask every node to stop at once, then reap (or kill) each one."""
        for node in self.nodes:
            node.request_stop()
        deadline = time.monotonic() + 5.0
        for node in self.nodes:
            node.stop(grace=max(0.1, deadline - time.monotonic()))
