"""Key files on disk: passphrase-protected private keys, and private keys others can read.

``codecs.keyfile`` is the one place key files are read and written (``documents`` does no
I/O). An encrypted key is sealed with argon2id + XSalsa20-Poly1305 and refused with a wrong
passphrase or a changed byte; a plain private key readable by group or others is refused (the
hole an operator's ``cp`` or umask opens), an encrypted one is not.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest

import blackhole_sync
from blackhole_sync.codecs.keyfile import (
    KDF_BOUNDS,
    WrongKeyKindError,
    load_private_key,
    load_public_key,
    read_key_file,
    write_key_pair,
)
from blackhole_sync.documents import PrivateKey
from blackhole_sync.errors import FormatError, KeyFileError

#: The cheapest parameters the reader accepts: tests need not pay for "moderate".
FAST = (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)


def test_documents_package_does_no_file_io() -> None:
    """The key-file I/O left ``documents``: none of its modules opens, reads or writes files."""
    package = Path(blackhole_sync.__file__).parent / "documents"
    io_names = {"open", "read_bytes", "read_text", "write_bytes", "write_text", "fdopen"}
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in io_names:
                offenders.append(f"{path.name}:{node.lineno} {name}")
    assert not offenders


def test_encrypted_key_round_trip_and_public_half_without_passphrase(tmp_path: Path) -> None:
    key = write_key_pair(tmp_path / "k", passphrase=b"correct horse", kdf=FAST)
    text = (tmp_path / "k").read_text()
    assert key.seed.hex() not in text
    assert json.loads(text)["encrypted"]["kdf"] == "argon2id"
    info = read_key_file(tmp_path / "k")
    assert (info.kind, info.encrypted, info.public_key) == ("private", True, key.public_key)
    assert load_public_key(tmp_path / "k.pub") == key.public_key
    assert load_private_key(tmp_path / "k", passphrase=b"correct horse") == key
    asked: list[Path] = []

    def ask(path: Path) -> bytes:
        asked.append(path)
        return b"correct horse"

    assert load_private_key(tmp_path / "k", passphrase=ask) == key
    assert asked == [tmp_path / "k"]


def test_plain_key_never_asks_for_a_passphrase(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k")

    def ask(path: Path) -> bytes:
        raise AssertionError("asked for a passphrase of a plain key")

    load_private_key(tmp_path / "k", passphrase=ask)


def test_wrong_or_missing_passphrase_is_refused(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", passphrase=b"right", kdf=FAST)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(tmp_path / "k", passphrase=b"wrong")
    with pytest.raises(KeyFileError, match="encrypted"):
        load_private_key(tmp_path / "k")


def test_flipped_ciphertext_byte_fails_authentication(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", passphrase=b"right", kdf=FAST)
    obj = json.loads((tmp_path / "k").read_text())
    box = bytearray(bytes.fromhex(obj["encrypted"]["box"]))
    box[-1] ^= 1
    obj["encrypted"]["box"] = box.hex()
    (tmp_path / "k").write_text(json.dumps(obj))
    (tmp_path / "k").chmod(0o600)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(tmp_path / "k", passphrase=b"right")


def test_swapped_public_half_of_an_encrypted_key_is_refused(tmp_path: Path) -> None:
    """``key show`` trusts the clear public key; using the key checks it against the seed."""
    write_key_pair(tmp_path / "k", passphrase=b"right", kdf=FAST)
    obj = json.loads((tmp_path / "k").read_text())
    obj["public"] = PrivateKey.generate().public_key.hex
    (tmp_path / "k").write_text(json.dumps(obj))
    with pytest.raises(FormatError, match="public key"):
        load_private_key(tmp_path / "k", passphrase=b"right")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memlimit", 2**40),  # a hostile file asking for a terabyte
        ("memlimit", 8192),  # or for nothing: below the weakest accepted
        ("opslimit", 10**9),
        ("opslimit", 1),
        ("opslimit", "3"),
        ("kdf", "scrypt"),
        ("cipher", "aes-gcm"),
        ("salt", "00"),
        ("box", "zz"),
    ],
)
def test_hostile_kdf_parameters_are_refused_before_any_work(
    tmp_path: Path, field: str, value: object
) -> None:
    write_key_pair(tmp_path / "k", passphrase=b"right", kdf=FAST)
    obj = json.loads((tmp_path / "k").read_text())
    obj["encrypted"][field] = value
    (tmp_path / "k").write_text(json.dumps(obj))
    with pytest.raises(FormatError):
        load_private_key(tmp_path / "k", passphrase=b"right")
    assert KDF_BOUNDS["memlimit"][1] <= 2**30


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o666])
def test_private_key_readable_by_group_or_others_is_refused_with_the_chmod_hint(
    tmp_path: Path, mode: int
) -> None:
    write_key_pair(tmp_path / "k")
    os.chmod(tmp_path / "k", mode)
    for read in (load_private_key, read_key_file):
        with pytest.raises(KeyFileError, match=r"chmod 600"):
            read(tmp_path / "k")
    os.chmod(tmp_path / "k", 0o600)
    load_private_key(tmp_path / "k")
    os.chmod(tmp_path / "k", 0o400)
    load_private_key(tmp_path / "k")


def test_private_key_behind_a_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k")
    (tmp_path / "link").symlink_to(tmp_path / "k")  # a symlink's own mode is 0777
    load_private_key(tmp_path / "link")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(KeyFileError):
        load_private_key(tmp_path / "link")


def test_encrypted_private_key_readable_by_others_is_accepted(tmp_path: Path) -> None:
    key = write_key_pair(tmp_path / "k", passphrase=b"right", kdf=FAST)
    os.chmod(tmp_path / "k", 0o644)
    assert load_private_key(tmp_path / "k", passphrase=b"right") == key


def test_public_key_file_may_be_world_readable(tmp_path: Path) -> None:
    key = write_key_pair(tmp_path / "k")
    os.chmod(tmp_path / "k.pub", 0o644)
    assert load_public_key(tmp_path / "k.pub") == key.public_key


def test_encrypted_key_is_a_private_key_file_where_a_public_one_belongs(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", passphrase=b"right", kdf=FAST)
    with pytest.raises(WrongKeyKindError):
        load_public_key(tmp_path / "k")


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty passphrase"):
        write_key_pair(tmp_path / "k", passphrase=b"")
    assert not (tmp_path / "k").exists()


def test_directory_is_not_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(FormatError):
        load_private_key(tmp_path / "d")
