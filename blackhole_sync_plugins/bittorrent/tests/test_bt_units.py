"""Pieces that need no network: exports, independence from the core, bencode, BEP 44 items."""

from __future__ import annotations

import json
import subprocess
import sys

import blackhole_sync_bittorrent as bt
import pytest
from blackhole_sync_bittorrent import _bencode
from blackhole_sync_bittorrent._dht import DhtClient
from bt_helpers import PACKAGE_ROOT
from nacl.signing import SigningKey


def test_exports_are_complete_and_resolve() -> None:
    """Every public name is listed, loads on first use (libtorrent only then), and nothing
    else public is left in the package once all are loaded."""
    assert set(bt.__all__) == set(bt._LAZY)
    assert set(bt.__all__) <= set(dir(bt))
    assert all(getattr(bt, name) is not None for name in bt.__all__)
    public = {
        n for n, v in vars(bt).items() if not n.startswith("_") and not isinstance(v, type(sys))
    }
    assert public - {"annotations", "Any", "TYPE_CHECKING"} == set(bt.__all__)


def test_the_engine_does_not_import_the_core_package() -> None:
    script = (
        "import json, sys, blackhole_sync_bittorrent\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('blackhole_sync'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(PACKAGE_ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    loaded = json.loads(out.stdout)
    assert "blackhole_sync" not in loaded
    assert all(m.startswith("blackhole_sync_bittorrent") for m in loaded)


@pytest.mark.parametrize(
    "data",
    [
        b"i-0e",
        b"i03e",
        b"ie",
        b"03:abc",
        b"d1:b0:1:a0:e",
        b"d1:a0:1:a0:e",
        b"l",
        b"i1ei2e",
        b"5:abc",
        b"di1e0:e",
    ],
)
def test_non_canonical_or_truncated_bencode_is_refused(data: bytes) -> None:
    with pytest.raises(_bencode.BencodeError):
        _bencode.decode(data)


def test_bencode_round_trip() -> None:
    value: _bencode.Value = {b"a": [1, -2, b"x"], b"b": {b"c": b""}, b"d": 0}
    assert _bencode.decode(_bencode.encode(value)) == value
    with pytest.raises(_bencode.BencodeError, match="deep"):
        _bencode.decode(b"l" * 40 + b"e" * 40)


def test_mutable_item_signature_covers_salt_seq_and_value() -> None:
    key = SigningKey(bytes(32))
    item = bt.MutableItem.sign(key, b"doc", 5, b"salt")
    assert item.signature_valid()
    assert item.target == __import__("hashlib").sha1(item.public_key + b"salt").digest()
    for changed in (
        bt.MutableItem(item.public_key, b"other", 5, b"doc", item.signature),
        bt.MutableItem(item.public_key, b"salt", 6, b"doc", item.signature),
        bt.MutableItem(item.public_key, b"salt", 5, b"DOC", item.signature),
        bt.MutableItem(
            bytes(SigningKey(bytes([1] * 32)).verify_key), b"salt", 5, b"doc", item.signature
        ),
    ):
        assert not changed.signature_valid()


def test_mutable_item_limits() -> None:
    key = SigningKey(bytes(32))
    assert bt.MutableItem.sign(key, b"x" * bt.MAX_VALUE_BYTES, 1).signature_valid()
    with pytest.raises(ValueError, match="value"):
        bt.MutableItem.sign(key, b"x" * (bt.MAX_VALUE_BYTES + 1), 1)
    with pytest.raises(ValueError, match="salt"):
        bt.MutableItem.sign(key, b"x", 1, b"s" * 65)
    with pytest.raises(ValueError, match="seq"):
        bt.MutableItem.sign(key, b"x", -1)
    assert len(_bencode.encode(b"x" * bt.MAX_VALUE_BYTES)) == 1000  # BEP 44's bound on v


def test_announcement_salt_and_expanded_key() -> None:
    assert bt.announcement_salt("prod", "stable") == b"blackhole-sync/prod/stable"
    with pytest.raises(ValueError):
        bt.announcement_salt("a/b", "stable")
    secret = bt.libtorrent_secret_key(bytes(range(32)))
    assert len(secret) == 64 and secret[0] & 7 == 0 and secret[31] & 0xC0 == 0x40


def test_a_loopback_only_client_never_queries_other_addresses() -> None:
    async def no_seeds() -> list[tuple[str, int]]:
        return []

    client = DhtClient(no_seeds, loopback_only=True)
    assert client._allowed("127.0.0.1") and client._allowed("127.5.5.5")
    assert not client._allowed("10.0.0.1") and not client._allowed("192.168.1.1")
    assert not client._allowed("8.8.8.8") and not client._allowed("::1")


def test_the_loopback_ip_filter_blocks_everything_but_loopback() -> None:
    filt = bt.loopback_ip_filter()
    assert (
        filt.access("127.0.0.1") == 0 and filt.access("127.9.9.9") == 0 and filt.access("::1") == 0
    )
    for address in ("10.0.0.1", "192.168.1.1", "8.8.8.8", "0.0.0.0", "2001:db8::1"):
        assert filt.access(address) == 1, address
