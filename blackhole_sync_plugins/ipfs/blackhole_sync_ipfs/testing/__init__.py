"""Test kit: a node process driven over JSON lines (:class:`NodeProcess`: an engine node, or
with ``script=TRANSPORT_SCRIPT`` the transport and the core around it), the Kubo RPC facade
(:mod:`.rpc_facade`), and helpers. Used by this plugin's tests; reusable by the core's."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import Process

__all__ = ["NODE_SCRIPT", "TRANSPORT_SCRIPT", "NodeProcess", "NodeProcessError"]

#: The engine node script (:mod:`.node_script`): ``--repo`` is given.
NODE_SCRIPT = "blackhole_sync_ipfs.testing.node_script"
#: The transport script (:mod:`.transport_script`): its arguments are ``extra_args``.
TRANSPORT_SCRIPT = "blackhole_sync_ipfs.testing.transport_script"


class NodeProcessError(Exception):
    """A request to a node process failed; ``error`` is the engine's exception class name."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message


class NodeProcess:
    """A ``node_script`` subprocess (one embedded node) and a sequential client for it.

    ``async with NodeProcess(workdir, backend="trio") as node: cid = await node.call("add", path=...)``
    The process runs in ``workdir``: its stderr goes to ``workdir/node.log`` and libkubo's own
    log to ``workdir/kubo.log``. Leaving the context closes
    the node (or kills the process if it does not stop in time).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        backend: str = "asyncio",
        rpc_facade: bool = False,
        extra_args: tuple[str, ...] = (),
        python_args: tuple[str, ...] = ("-W", "error"),
        start_timeout: float = 60.0,
        script: str = NODE_SCRIPT,
    ) -> None:
        self.workdir = workdir
        self.backend = backend
        self.rpc_facade = rpc_facade
        self.extra_args = extra_args
        self.python_args = python_args
        self.start_timeout = start_timeout
        self.script = script
        self.ready: dict[str, Any] = {}
        self.closed_report: dict[str, Any] | None = None
        self._process: Process | None = None
        self._buffer = b""
        self._next_id = 0
        self._lock = anyio.Lock()
        self._log: Any = None

    @property
    def peer_id(self) -> str:
        return str(self.ready["peer_id"])

    @property
    def address(self) -> str:
        return str(self.ready["addresses"][0])

    @property
    def rpc_url(self) -> str | None:
        return self.ready.get("rpc")

    async def __aenter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "node.log", "ab")
        if self.script == NODE_SCRIPT:
            args = ["--repo", str(self.workdir / "NODE" / "ipfs")]
        else:
            args = ["--workdir", str(self.workdir)]
        cmd = [
            sys.executable,
            *self.python_args,
            "-m",
            self.script,
            *args,
            "--backend",
            self.backend,
            *(["--rpc-facade"] if self.rpc_facade else []),
            *self.extra_args,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        # libkubo appends its log to ./kubo.log: keep it in the node's directory.
        self._process = await anyio.open_process(cmd, stderr=self._log, env=env, cwd=self.workdir)
        try:
            with anyio.fail_after(self.start_timeout):
                self.ready = await self._read_json()
            if self.ready.get("event") != "ready":
                raise RuntimeError(f"node process did not start: {self.ready}")
        except BaseException:
            await self._kill()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _read_json(self) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        while b"\n" not in self._buffer:
            try:
                chunk = await process.stdout.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise RuntimeError("node process exited (see node.log)") from None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        value = json.loads(line)
        assert isinstance(value, dict)
        return value

    async def call(self, op: str, *, call_timeout: float = 120.0, **args: Any) -> Any:
        """Send one request and return its result (raises :class:`NodeProcessError`).

        ``args`` are the request's fields (e.g. ``timeout`` of a ``get``); ``call_timeout``
        bounds the wait for the answer."""
        async with self._lock:
            process = self._process
            if process is None or process.stdin is None:
                raise RuntimeError("node process not running")
            self._next_id += 1
            ident = self._next_id
            await process.stdin.send((json.dumps({"id": ident, "op": op, **args}) + "\n").encode())
            with anyio.fail_after(call_timeout):
                while True:
                    reply = await self._read_json()
                    if reply.get("id") == ident:
                        break
        if not reply.get("ok"):
            raise NodeProcessError(str(reply.get("error")), str(reply.get("message")))
        return reply.get("result")

    async def close(self, timeout: float = 30.0) -> dict[str, Any] | None:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        """Close the node; returns its ``closed`` report (threads, sockets left)."""
        if self._process is None:
            return self.closed_report
        try:
            with anyio.fail_after(timeout):
                await self.call("close", call_timeout=timeout)
                assert self._process.stdin is not None
                await self._process.stdin.aclose()  # the script's stdin reader ends too
                while True:
                    report = await self._read_json()
                    if report.get("event") == "closed":
                        self.closed_report = report
                        break
                await self._process.wait()
        except (TimeoutError, RuntimeError, NodeProcessError):
            pass
        finally:
            await self._kill()
        return self.closed_report

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()
        if self._log is not None:
            self._log.close()
            self._log = None
