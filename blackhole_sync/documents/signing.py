"""ed25519 keys, signers, key ids and threshold verification (in memory: no I/O).

A key id is the hex sha256 of the raw 32-byte ed25519 public key. A threshold counts *distinct
trusted keys* whose signature verifies over the exact canonical bytes: a key listed twice, or a
signature repeated, counts once; a bad signature from a listed key is ignored, not fatal (an
attacker who can append signatures must not be able to veto a document).

Whatever signs is a :class:`Signer`: a :class:`PrivateKey` held in memory, or a key held
elsewhere (an HSM, a cloud KMS) behind a signer plugin
(:class:`blackhole_sync.release.PluginSigner`). Key files are read and written by
:mod:`blackhole_sync.codecs.keyfile`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing
from attrs import field, frozen

from .._fsutil import sha256_hex
from ..errors import FormatError, SignatureError

__all__ = [
    "PrivateKey",
    "PublicKey",
    "VERIFY_BACKEND",
    "Signature",
    "Signer",
    "key_id",
    "verify_backend",
    "verify_threshold",
]

_HEX = re.compile(r"[0-9a-f]*\Z")


_Verify = Callable[[bytes, bytes, int, bytes], int]


class _LibsodiumDetachedVerify:
    """libsodium's ``crypto_sign_verify_detached``, called through ``ctypes`` on the very
    libsodium that pynacl ships and has already loaded.

    pynacl's ``VerifyKey.verify`` calls ``crypto_sign_open``: the same libsodium check
    (``crypto_sign_ed25519_open`` is ``verify_detached`` over ``sm[64:]``), after copying the
    signature and the message into one new buffer and allocating another for the opened
    message. pynacl does not bind the detached call, hence the declaration here.

    Why it exists: for small documents the signature call is most of the cost, and pynacl's
    copies are a visible part of it. ``bench/bench_verify.py``'s vote-tally proxy (one
    signature per ~300-byte vote; the coming tally's target is 1.5x bare pynacl) ran 6-15%
    faster with it; release manifests (three signatures over ~4 KB) showed no measurable
    difference. Built on first use (:func:`_detached_verify`), never at import; used only
    after a known-answer self-test. ``ctypes`` rather than a cffi declaration: declaring a
    function in cffi runs its C parser (pycparser), about 0.1 CPU-second per process -- more
    than every signature a node command checks.
    """

    NAME = "libsodium crypto_sign_verify_detached (pynacl's libsodium, via ctypes)"

    def __init__(self, library: Any, verify: _Verify) -> None:
        self._library = library  # keeps the handle (and so ``verify``) alive
        self._verify = verify

    @classmethod
    def build(cls) -> _LibsodiumDetachedVerify | None:
        """The backend, or None where it cannot be had: pynacl without its private
        ``nacl._sodium`` module, a library that cannot be opened or lacks the
        symbol, or a failed self-test. None means pynacl's ``VerifyKey.verify``."""
        try:
            import ctypes

            import nacl._sodium  # type: ignore[import-not-found]
        except ImportError:
            return None
        try:
            library = ctypes.CDLL(nacl._sodium.__file__)
            function = library.crypto_sign_verify_detached
        except OSError:  # the shared library cannot be opened
            return None
        except AttributeError:  # it has no such symbol
            return None
        function.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p)
        function.restype = ctypes.c_int
        verify: _Verify = function
        backend = cls(library, verify)
        return backend if backend._passes_self_test() else None

    def __call__(self, sig: bytes, message: bytes, raw_key: bytes) -> bool:
        """``sig`` (64 bytes) over ``message`` by ``raw_key`` (32 bytes); the caller checks
        the sizes and that all three are ``bytes``, as libsodium reads exactly that much."""
        return self._verify(sig, message, len(message), raw_key) == 0

    def _passes_self_test(self) -> bool:
        """A good signature verifies; a flipped bit in it or in the message does not."""
        signer = nacl.signing.SigningKey(bytes(range(32)))
        raw_key = bytes(signer.verify_key)
        message = b"blackhole-sync detached verify self-test"
        sig = signer.sign(message).signature
        bad = bytes([sig[0] ^ 1]) + sig[1:]
        return (
            self(sig, message, raw_key)
            and not self(bad, message, raw_key)
            and not self(sig, message + b"!", raw_key)
        )


@functools.cache
def _detached_verify() -> _LibsodiumDetachedVerify | None:
    """The fast signature backend, built on the first signature check; None: pynacl's."""
    return _LibsodiumDetachedVerify.build()


