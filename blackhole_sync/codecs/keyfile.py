"""Key files: ed25519 keys on disk, optionally passphrase-protected.

The key models (:class:`~blackhole_sync.documents.PrivateKey`,
:class:`~blackhole_sync.documents.PublicKey`) live in ``documents``, which does no I/O; this
module reads and writes them. Key files are small JSON documents, so the kinds cannot be
confused::

    PATH      {"keytype": "ed25519", "private": "<64 hex: the 32-byte seed>"}      mode 0600
    PATH      {"keytype": "ed25519", "public": "<64 hex>",                          mode 0600
               "encrypted": {"kdf": "argon2id", "opslimit": N, "memlimit": N,
                             "salt": "<32 hex>", "cipher": "xsalsa20-poly1305",
                             "box": "<hex: 24-byte nonce, then the sealed seed>"}}
    PATH.pub  {"keytype": "ed25519", "public": "<64 hex>"}

A file with ``private`` or ``encrypted`` is a private key file; one with only ``public`` is a
public key file. An encrypted file keeps its public key in the clear (``key show`` needs no
passphrase); once the seed is decrypted, the key it derives must be that public key.

The passphrase is stretched with argon2id (libsodium's ``crypto_pwhash``, through pynacl; the
parameters stored in the file are bounded on read, so a hostile file cannot ask for
terabytes) and the seed sealed with XSalsa20-Poly1305 (``SecretBox``): a wrong passphrase or a
changed byte fails authentication.

Private key files must not be accessible by group or others unless encrypted (as ssh refuses
such identity files): :class:`~blackhole_sync.errors.KeyFileError` with the ``chmod`` that
fixes it. A missing or unreadable file is the ``OSError`` itself.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import nacl.exceptions
import nacl.pwhash.argon2id as _argon2id
import nacl.secret
import nacl.utils
from attrs import frozen

from .._fsutil import fsync_fd
from ..documents import PrivateKey, PublicKey
from ..errors import FormatError, KeyFileError

__all__ = [
    "KDF_BOUNDS",
    "KDF_DEFAULT",
    "KEY_FILE_MAX",
    "PASSPHRASE_ENV",
    "KeyFileInfo",
    "Passphrase",
    "WrongKeyKindError",
    "load_private_key",
    "load_public_key",
    "read_key_file",
    "write_key_pair",
]

#: Largest key file read (bytes).
KEY_FILE_MAX = 4096

#: The environment variable automation sets instead of typing a passphrase.
PASSPHRASE_ENV = "BLACKHOLE_SYNC_KEY_PASSPHRASE"  # noqa: S105 - a name, not a secret

#: argon2id (opslimit, memlimit) written by default: libsodium's "moderate" (256 MiB).
KDF_DEFAULT = (_argon2id.OPSLIMIT_MODERATE, _argon2id.MEMLIMIT_MODERATE)

#: argon2id parameters accepted on read: from libsodium's "interactive" (64 MiB) up to its
#: "sensitive" memory (1 GiB) and 16 passes.
KDF_BOUNDS = {
    "opslimit": (_argon2id.OPSLIMIT_INTERACTIVE, 16),
    "memlimit": (_argon2id.MEMLIMIT_INTERACTIVE, _argon2id.MEMLIMIT_SENSITIVE),
}

#: A passphrase, or what supplies one when a file turns out to be encrypted (called with the
#: file's path; asked only then).
Passphrase = bytes | Callable[[Path], bytes]

_HEX = frozenset("0123456789abcdef")
_CIPHER = "xsalsa20-poly1305"


class WrongKeyKindError(FormatError):
    """A public key file was given where a private one belongs, or the reverse."""


@frozen
class KeyFileInfo:
    """What a key file holds, read without a passphrase (for ``key show``)."""

    path: Path
    kind: Literal["public", "private"]
    public_key: PublicKey
    encrypted: bool


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{what}: expected a string")
    return value


def _hex(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != length or not set(value) <= _HEX:
        raise FormatError(f"{what}: expected {length} lowercase hex digits")
    return bytes.fromhex(value)


def _read(path: Path) -> tuple[dict[str, Any], int]:
    """The key file's JSON object and its mode (the mode of what was read, after symlinks)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path}: not a key file (not a regular file)")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(KEY_FILE_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > KEY_FILE_MAX:
        raise FormatError(f"{path}: not a key file (too large)")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: not a key file") from exc
    if not isinstance(obj, dict) or obj.get("keytype") != "ed25519":
        raise FormatError(f"{path}: not an ed25519 key file")
    return obj, stat.S_IMODE(st.st_mode)


def _is_private(obj: dict[str, Any]) -> bool:
    return "private" in obj or "encrypted" in obj


def _check_private_mode(path: Path, mode: int, encrypted: bool) -> None:
    if mode & 0o077 and not encrypted:
        raise KeyFileError(
            f"private key file {path} is accessible by group or others (mode {mode:04o}): "
            f"run `chmod 600 {path}` (or keep it encrypted: key generate --encrypt)"
        )


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """Read a ``.pub`` file. A private key file raises :class:`WrongKeyKindError`."""
    path = Path(path)
    obj, _ = _read(path)
    if _is_private(obj):
        raise WrongKeyKindError(f"{path} is a private key file; a public key (.pub) is needed")
    return PublicKey.from_hex(_text(obj.get("public"), f"{path}: public"))


