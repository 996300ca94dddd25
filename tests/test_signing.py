"""ed25519 keys, key ids, key files and threshold verification (counting distinct keys)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import nacl.signing
import pytest

from blackhole_sync.codecs.keyfile import (
    WrongKeyKindError,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from blackhole_sync.documents.signing import (
    PrivateKey,
    PublicKey,
    Signature,
    key_id,
    verify_threshold,
)
from blackhole_sync.errors import FormatError, SignatureError

MESSAGE = b'{"_type":"release","version":"1.0.0"}'


@pytest.fixture
def keys() -> list[PrivateKey]:
    return [PrivateKey.generate() for _ in range(5)]


def table(keys: list[PrivateKey]) -> dict[str, PublicKey]:
    return {k.keyid: k.public_key for k in keys}


def ids(keys: list[PrivateKey]) -> list[str]:
    return [k.keyid for k in keys]


# -- keys ---------------------------------------------------------------------------------------


def test_key_id_is_sha256_of_raw_public_key(keys: list[PrivateKey]) -> None:
    key = keys[0]
    assert key.keyid == hashlib.sha256(key.public_key.raw).hexdigest()
    assert key_id(key.public_key.raw) == key.keyid
    assert PublicKey.from_hex(key.public_key.hex) == key.public_key


def test_signature_verifies_with_pynacl(keys: list[PrivateKey]) -> None:
    sig = keys[0].sign(MESSAGE)
    nacl.signing.VerifyKey(keys[0].public_key.raw).verify(MESSAGE, bytes.fromhex(sig.sig))
    assert keys[0].public_key.verify(MESSAGE, bytes.fromhex(sig.sig))
    assert not keys[0].public_key.verify(MESSAGE + b" ", bytes.fromhex(sig.sig))
    assert not keys[1].public_key.verify(MESSAGE, bytes.fromhex(sig.sig))
    assert not keys[0].public_key.verify(MESSAGE, b"\x00" * 63)


@pytest.mark.parametrize("value", ["", "00" * 31, "AB" * 32, "zz" * 32, 42, None])
def test_malformed_public_key_refused(value: object) -> None:
    with pytest.raises(FormatError):
        PublicKey.from_hex(value)  # type: ignore[arg-type]


def test_wrong_length_raw_keys_refused() -> None:
    with pytest.raises(FormatError):
        PublicKey(b"\x01" * 31)
    with pytest.raises(FormatError):
        PrivateKey(b"\x01" * 33)


# -- threshold verification ---------------------------------------------------------------------


def test_threshold_met_by_distinct_keys(keys: list[PrivateKey]) -> None:
    sigs = [k.sign(MESSAGE) for k in keys[:3]]
    good = verify_threshold(MESSAGE, sigs, table(keys), ids(keys), 3)
    assert good == frozenset(ids(keys[:3]))


def test_threshold_not_met_refused(keys: list[PrivateKey]) -> None:
    sigs = [k.sign(MESSAGE) for k in keys[:2]]
    with pytest.raises(SignatureError, match="2 of the required 3"):
        verify_threshold(MESSAGE, sigs, table(keys), ids(keys), 3)


def test_no_signatures_refused(keys: list[PrivateKey]) -> None:
    with pytest.raises(SignatureError):
        verify_threshold(MESSAGE, [], table(keys), ids(keys), 1)


def test_threshold_below_one_refused(keys: list[PrivateKey]) -> None:
    sigs = [k.sign(MESSAGE) for k in keys]
    with pytest.raises(SignatureError):
        verify_threshold(MESSAGE, sigs, table(keys), ids(keys), 0)


def test_duplicate_signatures_count_once(keys: list[PrivateKey]) -> None:
    sig = keys[0].sign(MESSAGE)
    with pytest.raises(SignatureError, match="1 of the required 2"):
        verify_threshold(MESSAGE, [sig, sig, sig], table(keys), ids(keys), 2)


def test_same_key_signing_twice_counts_once(keys: list[PrivateKey]) -> None:
    # Two signing sessions by one key holder, plus one good signature: two distinct keys.
    first, again = keys[0].sign(MESSAGE), keys[0].sign(MESSAGE)
    with pytest.raises(SignatureError, match="2 of the required 3"):
        verify_threshold(MESSAGE, [first, again, keys[1].sign(MESSAGE)], table(keys), ids(keys), 3)


def test_duplicate_key_ids_in_role_count_once(keys: list[PrivateKey]) -> None:
    role = [keys[0].keyid, keys[0].keyid, keys[0].keyid]
    with pytest.raises(SignatureError):
        verify_threshold(MESSAGE, [keys[0].sign(MESSAGE)], table(keys), role, 2)


def test_bad_signature_among_enough_good_ones_accepted(keys: list[PrivateKey]) -> None:
    forged = Signature(keys[0].keyid, keys[1].sign(MESSAGE).sig)  # right id, wrong key
    garbage = Signature(keys[1].keyid, "00" * 64)
    good = [k.sign(MESSAGE) for k in keys[2:5]]
    result = verify_threshold(MESSAGE, [forged, garbage, *good], table(keys), ids(keys), 3)
    assert result == frozenset(ids(keys[2:5]))


def test_bad_signature_is_not_counted(keys: list[PrivateKey]) -> None:
    forged = Signature(keys[0].keyid, keys[1].sign(MESSAGE).sig)
    with pytest.raises(SignatureError):
        verify_threshold(MESSAGE, [forged, keys[1].sign(MESSAGE)], table(keys), ids(keys), 2)


def test_malformed_signature_hex_is_skipped(keys: list[PrivateKey]) -> None:
    short = Signature(keys[0].keyid, keys[0].sign(MESSAGE).sig[:-2])
    upper = Signature(keys[0].keyid, keys[0].sign(MESSAGE).sig.upper())
    with pytest.raises(SignatureError):
        verify_threshold(MESSAGE, [short, upper], table(keys), ids(keys), 1)


def test_signature_by_key_outside_role_refused(keys: list[PrivateKey]) -> None:
    role = ids(keys[:2])
    outsiders = [k.sign(MESSAGE) for k in keys[2:]]
    # Known to the key table (another role's keys) but not allowed for this role.
    with pytest.raises(SignatureError):
        verify_threshold(MESSAGE, outsiders, table(keys), role, 1)
    # Allowed id but no key in the table: cannot verify, does not count.
    with pytest.raises(SignatureError):
        verify_threshold(MESSAGE, [keys[0].sign(MESSAGE)], {}, role, 1)


def test_signature_over_other_bytes_refused(keys: list[PrivateKey]) -> None:
    sigs = [k.sign(MESSAGE + b"\n") for k in keys]
    with pytest.raises(SignatureError):
        verify_threshold(MESSAGE, sigs, table(keys), ids(keys), 1)


# -- key files ----------------------------------------------------------------------------------


def test_private_key_file_mode_0600(tmp_path: Path) -> None:
    key = write_key_pair(tmp_path / "k")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert load_private_key(tmp_path / "k") == key
    assert load_public_key(tmp_path / "k.pub") == key.public_key


def test_private_key_file_mode_0600_despite_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_key_pair(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_key_file_refuses_existing_path(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("precious")
    with pytest.raises(FileExistsError):
        write_key_pair(tmp_path / "k")
    assert (tmp_path / "k").read_text() == "precious"
    assert not (tmp_path / "k.pub").exists()


def test_key_file_refuses_existing_public_path(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("precious")
    with pytest.raises(FileExistsError):
        write_key_pair(tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_key_file_refuses_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "k").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        write_key_pair(tmp_path / "k")
    assert not (tmp_path / "elsewhere").exists()


def test_public_key_file_given_as_private_raises_wrong_kind(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k")
    with pytest.raises(WrongKeyKindError):
        load_private_key(tmp_path / "k.pub")


def test_private_key_file_given_as_public_raises_wrong_kind(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k")
    with pytest.raises(WrongKeyKindError):
        load_public_key(tmp_path / "k")
    assert issubclass(WrongKeyKindError, FormatError)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"keytype": "rsa", "public": "00"}',
        b'{"keytype": "ed25519", "private": "abc"}',
        b'{"keytype": "ed25519", "private": 5}',
        b"\xff\xfe",
        b" " * 5000,
    ],
)
def test_malformed_key_file_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "k").write_bytes(content)
    with pytest.raises(FormatError):
        load_private_key(tmp_path / "k")


def test_missing_key_file_is_the_os_error(tmp_path: Path) -> None:
    """A missing file is exit 1 on the command line whichever flag named it (not a usage
    error): the loader lets the OSError through."""
    with pytest.raises(FileNotFoundError):
        load_public_key(tmp_path / "absent.pub")
    with pytest.raises(FileNotFoundError):
        load_private_key(tmp_path / "absent")


def test_key_file_contents(tmp_path: Path) -> None:
    key = write_key_pair(tmp_path / "k")
    assert json.loads((tmp_path / "k.pub").read_text()) == {
        "keytype": "ed25519",
        "public": key.public_key.hex,
    }
