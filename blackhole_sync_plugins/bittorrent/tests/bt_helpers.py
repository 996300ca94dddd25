"""Driving test nodes (bt_node.py), a Range-capable web seed and a corrupt peer in subprocesses.

Every process is started by a :class:`Cluster`, which kills what is still running at the end
and then checks that each port a process reported is free again (TCP and UDP).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
NODE_SCRIPT = HERE / "bt_node.py"
WEBSEED_SCRIPT = HERE / "bt_webseed.py"
BADPEER_SCRIPT = HERE / "bt_badpeer.py"
TRANSPORT_SCRIPT = HERE / "bt_transport.py"

Message = dict[str, Any]


def make_blob(directory: Path, size: int, seed: int = 0) -> tuple[Path, str]:
    """A file of ``size`` pseudo-random bytes named by its sha256; (path, sha256 hex)."""
    directory.mkdir(parents=True, exist_ok=True)
    chunks = []
    block = hashlib.sha256(b"blob-%d" % seed).digest()
    while sum(map(len, chunks)) < size:
        block = hashlib.sha512(block).digest()
        chunks.append(block * 64)
    data = b"".join(chunks)[:size]
    digest = hashlib.sha256(data).hexdigest()
    path = directory / digest
    path.write_bytes(data)
    return path, digest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Proc:
    """A child process speaking JSON lines."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.messages: queue.Queue[Message] = queue.Queue()
        self.seen: list[Message] = []
        self.ports: set[int] = set()
        env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
        self._stderr = open(log_dir / f"{name}.stderr", "wb")
        self.popen = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        self.killed = False

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            self.messages.put(message)

    def next_message(self, deadline: float) -> Message:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{self.name}: timed out")
        try:
            message = self.messages.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError(
                f"{self.name}: timed out; log: {self.stderr_text()[-2000:]}"
            ) from None
        self.seen.append(message)
        return message

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 60.0) -> Message:
        """The first message (already seen or new) matching ``predicate``."""
        for message in self.seen:
            if predicate(message):
                return message
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(deadline)
            if predicate(message):
                return message

    def wait_event(self, kind: str, timeout: float = 60.0, **fields: Any) -> Message:
        return self.wait_for(
            lambda m: m.get("event") == kind and all(m.get(k) == v for k, v in fields.items()),
            timeout,
        )

    def drain(self) -> None:
        while True:
            try:
                self.seen.append(self.messages.get_nowait())
            except queue.Empty:
                return

    def send(self, message: Message) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write((json.dumps(message) + "\n").encode())
        self.popen.stdin.flush()

    def stderr_text(self) -> str:
        self._stderr.flush()
        return Path(self._stderr.name).read_text(errors="replace")

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._release()
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.killed = True
            self.popen.kill()
        self.popen.wait(10)
        self._release()

    def _release(self) -> None:
        self._reader.join(5)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._stderr.close()


class NodeProc(Proc):
    """A bt_node.py process."""

    def __init__(
        self, name: str, state: Path, log_dir: Path, *, backend: str, args: list[str]
    ) -> None:
        state.mkdir(parents=True, exist_ok=True)
        super().__init__(
            name, [str(NODE_SCRIPT), "--state", str(state), "--backend", backend, *args], log_dir
        )
        self.backend = backend
        self.port = 0

    def wait_ready(self) -> None:
        ready = self.wait_event("ready", timeout=30)
        self.port = int(ready["port"])
        self.ports.add(self.port)
        self.dht_client_port: int | None = ready["dht_client_port"]
        if self.dht_client_port:
            self.ports.add(self.dht_client_port)

    def request(
        self, cmd: str, *, timeout: float = 60.0, expect_error: bool = False, **fields: Any
    ) -> Message:
        self._next_id += 1
        ident = self._next_id
        self.send({"id": ident, "cmd": cmd, **fields})
        started = time.monotonic()
        reply = self.wait_for(lambda m: m.get("reply") == ident, timeout)
        if os.environ.get("BT_TRACE"):
            print(f"{self.name} {cmd} {time.monotonic() - started:.3f}s", file=sys.stderr)
        if expect_error:
            assert "error" in reply, reply
        elif "error" in reply:
            raise AssertionError(f"{self.name} {cmd}: {reply['error']}: {reply['message']}")
        return reply

    def quit(self, timeout: float = 30.0) -> int | None:
        """Close the engine cleanly and exit; the exit status (None if it had to be killed)."""
        if self.popen.poll() is None:
            self.send({"cmd": "quit"})
        code = self.wait(timeout)
        if code is None:
            self.kill()
        return code


