"""Fuzz targets (atheris) for what a remote peer's bytes reach in a gossip node.

    python fuzz_gossip.py TARGET [libFuzzer flags, e.g. -runs=2000 -max_len=4096]

Targets:

``hello``
    the ``/blackhole/hello/1`` frame (at most ``hello_max_size`` bytes) and the default
    admission decision;
``query_request``
    the ``/blackhole/<network>/query/1`` request: one frame naming a kind;
``query_response``
    a query answer: a counted list of frames, read as the engine reads it (item and count
    caps), each item then decided by the core's gate as a catch-up answer is;
``peer_record``
    a peer-exchange answer: a list of peer records, each parsed and offered to the bounded
    peer book under the loopback-only address policy;
``gate``
    :meth:`blackhole_sync.network.PeerMessageGate.decide` over arbitrary bytes of every kind
    the gossip topics carry (the first byte picks the kind), half the time a genuine signed
    announcement with bytes overwritten, so the parser and the signature checks are reached.

Each target reads exactly as the engine does, through an in-memory stream (the readers only
``await stream.read(n)``, so the coroutine is driven without an event loop). An exception the
engine treats as a peer's fault (its ``_PEER_IO_ERRORS``) is the expected outcome of bad input;
anything else escaping is a bug and makes the fuzzer stop with a crash. The gate must never
raise at all.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["blackhole_sync_gossip", "blackhole_sync"]):
    from blackhole_sync_gossip import DEFAULT_KINDS, GossipConfig
    from blackhole_sync_gossip._host import _PEER_IO_ERRORS, GossipHost
    from blackhole_sync_gossip._peers import AddressPolicy, PeerBook
    from blackhole_sync_gossip._wire import (
        decode_peer_record,
        read_frame,
        read_list,
        read_query_request,
    )

    from blackhole_sync import PeerMessage, PrivateKey, Repository, Verdict
    from blackhole_sync.network import PeerMessageGate, make_announcement

from libp2p.peer.id import ID

CONFIG = GossipConfig(network="fuzz", identity_seed=b"\x07" * 32, loopback_only=True)


class BytesStream:
    """The part of a libp2p stream the frame readers use, over fixed bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    async def read(self, n: int | None = None) -> bytes:
        if n is None or n < 0:
            n = len(self._data) - self._pos
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(chunk)
        return chunk


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (in-memory reads) to completion."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("an in-memory read suspended")


def peer_fault(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; the engine's peer-fault errors are fine, anything else propagates."""
    try:
        return fn()
    except _PEER_IO_ERRORS:
        return None


# -- targets ----------------------------------------------------------------------------------

_HOST = GossipHost(CONFIG, validate=lambda kind, payload, peer: None)  # type: ignore[arg-type,return-value]
_PEER = ID.from_base58("12D3KooWRndVhVZPCiQwHBBBdg769GyrPUW13zxwqQyf9r3ANaba")


def hello(data: bytes) -> None:
    frame = peer_fault(lambda: drive(read_frame(BytesStream(data), CONFIG.hello_max_size)))
    if frame is not None:
        assert len(frame) <= CONFIG.hello_max_size
        assert _HOST._admits(_PEER, frame) is (frame == CONFIG.hello)


def query_request(data: bytes) -> None:
    kind = peer_fault(lambda: drive(read_query_request(BytesStream(data))))
    if kind is not None:
        assert len(kind.encode()) <= 64


def _gate_world() -> tuple[PeerMessageGate, bytes]:
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-gossip-"))
    key = PrivateKey(b"\x05" * 32)
    repo = Repository.init(
        tmp / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key.public_key,
        sign_with=[key],
    )  # fmt: skip
    repo.refresh(key)
    index = repo.index_bytes()
    assert index is not None
    announcement = make_announcement(index, repo.root(), "stable", key)
    root = repo.root()

    class Floors:
        def __init__(self) -> None:
            self.floors: dict[tuple[str, str], int] = {}

        def get_seq_floor(self, kind: str, node_id: str) -> int | None:
            return self.floors.get((kind, node_id))

        def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
            self.floors[(kind, node_id)] = max(seq, self.floors.get((kind, node_id), 0))

    return PeerMessageGate(lambda: root, Floors()), announcement


_GATE: tuple[PeerMessageGate, bytes] | None = None


def _decide(kind: str, payload: bytes) -> None:
    global _GATE
    if _GATE is None:
        _GATE = _gate_world()
    decided = _GATE[0].decide(PeerMessage(kind, payload, "fuzz", "gossip"))
    assert decided.verdict in (Verdict.ACCEPT, Verdict.REJECT, Verdict.IGNORE)


def query_response(data: bytes) -> None:
    items: list[bytes] = []
    peer_fault(
        lambda: drive(
            read_list(
                BytesStream(data),
                max_items=CONFIG.query_max_items,
                max_item_size=CONFIG.max_message_size,
                into=items,
            )
        )
    )
    assert len(items) <= CONFIG.query_max_items
    for item in items:
        assert len(item) <= CONFIG.max_message_size
        _decide("announcement", item)


def peer_record(data: bytes) -> None:
    records: list[bytes] = []
    peer_fault(
        lambda: drive(read_list(BytesStream(data), max_items=16, max_item_size=1024, into=records))
    )
    book = PeerBook(
        self_id=_PEER,
        policy=AddressPolicy(loopback_only=True),
        max_peers=8,
        max_addrs=CONFIG.max_addrs_per_peer,
        backoff_initial=1.0,
        backoff_max=8.0,
    )
    for record in [*records, data[:1024]]:
        parsed = peer_fault(lambda r=record: decode_peer_record(r, CONFIG.max_addrs_per_peer))
        if parsed is None:
            continue
        peer, addrs = parsed
        assert len(addrs) <= CONFIG.max_addrs_per_peer
        book.add(peer, addrs)
        for addr in book.addrs_of(peer):
            assert AddressPolicy(loopback_only=True).allows(addr)
    assert len(book) <= 8


def gate(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kinds = [*DEFAULT_KINDS, "conformance"]
    kind = kinds[fdp.ConsumeIntInRange(0, len(kinds) - 1)]
    if fdp.ConsumeBool():
        global _GATE
        if _GATE is None:
            _GATE = _gate_world()
        payload = bytearray(_GATE[1])
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            if not payload:
                break
            payload[fdp.ConsumeIntInRange(0, len(payload) - 1)] = fdp.ConsumeInt(1) & 0xFF
        _decide("announcement" if fdp.ConsumeBool() else kind, bytes(payload))
    else:
        _decide(kind, fdp.ConsumeBytes(fdp.remaining_bytes()))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "hello": hello,
    "query_request": query_request,
    "query_response": query_response,
    "peer_record": peer_record,
    "gate": gate,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv[1]]
    os.environ.setdefault("BLACKHOLE_SYNC_FUZZ", "1")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
