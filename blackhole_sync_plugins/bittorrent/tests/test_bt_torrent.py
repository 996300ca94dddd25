"""Torrent creation is offline and deterministic; loading refuses what the caller did not ask for."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import libtorrent as lt
import pytest
from blackhole_sync_bittorrent import (
    InfoHashMismatch,
    LengthMismatch,
    MalformedTorrent,
    TooLarge,
    Torrent,
    create_torrent,
    piece_size_for,
)
from bt_helpers import PACKAGE_ROOT, make_blob

KIB = 1024
MIB = 1024 * KIB


@pytest.mark.parametrize(
    ("length", "piece", "pieces"),
    [
        (1, 256 * KIB, 1),
        (8 * MIB, 256 * KIB, 32),
        (64 * MIB, 256 * KIB, 256),
        (100 * MIB, 256 * KIB, 400),
        (256 * MIB, 256 * KIB, 1024),
        (256 * MIB + 1, 512 * KIB, 513),
        (1024 * MIB, 1 * MIB, 1024),
        (16 * 1024 * MIB, 16 * MIB, 1024),
        (64 * 1024 * MIB, 16 * MIB, 4096),
    ],
)
def test_piece_size_rule(length: int, piece: int, pieces: int) -> None:
    assert piece_size_for(length) == piece
    assert -(-length // piece) == pieces


def test_empty_blob_has_no_torrent() -> None:
    with pytest.raises(ValueError, match="never empty"):
        piece_size_for(0)


def test_same_file_gives_the_same_bytes_wherever_it_is_and_whatever_it_is_called(
    tmp_path: Path,
) -> None:
    path, digest = make_blob(tmp_path / "a", 3 * MIB + 12345)
    copy = tmp_path / "b" / "renamed.bin"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())

    first = create_torrent(path)
    again = create_torrent(path, sha256_hex=digest)
    elsewhere = create_torrent(copy)
    assert first.data == again.data == elsewhere.data
    assert first.name == digest
    assert first.length == 3 * MIB + 12345
    assert first.piece_length == 256 * KIB

    decoded = lt.bdecode(first.data)
    assert set(decoded) == {b"info", b"piece layers"}  # no date, creator, comment, trackers
    info = decoded[b"info"]
    assert info[b"name"] == digest.encode()
    assert info[b"meta version"] == 2
    assert b"pieces" in info and b"file tree" in info  # hybrid v1+v2
    section = lt.bencode(info)
    assert first.btih == hashlib.sha1(section).hexdigest()
    assert first.btmh == hashlib.sha256(section).hexdigest()
    assert len(first.btih) == 40 and len(first.btmh) == 64
    assert f"xt=urn:btmh:1220{first.btmh}" in first.magnet


def test_info_hashes_are_stable_across_processes(tmp_path: Path) -> None:
    """A fresh interpreter computes the same hashes and opens no socket while doing it."""
    path, _ = make_blob(tmp_path, 1 * MIB + 7)
    here = create_torrent(path)
    script = (
        "import json, os, sys\n"
        "from blackhole_sync_bittorrent import create_torrent\n"
        "t = create_torrent(sys.argv[1])\n"
        "fds = [os.readlink(f'/proc/self/fd/{fd}') for fd in os.listdir('/proc/self/fd')\n"
        "       if os.path.exists(f'/proc/self/fd/{fd}')]\n"
        "print(json.dumps({'btih': t.btih, 'btmh': t.btmh, 'data': t.data.hex(),\n"
        "                  'sockets': [f for f in fds if f.startswith('socket:')]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, str(path)],
        capture_output=True,
        check=True,
        env={"PYTHONPATH": str(PACKAGE_ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    there = json.loads(out.stdout)
    assert there["sockets"] == []
    assert (there["btih"], there["btmh"]) == (here.btih, here.btmh)
    assert bytes.fromhex(there["data"]) == here.data


def test_a_torrent_whose_info_hash_is_not_the_expected_one_is_refused(tmp_path: Path) -> None:
    wanted = create_torrent(make_blob(tmp_path / "a", 200 * KIB, seed=1)[0])
    other = create_torrent(make_blob(tmp_path / "b", 200 * KIB, seed=2)[0])
    assert (
        Torrent.from_bytes(wanted.data, expected_btih=wanted.btih, expected_btmh=wanted.btmh)
        == wanted
    )
    with pytest.raises(InfoHashMismatch, match="btih"):
        Torrent.from_bytes(other.data, expected_btih=wanted.btih)
    with pytest.raises(InfoHashMismatch, match="btmh"):
        Torrent.from_bytes(other.data, expected_btmh=wanted.btmh)


def test_length_checks(tmp_path: Path) -> None:
    torrent = create_torrent(make_blob(tmp_path, 300 * KIB)[0])
    with pytest.raises(LengthMismatch):
        Torrent.from_bytes(torrent.data, expected_length=300 * KIB - 1)
    with pytest.raises(TooLarge):
        Torrent.from_bytes(torrent.data, max_length=300 * KIB - 1)
    assert Torrent.from_bytes(torrent.data, expected_length=300 * KIB, max_length=300 * KIB)


def test_torrents_that_are_not_single_file_hybrids_named_by_a_hash_are_refused(
    tmp_path: Path,
) -> None:
    path, digest = make_blob(tmp_path / "blobs", 100 * KIB)
    (tmp_path / "blobs" / "not-a-hash").write_bytes(path.read_bytes())

    def build(names: list[str], flags: int = 0, base: Path = tmp_path / "blobs") -> bytes:
        entries = [lt.create_file_entry(name, 100 * KIB) for name in names]
        creator = lt.create_torrent(entries, 64 * KIB, flags)
        creator.set_creation_date(0)
        lt.set_piece_hashes(creator, str(base))
        return lt.bencode(creator.generate())

    assert Torrent.from_bytes(build([digest])).name == digest
    with pytest.raises(MalformedTorrent, match="hybrid"):
        Torrent.from_bytes(build([digest], int(lt.create_torrent.v1_only)))
    with pytest.raises(MalformedTorrent, match="hybrid"):
        Torrent.from_bytes(build([digest], int(lt.create_torrent.v2_only)))
    with pytest.raises(MalformedTorrent, match="sha256"):
        Torrent.from_bytes(build(["not-a-hash"]))
    with pytest.raises(MalformedTorrent, match="not one"):
        Torrent.from_bytes(build([f"blobs/{digest}", "blobs/not-a-hash"], base=tmp_path))
    with pytest.raises(MalformedTorrent, match="not a valid torrent"):
        Torrent.from_bytes(b"d4:infod4:name1:xee")
    with pytest.raises(MalformedTorrent):
        Torrent.from_bytes(b"not bencode at all")


def test_a_blob_is_seeded_under_the_signed_torrent_it_came_by_never_under_a_lying_one(
    tmp_path: Path,
) -> None:
    """What a node seeds a fetched blob under (``Host._verified_torrent``, offline): the torrent
    it was fetched by when the file gives that info hash -- also one of an earlier piece-size
    rule -- and its own torrent when the fetch followed a lying locator."""
    from blackhole_sync_bittorrent._host import Host
    from blackhole_sync_bittorrent._options import BittorrentSettings

    blob, digest = make_blob(tmp_path / "blobs", 1 * MIB + 5, seed=4)
    decoy, _ = make_blob(tmp_path / "decoy", 1 * MIB + 5, seed=5)
    lie = create_torrent(decoy, sha256_hex=digest)  # the blob's name and length, other pieces
    own = create_torrent(blob)
    earlier = create_torrent(blob, piece_size=64 * KIB)  # the rule before: 64 KiB pieces
    assert len({lie.btih, own.btih, earlier.btih}) == 3
    host = Host(BittorrentSettings(state_dir=tmp_path / "state"))
    host._open_state()
    try:
        host._index_download(lie)  # what a fetch by the lying locator leaves behind
        assert host._verified_torrent(blob, digest).btih == own.btih
        host._index_download(earlier)  # fetched by an honest torrent of the earlier rule
        assert host._verified_torrent(blob, digest).btih == earlier.btih
        assert host._verified_torrent(blob, digest).btih == earlier.btih  # remembered
    finally:
        host._close_state()


def test_an_origin_seeds_an_older_release_under_the_torrent_its_repository_serves(
    tmp_path: Path,
) -> None:
    """``REPO/blobs/<sha>`` beside ``REPO/torrents/<btih>.torrent``: a release built under an
    earlier piece-size rule is seeded under the info hash its manifest signed (the repository's
    torrent), also by an origin starting with fresh state; a torrent there that the file does
    not rebuild (other pieces under the blob's name) is not used."""
    from blackhole_sync_bittorrent._host import Host
    from blackhole_sync_bittorrent._options import BittorrentSettings

    repo = tmp_path / "repo"
    old, old_digest = make_blob(repo / "blobs", 1 * MIB + 5, seed=6)
    new, new_digest = make_blob(repo / "blobs", 1 * MIB + 7, seed=7)
    decoy, _ = make_blob(tmp_path / "decoy", 1 * MIB + 7, seed=8)
    signed_old = create_torrent(old, piece_size=64 * KIB)  # built under the earlier rule
    lie = create_torrent(decoy, sha256_hex=new_digest)  # the new blob's name, other pieces
    (repo / "torrents").mkdir()
    for torrent in (signed_old, lie):
        (repo / "torrents" / f"{torrent.btih}.torrent").write_bytes(torrent.data)
    (repo / "torrents" / "junk.torrent").write_bytes(b"not a torrent")
    assert signed_old.btih != create_torrent(old).btih
    for run in range(2):  # fresh state, then the state the first run left
        host = Host(BittorrentSettings(state_dir=tmp_path / "origin-state"))
        host._open_state()
        try:
            assert host._verified_torrent(old, old_digest).btih == signed_old.btih, run
            assert host._verified_torrent(new, new_digest).btih == create_torrent(new).btih
        finally:
            host._close_state()