def read_key_file(path: str | os.PathLike[str]) -> KeyFileInfo:
    """Which kind of key ``path`` holds and its public key, without asking for a passphrase.

    A plain private key file accessible by group or others raises
    :class:`~blackhole_sync.errors.KeyFileError`, as it would when used.
    """
    path = Path(path)
    obj, mode = _read(path)
    if not _is_private(obj):
        return KeyFileInfo(
            path, "public", PublicKey.from_hex(_text(obj.get("public"), f"{path}: public")), False
        )
    encrypted = "encrypted" in obj
    if encrypted:
        public = PublicKey.from_hex(_text(obj.get("public"), f"{path}: public"))
    else:
        public = PrivateKey(_hex(obj["private"], 64, f"{path}: private")).public_key
    _check_private_mode(path, mode, encrypted)
    return KeyFileInfo(path, "private", public, encrypted)


def load_private_key(
    path: str | os.PathLike[str], *, passphrase: Passphrase | None = None
) -> PrivateKey:
    """Read a private key file. A ``.pub`` file raises :class:`WrongKeyKindError`.

    An encrypted file needs ``passphrase`` (bytes, or a callable asked only then); without
    one, or with a wrong one, :class:`~blackhole_sync.errors.KeyFileError`. A plain file
    accessible by group or others is refused the same way, with the ``chmod`` hint.
    """
    path = Path(path)
    obj, mode = _read(path)
    if not _is_private(obj):
        raise WrongKeyKindError(f"{path} is a public key file; a private key is needed")
    encrypted = "encrypted" in obj
    if not encrypted:
        seed = _hex(obj["private"], 64, f"{path}: malformed private key")
        _check_private_mode(path, mode, encrypted)
        return PrivateKey(seed)
    public = PublicKey.from_hex(_text(obj.get("public"), f"{path}: public"))
    if passphrase is None:
        raise KeyFileError(
            f"{path} is encrypted: give its passphrase (a terminal prompt, or {PASSPHRASE_ENV})"
        )
    secret = passphrase(path) if callable(passphrase) else passphrase
    seed = _open_seed(obj["encrypted"], secret, path)
    key = PrivateKey(seed)
    if key.public_key != public:
        raise FormatError(f"{path}: its public key is not the one its private key derives")
    return key


def _open_seed(box: Any, secret: bytes, path: Path) -> bytes:
    if not isinstance(box, dict) or box.get("kdf") != "argon2id" or box.get("cipher") != _CIPHER:
        raise FormatError(f"{path}: unknown key encryption (argon2id + {_CIPHER} expected)")
    limits = {}
    for name, (low, high) in KDF_BOUNDS.items():
        value = box.get(name)
        if type(value) is not int or not low <= value <= high:
            raise FormatError(f"{path}: encrypted.{name} must be an integer in {low}..{high}")
        limits[name] = value
    salt = _hex(box.get("salt"), 2 * _argon2id.SALTBYTES, f"{path}: encrypted.salt")
    sealed = box.get("box")
    overhead = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES
    sealed_bytes = _hex(sealed, 2 * (overhead + 32), f"{path}: encrypted.box")
    key = _argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        secret,
        salt,
        opslimit=limits["opslimit"],
        memlimit=limits["memlimit"],
    )
    try:
        return nacl.secret.SecretBox(key).decrypt(sealed_bytes)
    except nacl.exceptions.CryptoError:
        raise KeyFileError(f"{path}: wrong passphrase (or the file was changed)") from None


def _seal_seed(seed: bytes, secret: bytes, kdf: tuple[int, int]) -> dict[str, Any]:
    if not secret:
        raise ValueError("an empty passphrase protects nothing")
    opslimit, memlimit = kdf
    salt = nacl.utils.random(_argon2id.SALTBYTES)
    key = _argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit
    )
    sealed = nacl.secret.SecretBox(key).encrypt(seed)
    return {
        "kdf": "argon2id",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": salt.hex(),
        "cipher": _CIPHER,
        "box": bytes(sealed).hex(),
    }


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        fsync_fd(fd)
    finally:
        os.close(fd)


def write_key_pair(
    path: str | os.PathLike[str],
    key: PrivateKey | None = None,
    *,
    passphrase: bytes | None = None,
    kdf: tuple[int, int] = KDF_DEFAULT,
) -> PrivateKey:
    """Write ``path`` (0600) and ``path.pub``; refuse (FileExistsError) if either exists.

    With ``passphrase`` the seed is sealed (argon2id with ``kdf`` = (opslimit, memlimit),
    then XSalsa20-Poly1305).
    """
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    for existing in (path, pub):
        if existing.exists() or existing.is_symlink():
            raise FileExistsError(f"{existing} already exists")
    key = key or PrivateKey.generate()
    public_doc = {"keytype": "ed25519", "public": key.public_key.hex}
    if passphrase is None:
        private_doc: dict[str, Any] = {"keytype": "ed25519", "private": key.seed.hex()}
    else:
        private_doc = {**public_doc, "encrypted": _seal_seed(key.seed, passphrase, kdf)}
    _write_new(path, (json.dumps(private_doc) + "\n").encode(), 0o600)
    try:
        _write_new(pub, (json.dumps(public_doc) + "\n").encode(), 0o644)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return key