class TransportProc(Proc):
    """A bt_transport.py process: the transport inside the core's PeerNetwork."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        log_dir: Path,
        *,
        backend: str,
        options: dict[str, Any],
        root: Path | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [str(TRANSPORT_SCRIPT), "--workdir", str(workdir), "--backend", backend]
        argv += ["--options", json.dumps(options)]
        if root is not None:
            argv += ["--root", str(root)]
        super().__init__(name, argv, log_dir)
        self.workdir = workdir
        self.address = ""

    def wait_ready(self) -> None:
        ready = self.wait_event("ready", timeout=60)
        self.address = ready["addresses"][0]
        self.ports.add(int(self.address.rsplit(":", 1)[1]))

    def call(self, cmd: str, *, timeout: float = 120.0, **fields: Any) -> Any:
        """Send a request; its result, or AssertionError naming the remote error."""
        reply = self.request_raw(cmd, timeout=timeout, **fields)
        if "error" in reply:
            raise AssertionError(f"{self.name} {cmd}: {reply['error']}: {reply['message']}")
        return reply["result"]

    def request_raw(self, cmd: str, *, timeout: float = 120.0, **fields: Any) -> Message:
        self._next_id += 1
        ident = self._next_id
        self.send({"id": ident, "cmd": cmd, **fields})
        return self.wait_for(lambda m: m.get("reply") == ident, timeout)

    def quit(self, timeout: float = 60.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.send({"cmd": "quit"})
        code = self.wait(timeout)
        if code is None:
            self.kill()
        return code


class Cluster:
    """Starts processes for one test and guarantees none outlives it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def node(
        self,
        name: str,
        *,
        backend: str = "asyncio",
        args: list[str] | None = None,
        state: str | None = None,
    ) -> NodeProc:
        """A node whose engine keeps its state in ``root/<state or name>``."""
        node = NodeProc(
            name, self.root / (state or name), self.logs, backend=backend, args=args or []
        )
        self.procs.append(node)
        node.wait_ready()
        return node

    def transport(
        self,
        name: str,
        *,
        backend: str = "asyncio",
        options: dict[str, Any] | None = None,
        root: Path | None = None,
        start: bool = True,
    ) -> TransportProc:
        """A transport process working in ``root/<name>`` (state in ``root/<name>/NODE``)."""
        proc = TransportProc(
            name, self.root / name, self.logs, backend=backend, options=options or {}, root=root
        )
        self.procs.append(proc)
        if start:
            proc.wait_ready()
        return proc

    def webseed(self, directory: Path) -> tuple[Proc, str]:
        """A Range-capable HTTP server for ``directory``; (process, base URL ending in /)."""
        proc = Proc("webseed", [str(WEBSEED_SCRIPT), str(directory)], self.logs)
        self.procs.append(proc)
        ready = proc.wait_for(lambda m: m.get("event") == "ready", 30)
        proc.ports.add(ready["port"])
        return proc, f"http://127.0.0.1:{ready['port']}/"

    def badpeer(self, torrent: Path, corrupt_file: Path) -> tuple[Proc, int]:
        """A peer that claims every piece of ``torrent`` and serves ``corrupt_file``."""
        proc = Proc("badpeer", [str(BADPEER_SCRIPT), str(torrent), str(corrupt_file)], self.logs)
        self.procs.append(proc)
        ready = proc.wait_for(lambda m: m.get("event") == "ready", 30)
        proc.ports.add(ready["port"])
        return proc, int(ready["port"])

    def close(self) -> None:
        """Quit the nodes cleanly, kill everything else, check that no port is left."""
        codes = {}
        for proc in self.procs:
            if isinstance(proc, (NodeProc, TransportProc)) and not proc.killed:
                codes[proc.name] = proc.quit()
            else:
                proc.kill()
            proc.drain()
        for proc in self.procs:
            assert proc.popen.poll() is not None, f"{proc.name} still running"
        for proc in self.procs:
            for port in proc.ports:
                assert_port_free(port)
        unclean = {name: code for name, code in codes.items() if code != 0}
        assert not unclean, f"nodes that did not close cleanly: {unclean}"


def assert_port_free(port: int) -> None:
    """Binding TCP and UDP 127.0.0.1:port works (TIME_WAIT aside), so nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
