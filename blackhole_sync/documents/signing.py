"""ed25519 keys, key files, key ids and threshold verification.

A key id is the hex sha256 of the raw 32-byte ed25519 public key. A threshold counts *distinct
trusted keys* whose signature verifies over the exact canonical bytes: a key listed twice, or a
signature repeated, counts once; a bad signature from a listed key is ignored, not fatal (an
attacker who can append signatures must not be able to veto a document).

Key files are small JSON documents, so the two kinds cannot be confused::

    PATH      {"keytype": "ed25519", "private": "<64 hex: the 32-byte seed>"}   mode 0600
    PATH.pub  {"keytype": "ed25519", "public": "<64 hex>"}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
from attrs import field, frozen

from ..errors import FormatError, SignatureError

__all__ = [
    "KEY_FILE_MAX",
    "PrivateKey",
    "PublicKey",
    "VERIFY_BACKEND",
    "Signature",
    "WrongKeyKindError",
    "key_id",
    "load_private_key",
    "load_public_key",
    "verify_threshold",
    "write_key_pair",
]

#: Largest key file read (bytes).
KEY_FILE_MAX = 4096

_HEX = re.compile(r"[0-9a-f]*\Z")


_Verify = Callable[[bytes, bytes, int, bytes], int]


def _detached_verify() -> tuple[_Verify | None, Any]:
    """libsodium's ``crypto_sign_verify_detached``, from the libsodium pynacl ships.

    pynacl's ``VerifyKey.verify`` calls ``crypto_sign_open``, which runs the same libsodium
    check (``crypto_sign_ed25519_open`` is ``verify_detached`` over ``sm[64:]``) but first
    copies signature and message into one buffer and allocates one for the opened message.
    pynacl's binding does not declare the detached call, so it is declared here (cffi ABI mode)
    on the very library pynacl loaded. Used only if it passes a known-answer self-test;
    otherwise verification falls back to ``VerifyKey.verify``. Returns (function, library).
    """
    try:
        import cffi  # type: ignore[import-untyped]  # a dependency of pynacl
        import nacl._sodium  # type: ignore[import-not-found]

        ffi = cffi.FFI()
        ffi.cdef(
            "int crypto_sign_verify_detached(const unsigned char *sig, const unsigned char *m,"
            " unsigned long long mlen, const unsigned char *pk);"
        )
        lib = ffi.dlopen(nacl._sodium.__file__)
        verify: _Verify = lib.crypto_sign_verify_detached
        signer = nacl.signing.SigningKey(bytes(range(32)))
        pk = bytes(signer.verify_key)
        msg = b"blackhole-sync detached verify self-test"
        sig = signer.sign(msg).signature
        bad = bytes([sig[0] ^ 1]) + sig[1:]
        if (
            verify(sig, msg, len(msg), pk) != 0
            or verify(bad, msg, len(msg), pk) == 0
            or verify(sig, msg + b"!", len(msg) + 1, pk) == 0
        ):
            return None, None
        return verify, lib
    except Exception:  # noqa: BLE001  # a capability probe: any failure means pynacl's verify
        return None, None


_VERIFY_DETACHED, _SODIUM_LIB = _detached_verify()

#: Which call checks each signature (the benchmark prints it).
VERIFY_BACKEND = (
    "libsodium crypto_sign_verify_detached (pynacl's libsodium, via cffi)"
    if _VERIFY_DETACHED is not None
    else "pynacl VerifyKey.verify"
)


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and _HEX.match(value) is not None


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


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
        verify = _VERIFY_DETACHED
        raw = self.raw
        if verify is not None and type(sig) is type(message) is type(raw) is bytes:
            # raw is 32 bytes (checked at construction), sig 64: the sizes libsodium reads.
            return verify(sig, message, len(message), raw) == 0
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


# -- key files ------------------------------------------------------------------------------


def _read_key_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read(KEY_FILE_MAX + 1)
    except OSError as exc:
        raise FormatError(f"cannot read key file {path}: {exc.strerror}") from exc
    if len(data) > KEY_FILE_MAX:
        raise FormatError(f"{path}: not a key file (too large)")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: not a key file") from exc
    if not isinstance(obj, dict) or obj.get("keytype") != "ed25519":
        raise FormatError(f"{path}: not an ed25519 key file")
    return obj


class WrongKeyKindError(FormatError):
    """A public key file was given where a private one belongs, or the reverse."""


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """Read a ``.pub`` file. A private key file raises :class:`WrongKeyKindError`."""
    obj = _read_key_file(Path(path))
    if "public" not in obj:
        raise WrongKeyKindError(f"{path} is a private key file; a public key (.pub) is needed")
    return PublicKey.from_hex(obj["public"])


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Read a private key file. A ``.pub`` file raises :class:`WrongKeyKindError`."""
    obj = _read_key_file(Path(path))
    if "private" not in obj:
        raise WrongKeyKindError(f"{path} is a public key file; a private key is needed")
    seed = obj["private"]
    if not isinstance(seed, str) or not _is_hex(seed, 64):
        raise FormatError(f"{path}: malformed private key")
    return PrivateKey(bytes.fromhex(seed))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_pair(path: str | os.PathLike[str], key: PrivateKey | None = None) -> PrivateKey:
    """Write ``path`` (0600) and ``path.pub``; refuse (FileExistsError) if either exists."""
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    if path.exists() or path.is_symlink() or pub.exists() or pub.is_symlink():
        raise FileExistsError(f"{path if path.exists() else pub} already exists")
    key = key or PrivateKey.generate()
    private_doc = {"keytype": "ed25519", "private": key.seed.hex()}
    public_doc = {"keytype": "ed25519", "public": key.public_key.hex}
    _write_new(path, (json.dumps(private_doc) + "\n").encode(), 0o600)
    try:
        _write_new(pub, (json.dumps(public_doc) + "\n").encode(), 0o644)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return key
