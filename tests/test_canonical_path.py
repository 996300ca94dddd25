"""Attacks written in canonical form, and the two backends of signature checks.

Envelope parsing has a fast path for documents already in canonical form (what every writer
here produces). Each attack below is crafted so that its bytes look canonical, to prove the
fast path refuses exactly what the strict parser refuses.

Signatures are checked by libsodium's detached verify (called through ctypes from pynacl's
libsodium, built on first use) or, where that cannot be had, by pynacl's ``VerifyKey.verify``;
the fallback is taken only for the specific reasons listed in ``_LibsodiumDetachedVerify.build``.
"""

from __future__ import annotations

import ctypes.util
import json
import sys
from collections.abc import Iterator
from typing import Any

import nacl._sodium  # type: ignore[import-not-found]
import pytest

from blackhole_sync.documents import Envelope, canonical_bytes, signing
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import FormatError
from blackhole_sync.testing import run


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


@pytest.fixture
def fresh_backend() -> Iterator[None]:
    """Build the signature backend anew in the test, and again after it."""
    build = signing._detached_verify  # the real one, even if a test replaces it
    build.cache_clear()
    yield
    build.cache_clear()


def check_signatures() -> tuple[bool, bool, bool]:
    key = PrivateKey.generate()
    message = b"release manifest bytes"
    good = bytes.fromhex(key.sign(message).sig)
    bad = bytes([good[0] ^ 1]) + good[1:]
    public = key.public_key
    return public.verify(message, good), public.verify(message, bad), public.verify(b"x", good)


def test_signature_checks_fall_back_to_pynacl_and_agree(
    monkeypatch: pytest.MonkeyPatch, fresh_backend: None
) -> None:
    fast = check_signatures()
    assert signing._detached_verify() is not None
    monkeypatch.setattr(signing, "_detached_verify", lambda: None)
    assert signing.verify_backend() == "pynacl VerifyKey.verify"
    slow = check_signatures()
    assert fast == slow == (True, False, False)


def test_signature_backend_is_built_on_first_use_not_at_import() -> None:
    code = (
        "import sys, blackhole_sync\n"
        "from blackhole_sync.documents import PrivateKey, signing\n"
        "assert signing._detached_verify.cache_info().currsize == 0\n"
        "assert 'cffi' not in sys.modules\n"
        "key = PrivateKey.generate()\n"
        "assert key.public_key.verify(b'm', bytes.fromhex(key.sign(b'm').sig))\n"
        "assert signing._detached_verify.cache_info().currsize == 1\n"
    )
    result = run([sys.executable, "-c", code], timeout=120)
    assert result.returncode == 0, result.stderr


def test_without_pynacls_private_module_signatures_are_checked_by_pynacl(
    monkeypatch: pytest.MonkeyPatch, fresh_backend: None
) -> None:
    monkeypatch.setitem(sys.modules, "nacl._sodium", None)  # import raises ImportError
    assert signing._detached_verify() is None
    assert check_signatures() == (True, False, False)


def test_a_library_without_the_symbol_means_pynacl(
    monkeypatch: pytest.MonkeyPatch, fresh_backend: None
) -> None:
    libc = ctypes.util.find_library("c")
    if libc is None:
        pytest.skip("no C library to open")
    monkeypatch.setattr(nacl._sodium, "__file__", libc)  # opens, but has no such symbol
    assert signing._detached_verify() is None
    assert check_signatures() == (True, False, False)


def test_a_failed_self_test_means_pynacl(
    monkeypatch: pytest.MonkeyPatch, fresh_backend: None
) -> None:
    monkeypatch.setattr(signing._LibsodiumDetachedVerify, "_passes_self_test", lambda self: False)
    assert signing._detached_verify() is None
    assert check_signatures() == (True, False, False)


def test_an_unexpected_error_while_building_the_backend_is_not_swallowed(
    monkeypatch: pytest.MonkeyPatch, fresh_backend: None
) -> None:
    def broken(self: Any, name: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(ctypes.CDLL, "__init__", broken)
    with pytest.raises(RuntimeError, match="unexpected"):
        check_signatures()
