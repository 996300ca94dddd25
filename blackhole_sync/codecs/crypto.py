"""Secure distribution: artifacts encrypted to a set of recipient nodes (issue 5, item 6).

An artifact is encrypted once, as a stream, with a fresh random key
(XChaCha20-Poly1305 ``secretstream`` from libsodium, through pynacl). That key is sealed to
every recipient with an X25519 sealed box. A recipient is a node's ed25519 identity key; its
X25519 form comes from ``crypto_sign_ed25519_pk_to_curve25519`` and the node opens the sealed
key with its seed converted by ``crypto_sign_ed25519_sk_to_curve25519``.

Ciphertext layout (scheme ``secretstream-xchacha20poly1305+sealedbox-x25519``)::

    header        24 bytes (secretstream header)
    chunk * n     each: plaintext chunk (chunk_size bytes; the last may be shorter) + 17 bytes
                  of tag and MAC; the last chunk, and only it, carries TAG_FINAL

An empty plaintext is one empty final chunk. A truncated stream, a chunk after the final one,
a reordered or altered chunk all fail authentication: :class:`~.errors.DecryptionError`.

The signed manifest covers both sides: the artifact's own length and sha256 are the
plaintext's, ``Encryption.ciphertext`` is the ciphertext blob's. :class:`Decryptor` checks both
while it streams (length caps as bytes arrive, sha256 at :meth:`Decryptor.finish`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions
from attrs import frozen

from .._fsutil import fsync_fd, sha256, sha256_hex
from ..documents import Artifact, Encryption, MetaFile, PrivateKey, PublicKey, Recipient
from ..errors import DecryptionError, LengthExceededError, LengthOrHashMismatchError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SCHEME",
    "Decryptor",
    "SecureChannel",
    "SecureDistribution",
    "ciphertext_length",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_file",
    "libp2p_peer_id",
    "open_sealed_key",
    "seal_key",
]

SCHEME = Encryption.SCHEMES[0]
DEFAULT_CHUNK_SIZE = 65536
_HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_KEYBYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


def _as_public(key: PublicKey | str) -> PublicKey:
    return key if isinstance(key, PublicKey) else PublicKey.from_hex(key)


def ciphertext_length(plaintext_length: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """The exact ciphertext length for a plaintext of ``plaintext_length`` bytes."""
    chunks = max(1, -(-plaintext_length // chunk_size))
    return _HEADER + plaintext_length + chunks * _ABYTES


def seal_key(key: bytes, recipient: PublicKey | str) -> Recipient:
    """Seal a stream key to one node (its ed25519 public key, object or hex)."""
    public = _as_public(recipient)
    curve = sodium.crypto_sign_ed25519_pk_to_curve25519(public.raw)
    return Recipient(public.hex, sodium.crypto_box_seal(key, curve).hex())


def open_sealed_key(
    encryption: Encryption, identity: PrivateKey, *, what: str = "artifact"
) -> bytes:
    """The stream key sealed to ``identity``; :class:`DecryptionError` if it is no recipient."""
    mine = identity.public_key.hex
    for recipient in encryption.recipients:
        if recipient.public == mine:
            break
    else:
        raise DecryptionError(
            f"{what} is encrypted to {len(encryption.recipients)} recipient(s) and this node "
            f"(key {mine[:16]}...) is not one of them"
        )
    curve_sk = sodium.crypto_sign_ed25519_sk_to_curve25519(identity.seed + identity.public_key.raw)
    curve_pk = sodium.crypto_sign_ed25519_pk_to_curve25519(identity.public_key.raw)
    try:
        key = sodium.crypto_box_seal_open(bytes.fromhex(recipient.sealed_key), curve_pk, curve_sk)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError(f"{what}: the key sealed to this node does not open") from exc
    if len(key) != _KEYBYTES:
        raise DecryptionError(f"{what}: the sealed key has the wrong length")
    return key


def _resolve(
    target: Artifact | Encryption, plaintext: MetaFile | None, what: str
) -> tuple[Encryption, MetaFile | None, str]:
    """An artifact brings its encryption record, its plaintext length/sha256 and its name."""
    if isinstance(target, Artifact):
        if target.encryption is None:
            raise ValueError(f"artifact {target.name!r} is not encrypted")
        plain = plaintext or MetaFile(target.length, target.hashes)
        return target.encryption, plain, f"artifact {target.name!r}"
    return target, plaintext, what


def _read_chunks(fh: object, size: int) -> Iterator[bytes]:
    read = fh.read  # type: ignore[attr-defined]
    while True:
        chunk: bytes = read(size)
        if not chunk:
            return
        yield chunk


def encrypt_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    recipients: Sequence[PublicKey | str],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Encryption:
    """Encrypt ``src`` into ``dst`` (a new file) for ``recipients``; return the manifest record.

    ``dst`` is written and fsynced but not renamed: the caller places it (content-addressed).
    """
    if not recipients:
        raise ValueError("encryption needs at least one recipient")
    if not 1024 <= chunk_size <= 16 * 1024 * 1024:
        raise ValueError("chunk_size must be between 1 KiB and 16 MiB")
    publics = [_as_public(r) for r in recipients]
    if len({p.hex for p in publics}) != len(publics):
        raise ValueError("a recipient is listed twice")
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    digest = sha256(header)
    length = len(header)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fin:
            out.write(header)
            chunks = _read_chunks(fin, chunk_size)
            current = next(chunks, b"")
            while True:
                following = next(chunks, None)
                tag = _TAG_FINAL if following is None else _TAG_MESSAGE
                sealed = sodium.crypto_secretstream_xchacha20poly1305_push(
                    state, current, None, tag
                )
                out.write(sealed)
                digest.update(sealed)
                length += len(sealed)
                if following is None:
                    break
                current = following
            out.flush()
            fsync_fd(out.fileno())
    except BaseException:
        Path(dst).unlink(missing_ok=True)
        raise
    sealed_keys = tuple(seal_key(key, p) for p in publics)
    return Encryption(
        SCHEME, MetaFile(length, {"sha256": digest.hexdigest()}), sealed_keys, chunk_size
    )


class Decryptor:
    """Streaming decryption of one artifact while it is staged.

    Feed ciphertext in pieces of any size with :meth:`feed`; each call returns the plaintext
    that became available. :meth:`finish` returns the rest and checks that the stream ended
    with its final chunk and that the ciphertext and plaintext lengths and sha256 are the
    signed ones. Errors: :class:`DecryptionError` (not a recipient, altered, truncated or
    extended stream), :class:`LengthExceededError` (over a signed length while streaming),
    :class:`LengthOrHashMismatchError` (sha256 or final length differ).
    """

    def __init__(
        self,
        encryption: Artifact | Encryption,
        identity: PrivateKey,
        plaintext: MetaFile | None = None,
        *,
        what: str = "artifact",
    ) -> None:
        encryption, plaintext, what = _resolve(encryption, plaintext, what)
        if encryption.scheme != SCHEME:
            raise DecryptionError(f"{what}: unknown encryption scheme {encryption.scheme!r}")
        self._encryption = encryption
        self._plaintext = plaintext
        self._what = what
        self._key = open_sealed_key(encryption, identity, what=what)
        self._state: sodium.crypto_secretstream_xchacha20poly1305_state | None = None
        self._buffer = bytearray()
        self._cipher_hash = sha256()
        self._plain_hash = sha256()
        self._cipher_len = 0
        self._plain_len = 0
        self._final = False
        self._frame = encryption.chunk_size + _ABYTES

    @property
    def received(self) -> int:
        return self._cipher_len

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        self._cipher_len += len(data)
        if self._cipher_len > self._encryption.ciphertext.length:
            raise LengthExceededError(
                f"{self._what}: ciphertext longer than the signed "
                f"{self._encryption.ciphertext.length} bytes"
            )
        self._cipher_hash.update(data)
        if self._final:
            raise DecryptionError(f"{self._what}: data after the final encrypted chunk")
        self._buffer += data
        out = bytearray()
        if self._state is None:
            if len(self._buffer) < _HEADER:
                return b""
            self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
            try:
                sodium.crypto_secretstream_xchacha20poly1305_init_pull(
                    self._state, bytes(self._buffer[:_HEADER]), self._key
                )
            except (nacl.exceptions.CryptoError, ValueError) as exc:
                raise DecryptionError(f"{self._what}: bad stream header") from exc
            del self._buffer[:_HEADER]
        while len(self._buffer) >= self._frame:
            out += self._pull(bytes(self._buffer[: self._frame]))
            del self._buffer[: self._frame]
        return bytes(out)

    def _pull(self, frame: bytes) -> bytes:
        assert self._state is not None
        if self._final:
            raise DecryptionError(f"{self._what}: data after the final encrypted chunk")
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._state, frame, None)
        except (nacl.exceptions.CryptoError, ValueError) as exc:
            raise DecryptionError(
                f"{self._what}: ciphertext does not authenticate (altered or wrong key)"
            ) from exc
        if tag == _TAG_FINAL:
            self._final = True
        elif tag != _TAG_MESSAGE:
            raise DecryptionError(f"{self._what}: unexpected stream tag {tag}")
        self._plain_len += len(plain)
        if self._plaintext is not None and self._plain_len > self._plaintext.length:
            raise LengthExceededError(
                f"{self._what}: plaintext longer than the signed {self._plaintext.length} bytes"
            )
        self._plain_hash.update(plain)
        return bytes(plain)

    def finish(self) -> bytes:
        """The last plaintext; then every length and hash is checked."""
        out = b""
        if self._state is None:
            raise DecryptionError(f"{self._what}: ciphertext truncated (no stream header)")
        if self._buffer:
            if self._final:
                raise DecryptionError(f"{self._what}: data after the final encrypted chunk")
            out = self._pull(bytes(self._buffer))
            self._buffer.clear()
        if not self._final:
            raise DecryptionError(f"{self._what}: ciphertext truncated (no final chunk)")
        cipher = self._encryption.ciphertext
        if self._cipher_len != cipher.length or self._cipher_hash.hexdigest() != cipher.sha256:
            raise LengthOrHashMismatchError(
                f"{self._what}: ciphertext differs from the signed length/sha256"
            )
        if self._plaintext is not None and (
            self._plain_len != self._plaintext.length
            or self._plain_hash.hexdigest() != self._plaintext.sha256
        ):
            raise LengthOrHashMismatchError(
                f"{self._what}: decrypted bytes differ from the signed length/sha256"
            )
        return out


def decrypt_stream(
    chunks: Iterable[bytes],
    encryption: Artifact | Encryption,
    identity: PrivateKey,
    plaintext: MetaFile | None = None,
) -> Iterator[bytes]:
    """Decrypt an iterable of ciphertext pieces, yielding plaintext; checks as :class:`Decryptor`."""
    decryptor = Decryptor(encryption, identity, plaintext)
    for chunk in chunks:
        out = decryptor.feed(chunk)
        if out:
            yield out
    last = decryptor.finish()
    if last:
        yield last


def decrypt_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    encryption: Artifact | Encryption,
    identity: PrivateKey,
    plaintext: MetaFile | None = None,
) -> None:
    """Decrypt ``src`` into ``dst`` (a new file); removes ``dst`` on any failure."""
    decryptor = Decryptor(encryption, identity, plaintext)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fin:
            for chunk in _read_chunks(fin, 1024 * 1024):
                out.write(decryptor.feed(chunk))
            out.write(decryptor.finish())
            out.flush()
            fsync_fd(out.fileno())
    except BaseException:
        Path(dst).unlink(missing_ok=True)
        raise


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def libp2p_peer_id(key: PublicKey | str) -> str:
    """The libp2p peer id of a node identity key (``12D3KooW...``).

    An identity multihash of the protobuf-encoded ed25519 public key (type 1), in base58btc:
    what a libp2p host keyed with the node's seed calls itself, and what the Noise handshake
    proves the remote end holds.
    """
    raw = b"\x08\x01\x12\x20" + _as_public(key).raw
    data = b"\x00" + bytes([len(raw)]) + raw
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _B58[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\x00"))) + out


@frozen
class SecureChannel:
    """The authenticated, encrypted channel to a peer node: libp2p Noise, keyed by identity.

    The channel itself is made by the peer transport (the gossip plugin's libp2p host) when it
    connects: Noise XX with the node's ed25519 identity key as the libp2p identity, so a peer
    reached at ``.../p2p/<peer_id>`` is proven to hold ``peer``'s key before any byte of a
    protocol is read (the transport refuses the connection otherwise). This names what that
    handshake authenticates; the core keeps no second channel protocol of its own.
    """

    peer: PublicKey
    peer_id: str
    protocol: str = "/noise"

    def multiaddr(self, transport_address: str) -> str:
        """``transport_address`` (``/ip4/HOST/tcp/PORT``) pinned to this peer's identity."""
        return f"{transport_address}/p2p/{self.peer_id}"


class SecureDistribution:
    """The design's ``SecureDistribution`` interface, in snake_case."""

    def __init__(self, identity: PrivateKey | None = None) -> None:
        self.identity = identity

    def _require_identity(self) -> PrivateKey:
        if self.identity is None:
            raise RuntimeError("this SecureDistribution has no node identity key")
        return self.identity

    def encrypt_update(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        recipients: Sequence[PublicKey | str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Encryption:
        return encrypt_file(src, dst, recipients, chunk_size=chunk_size)

    def decrypt_update(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        encryption: Artifact | Encryption,
        plaintext: MetaFile | None = None,
    ) -> None:
        decrypt_file(src, dst, encryption, self._require_identity(), plaintext)

    def decryptor(
        self, encryption: Artifact | Encryption, plaintext: MetaFile | None = None
    ) -> Decryptor:
        return Decryptor(encryption, self._require_identity(), plaintext)

    def establish_secure_channel(self, peer: PublicKey | str) -> SecureChannel:
        """The secure channel to ``peer``: libp2p Noise, made by the peer transport when it
        dials ``channel.multiaddr(address)`` (see :class:`SecureChannel`)."""
        self._require_identity()
        key = _as_public(peer)
        return SecureChannel(key, libp2p_peer_id(key))

    @staticmethod
    def verify_transport_integrity(data: bytes, expected: MetaFile) -> bool:
        """True when ``data`` has the signed length and sha256; raises otherwise."""
        if len(data) != expected.length:
            raise LengthOrHashMismatchError(
                f"{len(data)} bytes received, signed metadata says {expected.length}"
            )
        if sha256_hex(data) != expected.sha256:
            raise LengthOrHashMismatchError("sha256 differs from the signed metadata")
        return True
