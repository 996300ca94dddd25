"""Secure distribution: streaming encryption to recipient nodes, and its attacks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from blackhole_sync.codecs.crypto import (
    Decryptor,
    SecureChannel,
    SecureDistribution,
    ciphertext_length,
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    libp2p_peer_id,
)
from blackhole_sync.documents import Artifact, Encryption, MetaFile
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import (
    DecryptionError,
    LengthExceededError,
    LengthOrHashMismatchError,
    SecurityError,
)

CHUNK = 1024


@pytest.fixture
def node() -> PrivateKey:
    return PrivateKey.generate()


def _encrypt(tmp_path: Path, data: bytes, *recipients: PrivateKey) -> tuple[Path, Encryption]:
    src = tmp_path / "plain"
    src.write_bytes(data)
    dst = tmp_path / "cipher"
    enc = encrypt_file(src, dst, [r.public_key for r in recipients], chunk_size=CHUNK)
    return dst, enc


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_round_trip_for_a_recipient(tmp_path: Path, node: PrivateKey, size: int) -> None:
    data = os.urandom(size)
    other = PrivateKey.generate()
    cipher, enc = _encrypt(tmp_path, data, other, node)
    blob = cipher.read_bytes()
    assert len(blob) == enc.ciphertext.length == ciphertext_length(size, CHUNK)
    assert hashlib.sha256(blob).hexdigest() == enc.ciphertext.sha256
    assert size < 16 or data not in blob  # a short plaintext can occur in random bytes by chance
    out = tmp_path / "out"
    decrypt_file(cipher, out, enc, node, MetaFile.of(data))
    assert out.read_bytes() == data


def test_decryptor_accepts_pieces_of_any_size(tmp_path: Path, node: PrivateKey) -> None:
    data = os.urandom(5 * CHUNK + 17)
    cipher, enc = _encrypt(tmp_path, data, node)
    blob = cipher.read_bytes()
    decryptor = Decryptor(enc, node, MetaFile.of(data))
    out = bytearray()
    for i in range(0, len(blob), 333):
        out += decryptor.feed(blob[i : i + 333])
    out += decryptor.finish()
    assert bytes(out) == data
    pieces = [blob[i : i + 1000] for i in range(0, len(blob), 1000)]
    assert b"".join(decrypt_stream(pieces, enc, node, MetaFile.of(data))) == data


def test_an_artifact_record_carries_encryption_and_plaintext_hashes(
    tmp_path: Path, node: PrivateKey
) -> None:
    data = os.urandom(3000)
    cipher, enc = _encrypt(tmp_path, data, node)
    meta = MetaFile.of(data)
    artifact = Artifact("app", meta.length, dict(meta.hashes), encryption=enc)
    out = tmp_path / "out"
    decrypt_file(cipher, out, artifact, node)
    assert out.read_bytes() == data


def test_recipient_given_as_hex(tmp_path: Path, node: PrivateKey) -> None:
    src = tmp_path / "plain"
    src.write_bytes(b"hello")
    enc = encrypt_file(src, tmp_path / "c", [node.public_key.hex])
    assert enc.recipients[0].public == node.public_key.hex


def test_node_outside_the_recipients_is_refused_clearly(tmp_path: Path, node: PrivateKey) -> None:
    cipher, enc = _encrypt(tmp_path, b"secret release", node)
    outsider = PrivateKey.generate()
    out = tmp_path / "out"
    with pytest.raises(DecryptionError, match="not one of them"):
        decrypt_file(cipher, out, enc, outsider)
    assert not out.exists()


def test_swapped_sealed_key_does_not_open(tmp_path: Path, node: PrivateKey) -> None:
    other = PrivateKey.generate()
    _cipher, enc = _encrypt(tmp_path, b"x" * 100, node, other)
    a, b = enc.recipients
    swapped = Encryption(
        enc.scheme,
        enc.ciphertext,
        (a.__class__(a.public, b.sealed_key), b),
        enc.chunk_size,
    )
    with pytest.raises(DecryptionError, match="does not open"):
        Decryptor(swapped, node)


@pytest.mark.parametrize("where", [0, 30, -1])
def test_tampered_ciphertext_is_refused(tmp_path: Path, node: PrivateKey, where: int) -> None:
    data = os.urandom(2 * CHUNK + 10)
    cipher, enc = _encrypt(tmp_path, data, node)
    blob = bytearray(cipher.read_bytes())
    blob[where] ^= 0x01
    # Even with a manifest that lists the tampered bytes, authentication fails.
    forged = Encryption(enc.scheme, MetaFile.of(bytes(blob)), enc.recipients, enc.chunk_size)
    decryptor = Decryptor(forged, node)
    with pytest.raises(DecryptionError):
        decryptor.feed(bytes(blob))
        decryptor.finish()


def test_truncated_stream_is_refused(tmp_path: Path, node: PrivateKey) -> None:
    data = os.urandom(3 * CHUNK)
    cipher, enc = _encrypt(tmp_path, data, node)
    blob = cipher.read_bytes()
    cut = blob[: 24 + 2 * (CHUNK + 17)]  # drop the final chunk at a chunk boundary
    forged = Encryption(enc.scheme, MetaFile.of(cut), enc.recipients, enc.chunk_size)
    decryptor = Decryptor(forged, node)
    decryptor.feed(cut)
    with pytest.raises(DecryptionError, match="truncated"):
        decryptor.finish()


def test_extended_stream_is_cut_at_the_signed_length(tmp_path: Path, node: PrivateKey) -> None:
    cipher, enc = _encrypt(tmp_path, b"abc" * 100, node)
    decryptor = Decryptor(enc, node)
    with pytest.raises(LengthExceededError):
        decryptor.feed(cipher.read_bytes() + b"more")


def test_wrong_plaintext_hash_is_refused(tmp_path: Path, node: PrivateKey) -> None:
    cipher, enc = _encrypt(tmp_path, b"abc" * 100, node)
    out = tmp_path / "out"
    with pytest.raises(LengthOrHashMismatchError):
        decrypt_file(cipher, out, enc, node, MetaFile.of(b"xyz" * 100))
    assert not out.exists()


def test_ciphertext_hash_mismatch_is_a_security_error(tmp_path: Path, node: PrivateKey) -> None:
    cipher, enc = _encrypt(tmp_path, b"abc" * 100, node)
    wrong = Encryption(
        enc.scheme,
        MetaFile(enc.ciphertext.length, {"sha256": "0" * 64}),
        enc.recipients,
        enc.chunk_size,
    )
    with pytest.raises(SecurityError):
        decrypt_file(cipher, tmp_path / "out", wrong, node)


def test_encrypt_refuses_no_or_repeated_recipients(tmp_path: Path, node: PrivateKey) -> None:
    src = tmp_path / "p"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="at least one"):
        encrypt_file(src, tmp_path / "c1", [])
    with pytest.raises(ValueError, match="twice"):
        encrypt_file(src, tmp_path / "c2", [node.public_key, node.public_key])
    assert not (tmp_path / "c1").exists() and not (tmp_path / "c2").exists()


def test_secure_distribution_interface(tmp_path: Path, node: PrivateKey) -> None:
    publisher = SecureDistribution()
    receiver = SecureDistribution(node)
    src = tmp_path / "p"
    data = os.urandom(10_000)
    src.write_bytes(data)
    enc = publisher.encrypt_update(src, tmp_path / "c", [node.public_key])
    receiver.decrypt_update(tmp_path / "c", tmp_path / "out", enc, MetaFile.of(data))
    assert (tmp_path / "out").read_bytes() == data
    assert SecureDistribution.verify_transport_integrity(data, MetaFile.of(data)) is True
    with pytest.raises(LengthOrHashMismatchError):
        SecureDistribution.verify_transport_integrity(data + b"x", MetaFile.of(data))
    with pytest.raises(LengthOrHashMismatchError):
        SecureDistribution.verify_transport_integrity(b"y" * len(data), MetaFile.of(data))
    with pytest.raises(RuntimeError):
        publisher.establish_secure_channel(node.public_key)


def test_the_secure_channel_is_the_transports_noise_channel_keyed_by_the_node_identity() -> None:
    # The libp2p peer id of an ed25519 key: an identity multihash, base58btc (a known vector:
    # the key of seed bytes(range(32)) as go-libp2p and py-libp2p print it).
    alice, bob = PrivateKey(bytes(range(32))), PrivateKey.generate()
    channel = SecureDistribution(bob).establish_secure_channel(alice.public_key)
    assert channel.peer == alice.public_key and channel.protocol == "/noise"
    assert channel.peer_id == libp2p_peer_id(alice.public_key.hex)
    assert channel.peer_id == "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
    assert channel.multiaddr("/ip4/127.0.0.1/tcp/4001").endswith("/p2p/" + channel.peer_id)
    assert SecureChannel(alice.public_key, channel.peer_id) == channel
