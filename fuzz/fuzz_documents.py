"""Fuzz target: strict parse and verification of every signed document kind.

The first byte of an input picks what it is fed to, the second a document kind
(``blackhole_sync.documents.DOCUMENT_TYPES``); the rest is the document:

0. delivered bytes: ``Envelope.from_bytes`` (size cap, strict parse, canonical bytes), the
   kind's model (``from_dict``), then the signatures against the trusted root's role;
1. the trusted state machine: ``TrustedState`` at the world's root and index, then
   ``update_root``, ``update_index`` or ``update_manifest`` with the bytes;
2. a compromised key holder: the bytes parsed strictly as the ``signed`` object, re-signed
   with the keys that meet the kind's role, then fed as in 0 and 1 -- so the models and the
   state machine's rules run on hostile content that passes the signature check;
3. canonical encoding: ``strict_loads`` then ``canonical_bytes`` is a fixed point, and an
   envelope's ``signed_bytes`` is the canonical encoding of its ``signed``.

A model that parses is also round-tripped: ``from_dict(doc.to_dict())`` gives the same dict.
Refusals are the library's errors; anything else is a crash (see ``_harness.py``).

    python fuzz/fuzz_documents.py -max_total_time=600 fuzz/corpus/documents
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["blackhole_sync.documents"]):
    from _world import WORLD

    from blackhole_sync.documents import (
        DOCUMENT_TYPES,
        MAX_SIZES,
        Envelope,
        MetaFile,
        canonical_bytes,
        strict_loads,
    )
    from blackhole_sync.errors import BlackholeSyncError

from _harness import fuzz_main

KINDS = sorted(DOCUMENT_TYPES)
#: The role whose threshold signs each kind (node documents: the node's own key).
ROLE = {
    "root": "root",
    "index": "index",
    "announcement": "index",
    "release": "release",
    "downgrade": "release",
    "halt": "governance",
    "rollout": "governance",
    "proposal": "governance",
    "validators": "governance",
    "deprecation": "governance",
}


def _model(envelope: Envelope, kind: str) -> None:
    """Build the kind's model; a model that parses must round-trip through ``to_dict``."""
    model = DOCUMENT_TYPES[kind]
    doc = envelope.parse(model.from_dict)
    once = doc.to_dict()
    again = model.from_dict(once).to_dict()
    assert canonical_bytes(again) == canonical_bytes(once), f"{kind}: to_dict does not round-trip"


def _delivered(data: bytes, kind: str) -> None:
    envelope = Envelope.from_bytes(data)
    if envelope.type in DOCUMENT_TYPES:
        _model(envelope, envelope.type)
    role = ROLE.get(envelope.type)
    if role is not None:
        WORLD.root.verify_role(envelope, role)


def _state_machine(data: bytes, kind: str, *, listed: bool = False) -> None:
    state = WORLD.state()
    if kind == "root":
        state.update_root(data)
    elif kind == "index":
        state.update_index(data)
    elif kind == "release":
        if listed:  # an index (signed by the index key) lists exactly these bytes
            index = Envelope.from_bytes(WORLD.index_bytes).signed
            version = Envelope.from_bytes(data).signed.get("version")
            if not isinstance(version, str):
                return
            relisted = _relist(index, version, MetaFile.of(data))
            state.update_index(Envelope.sign(relisted, WORLD.signers("index")).raw)
            state.update_manifest(version, data)
        else:
            state.update_manifest("1.0.0", data)


def _relist(index: dict, version: str, meta: MetaFile) -> dict:  # type: ignore[type-arg]
    channels = {
        name: {**channel, "releases": {**channel.get("releases", {}), version: meta.to_dict()}}
        for name, channel in index["channels"].items()
    }
    return {**index, "version": index["version"] + 1, "channels": channels}


def _signed_by_the_role(body: bytes, kind: str) -> None:
    obj = strict_loads(body, max_size=MAX_SIZES.get(kind, 1 << 20))
    if not isinstance(obj, dict):
        return
    signed = {**obj, "_type": kind}
    envelope = Envelope.sign(signed, WORLD.signers(ROLE.get(kind, "node")))
    _delivered(envelope.raw, kind)
    _state_machine(envelope.raw, kind, listed=True)


def _canonical(body: bytes) -> None:
    obj = strict_loads(body, max_size=1 << 20)
    encoded = canonical_bytes(obj)
    assert canonical_bytes(strict_loads(encoded, max_size=1 << 21)) == encoded, "not a fixed point"
    if isinstance(obj, dict) and isinstance(obj.get("signed"), dict):
        envelope = Envelope.from_bytes(body)
        assert envelope.signed_bytes == canonical_bytes(envelope.signed), "signed_bytes differ"


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, kind, body = data[0] % 4, KINDS[data[1] % len(KINDS)], data[2:]
    try:
        if mode == 0:
            _delivered(body, kind)
        elif mode == 1:
            _state_machine(body, kind)
        elif mode == 2:
            _signed_by_the_role(body, kind)
        else:
            _canonical(body)
    except BlackholeSyncError:
        pass  # refused: what hostile input must get


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    documents = WORLD.seeds()
    kind_of = {"manifest": "release"}
    for name, data in documents.items():
        kind = KINDS.index(kind_of.get(name, name)) if kind_of.get(name, name) in KINDS else 0
        out[f"delivered-{name}"] = bytes([0, kind]) + data
        out[f"state-{name}"] = bytes([1, kind]) + data
        signed = Envelope.from_bytes(data).signed
        out[f"signed-{name}"] = bytes([2, kind]) + canonical_bytes(dict(signed))
        out[f"canonical-{name}"] = bytes([3, 0]) + data
    for i, kind in enumerate(KINDS):  # every kind, even without a seed of its own
        out[f"empty-{kind}"] = bytes([2, i]) + b'{"version":1,"expires":"2099-01-01T00:00:00Z"}'
    return out


if __name__ == "__main__":
    fuzz_main(test_one_input, seeds)
