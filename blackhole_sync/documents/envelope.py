"""The signed envelope: ``{"signed": {...}, "signatures": [{"keyid": HEX, "sig": HEX}]}``.

:meth:`Envelope.from_bytes` is the first step of every verification: the size cap, the strict
parse and the canonical bytes of ``signed``, and nothing else. It builds no document model, so a
verifier checks the signatures over :attr:`Envelope.signed_bytes` before it asks
:meth:`Envelope.parse` for one (``TrustedState`` does, in python-tuf's order).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from attrs import field, frozen

from ..errors import FormatError
from .canonical import MAX_SIZES, _canonical_envelope, canonical_bytes, strict_loads
from .fields import _HEX64, _keyid, _Reader
from .signing import Signature, Signer

__all__ = ["Envelope"]

D = TypeVar("D")


@frozen
class Envelope:
    """A parsed signed document: the raw ``signed`` object, its canonical bytes, signatures.

    Signatures are verified over :attr:`signed_bytes`, the canonical re-encoding of the strictly
    parsed ``signed`` object, so unknown fields are covered too.
    """

    signed: Mapping[str, Any]
    signatures: tuple[Signature, ...]
    signed_bytes: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    MAX_SIGNATURES: ClassVar[int] = 256

    @property
    def type(self) -> str:
        value = self.signed.get("_type")
        return value if isinstance(value, str) else "?"

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_type: str | None = None) -> Envelope:
        """The first step of verifying ``data``: the size cap of ``expected_type``, the strict
        parse, the envelope's shape and the canonical bytes of ``signed``. No model is built
        and no signature is checked; raises :class:`FormatError`."""
        cap = MAX_SIZES.get(expected_type or "", max(MAX_SIZES.values()))
        fast = None
        if type(data) is bytes and len(data) <= cap:  # the cap, before anything is parsed
            fast = _canonical_envelope(data)
        if fast is None:
            obj, signed_bytes = strict_loads(data, max_size=cap), None
        else:
            obj, signed_bytes = fast
        r = _Reader(obj, "document")
        signed = r.obj_("signed", lambda v, w: _Reader(v, w).extra())
        sigs = r.items(
            "signatures", _signature, max_items=cls.MAX_SIGNATURES, fast=_plain_signature
        )
        if r.extra():
            raise FormatError(f"document: unknown top-level fields {sorted(r.extra())}")
        if expected_type is not None and signed.get("_type") != expected_type:
            raise FormatError(f"expected a {expected_type} document, got {signed.get('_type')!r}")
        if signed_bytes is None:
            signed_bytes = canonical_bytes(signed)
        return cls(signed, sigs, signed_bytes, bytes(data))

    def parse(self, model: Callable[[Any], D]) -> D:
        """Build ``model`` (e.g. ``Index.from_dict``) from ``signed``: after the signatures."""
        return model(self.signed)

    @classmethod
    def sign(cls, signed: Mapping[str, Any], keys: Sequence[Signer]) -> Envelope:
        body = canonical_bytes(signed)
        sigs = tuple(k.sign(body) for k in keys)
        return cls.of(signed, sigs)

    @classmethod
    def of(cls, signed: Mapping[str, Any], signatures: Sequence[Signature]) -> Envelope:
        body = canonical_bytes(signed)
        raw = canonical_bytes({"signed": signed, "signatures": [s.to_dict() for s in signatures]})
        return cls(dict(signed), tuple(signatures), body, raw)

    def add_signature(self, key: Signer) -> Envelope:
        """A copy with ``key``'s signature added (a no-op if that key already signed)."""
        if any(s.keyid == key.keyid for s in self.signatures):
            return self
        return Envelope.of(self.signed, (*self.signatures, key.sign(self.signed_bytes)))

    def keyids(self) -> set[str]:
        return {s.keyid for s in self.signatures}


_SIG_HEX = re.compile(r"[0-9a-f]{128}\Z")


def _plain_signature(value: Any) -> Signature | None:
    """:func:`_signature` for plainly valid input; None means "ask :func:`_signature`"."""
    if type(value) is not dict or len(value) != 2:
        return None
    kid = value.get("keyid")
    sig = value.get("sig")
    if (
        type(kid) is not str
        or type(sig) is not str
        or _HEX64.match(kid) is None
        or _SIG_HEX.match(sig) is None
    ):
        return None
    return Signature(kid, sig)


def _signature(value: Any, where: str) -> Signature:
    r = _Reader(value, where)
    kid = _keyid(r.string("keyid", max_len=64), f"{where}.keyid")
    sig = r.string("sig", max_len=128)
    if not _SIG_HEX.match(sig):
        raise FormatError(f"{where}.sig: expected 128 lowercase hex digits")
    if r.extra():
        raise FormatError(f"{where}: unknown signature fields")
    return Signature(kid, sig)
