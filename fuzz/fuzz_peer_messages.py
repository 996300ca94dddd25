"""Fuzz target: ``PeerMessageGate.decide`` over arbitrary payloads, per message kind.

Whatever a peer sends, the gate decides it -- accept, reject or ignore -- and raises nothing
(its contract: a bug in a check rejects the message). The first byte picks the kind (every kind
the gate knows, and one it does not), the second whether the rest is the payload as delivered
or the ``signed`` object of a document re-signed with the keys its kind needs (so the checks
after the signatures run on hostile content too). One gate lives across inputs, as on a node:
its seq floors and recent-message memory are part of what is fuzzed. Invariants: an accepted
message carries its document, and deciding the same bytes again never accepts them twice.

    python fuzz/fuzz_peer_messages.py -max_total_time=600 fuzz/corpus/peer_messages
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["blackhole_sync.network", "blackhole_sync.documents"]):
    from _world import REF, WORLD

    from blackhole_sync.documents import MAX_SIZES, Envelope, canonical_bytes, strict_loads
    from blackhole_sync.errors import BlackholeSyncError
    from blackhole_sync.fetch import PeerMessage, Verdict
    from blackhole_sync.network import KINDS, PeerMessageGate

from _harness import fuzz_main

#: Every kind the gate knows, and one it does not.
MESSAGE_KINDS = [*sorted(KINDS), "unknown-kind"]
#: The document type each message kind carries.
DOC_TYPE = {"rollout": "rollout", "status": "status", "health": "health", "vote": "vote"}
ROLE = {
    "announcement": "index",
    "downgrade": "release",
    "halt": "governance",
    "rollout": "governance",
    "proposal": "governance",
    "validators": "governance",
    "deprecation": "governance",
}


class Floors:
    """In-memory seq floors (a node keeps them in its state database)."""

    def __init__(self) -> None:
        self.floors: dict[tuple[str, str], int] = {}

    def get_seq_floor(self, kind: str, node_id: str) -> int | None:
        return self.floors.get((kind, node_id))

    def set_seq_floor(self, kind: str, node_id: str, seq: int) -> None:
        self.floors[(kind, node_id)] = seq


GATE = PeerMessageGate(lambda: WORLD.root, Floors(), clock=lambda: REF)


def _payload(kind: str, resign: bool, body: bytes) -> bytes | None:
    if not resign:
        return body
    try:
        obj = strict_loads(body, max_size=MAX_SIZES.get(kind, 64 * 1024))
    except BlackholeSyncError:
        return None
    if not isinstance(obj, dict):
        return None
    signers = WORLD.signers(ROLE.get(kind, "node"))
    return Envelope.sign({**obj, "_type": DOC_TYPE.get(kind, kind)}, signers).raw


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    kind = MESSAGE_KINDS[data[0] % len(MESSAGE_KINDS)]
    payload = _payload(kind, bool(data[1] & 1), data[2:])
    if payload is None:
        return
    message = PeerMessage(kind, payload, "fuzz-peer", "fuzz")
    decided = GATE.decide(message)  # raises nothing, whatever the bytes
    assert decided.verdict in (Verdict.ACCEPT, Verdict.REJECT, Verdict.IGNORE)
    if decided.verdict is Verdict.ACCEPT:
        assert decided.document is not None, f"{kind}: accepted without a document"
        assert GATE.accepted(message) == decided
        again = GATE.decide(message)
        assert again.verdict is not Verdict.ACCEPT, f"{kind}: the same bytes accepted twice"


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, data in WORLD.seeds().items():
        kind = name if name in MESSAGE_KINDS else None
        if kind is None:
            continue
        i = MESSAGE_KINDS.index(kind)
        out[f"{kind}-delivered"] = bytes([i, 0]) + data
        signed = Envelope.from_bytes(data).signed
        out[f"{kind}-resigned"] = bytes([i, 1]) + canonical_bytes(dict(signed))
    for i, kind in enumerate(MESSAGE_KINDS):
        out[f"{kind}-bare"] = bytes([i, 1]) + b'{"seq":1,"network_id":"blackhole"}'
    return out


if __name__ == "__main__":
    fuzz_main(test_one_input, seeds)