def verify_backend() -> str:
    """Which call checks signatures in this process (builds the backend if not yet built)."""
    fast = _detached_verify()
    return fast.NAME if fast is not None else "pynacl VerifyKey.verify"


#: The signature check's policy; :func:`verify_backend` says which one this process uses.
VERIFY_BACKEND = f"{_LibsodiumDetachedVerify.NAME} when available, else pynacl VerifyKey.verify"


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and _HEX.match(value) is not None


def key_id(raw_public: bytes) -> str:
    return sha256_hex(raw_public)


@frozen
class Signature:
    """One signature in a document's ``signatures`` list (``sig`` is 128 hex digits)."""

    keyid: str
    sig: str

    def to_dict(self) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": self.sig}


@frozen
class PublicKey:
    """An ed25519 public key."""

    raw: bytes = field(repr=False)
    _verifier: nacl.signing.VerifyKey = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if len(self.raw) != 32:
            raise FormatError("an ed25519 public key is 32 bytes")
        try:
            verifier = nacl.signing.VerifyKey(self.raw)
        except (ValueError, TypeError, nacl.exceptions.CryptoError) as exc:
            raise FormatError(f"not an ed25519 public key: {exc}") from exc
        object.__setattr__(self, "_verifier", verifier)

    @classmethod
    def from_hex(cls, value: str) -> PublicKey:
        if not isinstance(value, str) or not _is_hex(value, 64):
            raise FormatError("an ed25519 public key is 64 lowercase hex digits")
        return cls(bytes.fromhex(value))

    @property
    def keyid(self) -> str:
        return key_id(self.raw)

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def to_dict(self) -> dict[str, str]:
        return {"keytype": "ed25519", "scheme": "ed25519", "public": self.hex}

    def verify(self, message: bytes, sig: bytes) -> bool:
        """True when ``sig`` is this key's signature over ``message``; never raises."""
        if len(sig) != 64:
            return False
        fast = _detached_verify()
        raw = self.raw
        if fast is not None and type(sig) is type(message) is type(raw) is bytes:
            # raw is 32 bytes (checked at construction), sig 64: the sizes libsodium reads.
            return fast(sig, message, raw)
        try:
            self._verifier.verify(message, sig)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True


@frozen
class PrivateKey:
    """An ed25519 signing key (its 32-byte seed)."""

    seed: bytes = field(repr=False)
    _signer: nacl.signing.SigningKey = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if len(self.seed) != 32:
            raise FormatError("an ed25519 seed is 32 bytes")
        object.__setattr__(self, "_signer", nacl.signing.SigningKey(self.seed))

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(bytes(self._signer.verify_key))

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    @property
    def nacl_key(self) -> nacl.signing.SigningKey:
        return self._signer

    def sign(self, message: bytes) -> Signature:
        sig = self._signer.sign(message).signature
        return Signature(self.keyid, sig.hex())


class Signer(Protocol):
    """What signs a document: a :class:`PrivateKey`, or a key held by an HSM or a KMS.

    ``sign`` returns the :class:`Signature` of ``keyid`` over exactly ``message``.
    """

    @property
    def keyid(self) -> str: ...

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, message: bytes) -> Signature: ...


def verify_threshold(
    message: bytes,
    signatures: Iterable[Signature],
    keys: Mapping[str, PublicKey],
    allowed_keyids: Iterable[str],
    threshold: int,
    *,
    what: str = "document",
) -> frozenset[str]:
    """Verify that at least ``threshold`` distinct allowed keys signed ``message``.

    Returns the key ids whose signatures verified (stops once the threshold is met). Raises
    :class:`SignatureError` otherwise. Signatures by unknown keys, repeated signatures and bad
    signatures are skipped.
    """
    if threshold < 1:
        raise SignatureError(f"{what}: a threshold below 1 would accept anything")
    allowed = frozenset(allowed_keyids)
    good: set[str] = set()
    for signature in signatures:
        if signature.keyid in good or signature.keyid not in allowed:
            continue
        key = keys.get(signature.keyid)
        if key is None or not _is_hex(signature.sig, 128):
            continue
        if key.verify(message, bytes.fromhex(signature.sig)):
            good.add(signature.keyid)
            if len(good) >= threshold:
                return frozenset(good)
    raise SignatureError(f"{what}: {len(good)} of the required {threshold} trusted signatures")
