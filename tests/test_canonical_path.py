"""Attacks written in canonical form, and the pynacl fallback of signature checks.

Envelope parsing has a fast path for documents already in canonical form (what every writer
here produces). Each attack below is crafted so that its bytes look canonical, to prove the
fast path refuses exactly what the strict parser refuses.
"""

from __future__ import annotations

import json

import pytest

from blackhole_sync.documents import signing
from blackhole_sync.documents.metadata import Envelope, canonical_bytes
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import FormatError


def canonical_envelope_text(signed_text: str) -> bytes:
    return ('{"signatures":[],"signed":' + signed_text + "}").encode()


def test_canonical_looking_document_with_duplicate_keys_is_refused() -> None:
    data = canonical_envelope_text('{"_type":"index","_type":"root"}')
    with pytest.raises(FormatError, match="duplicate"):
        Envelope.from_bytes(data)


@pytest.mark.parametrize("number", ["9223372036854775808", "-1", "1.5", "1e3", "NaN", "Infinity"])
def test_canonical_looking_document_with_a_forbidden_number_is_refused(number: str) -> None:
    with pytest.raises(FormatError):
        Envelope.from_bytes(canonical_envelope_text('{"_type":"index","version":' + number + "}"))


def test_canonical_looking_deep_nesting_is_refused() -> None:
    deep = "[" * 40 + "]" * 40
    with pytest.raises(FormatError, match="nesting"):
        Envelope.from_bytes(canonical_envelope_text('{"_type":"index","x":' + deep + "}"))


def test_canonical_looking_lone_surrogate_is_refused() -> None:
    with pytest.raises(FormatError):
        Envelope.from_bytes(canonical_envelope_text('{"_type":"index","x":"\\ud800"}'))


def test_canonical_and_spaced_forms_verify_the_same() -> None:
    key = PrivateKey.generate()
    signed = {"_type": "index", "version": 3, "note": "ünïcode", "list": [1, 2, {"b": 1, "a": 2}]}
    sig = key.sign(canonical_bytes(signed)).to_dict()
    canonical = Envelope.from_bytes(canonical_bytes({"signed": signed, "signatures": [sig]}))
    spaced = Envelope.from_bytes(
        json.dumps({"signatures": [sig], "signed": signed}, indent=2).encode()
    )
    assert canonical.signed_bytes == spaced.signed_bytes == canonical_bytes(signed)
    assert canonical.signed == spaced.signed


def test_signature_checks_fall_back_to_pynacl_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    key = PrivateKey.generate()
    message = b"release manifest bytes"
    good = bytes.fromhex(key.sign(message).sig)
    bad = bytes([good[0] ^ 1]) + good[1:]
    fast = (key.public_key.verify(message, good), key.public_key.verify(message, bad))
    monkeypatch.setattr(signing, "_VERIFY_DETACHED", None)
    slow = (key.public_key.verify(message, good), key.public_key.verify(message, bad))
    assert fast == slow == (True, False)
    assert not key.public_key.verify(message + b"!", good)
