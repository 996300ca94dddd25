"""Offline, deterministic torrents for transfer blobs, and loading them with checks.

A transfer blob (a compressed artifact or a patch) is one file named by the lowercase hex of
its sha256. Its torrent is:

* **hybrid v1+v2** (BEP 3 and BEP 52), one file, no pad files, no file attributes, no trackers,
  no web seeds, no comment, no creator string and no creation date -- so the release builder
  and every node compute the same bytes from the same file;
* **named by the sha256 hex** (the ``name`` field and the file's name), whatever the file is
  called on disk;
* cut into pieces of :func:`piece_size_for` bytes.

Info hash forms: ``btih`` is the v1 info hash, 40 lowercase hex digits (SHA-1 of the bencoded
``info`` dictionary, as in ``magnet:?xt=urn:btih:``); ``btmh`` is the v2 info hash, 64 lowercase
hex digits (SHA-256 of the same ``info`` dictionary, the 32 raw bytes in hex, *without* the
multihash prefix: a magnet link's ``xt=urn:btmh:`` value is ``"1220" + btmh``).

Piece size rule (:func:`piece_size_for`): the smallest power of two that is at least 256 KiB
and keeps the piece count at or under 1024, capped at 16 MiB (so files above 16 GiB get more
than 1024 pieces). 8 MiB -> 256 KiB (32 pieces); 64 MiB -> 256 KiB (256); 100 MiB -> 256 KiB
(400); 256 MiB -> 256 KiB (1024); 1 GiB -> 1 MiB (1024); 16 GiB -> 16 MiB (1024).

Why 256 KiB and not smaller: a super-seeding origin (BEP 16) offers each peer one piece at a
time and the next when the peer announces it, so what the origin sends per peer is one piece
per round trip; at 64 KiB, 16 peers on one busy host took 37 s to fetch 64 MiB from an origin
limited to 16 MB/s, at 256 KiB 23 s. A torrent made under another piece size (an earlier rule)
stays valid: loading never checks the rule, and a node that fetched a blob by a signed info
hash seeds it under that same torrent.

Nothing here opens a session or a socket: :func:`create_torrent` only reads the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

import libtorrent as lt

from ._errors import InfoHashMismatch, LengthMismatch, MalformedTorrent, TooLarge

__all__ = [
    "MAX_PIECE_SIZE",
    "MAX_TORRENT_BYTES",
    "MIN_PIECE_SIZE",
    "TARGET_PIECES",
    "Torrent",
    "create_torrent",
    "piece_size_for",
    "sha256_file",
]

MIN_PIECE_SIZE: Final = 256 * 1024
"""Smallest piece size chosen (BEP 52 allows 16 KiB; see the module docstring for why 256 KiB)."""

MAX_PIECE_SIZE: Final = 16 * 1024 * 1024
"""Largest piece size chosen."""

TARGET_PIECES: Final = 1024
"""The piece count that the piece size keeps at or under, up to :data:`MAX_PIECE_SIZE`."""

MAX_TORRENT_BYTES: Final = 4 * 1024 * 1024
"""Largest .torrent accepted by :meth:`Torrent.from_bytes` (a 64 GiB blob needs about 220 KB)."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_READ_CHUNK = 1024 * 1024


def piece_size_for(length: int) -> int:
    """The piece size for a file of ``length`` bytes (see the module docstring for the rule)."""
    if length <= 0:
        raise ValueError("a transfer blob is never empty")
    size = MIN_PIECE_SIZE
    while size < MAX_PIECE_SIZE and -(-length // size) > TARGET_PIECES:
        size *= 2
    return size


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The lowercase sha256 hex of a file's contents (blocking; run it in a worker thread)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Torrent:
    """A loaded, checked single-file hybrid torrent.

    Made by :func:`create_torrent` or :meth:`from_bytes`; ``data`` are the .torrent bytes.
    """

    data: bytes = field(repr=False)
    btih: str
    btmh: str
    name: str
    length: int
    piece_length: int
    num_pieces: int

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        expected_btih: str | None = None,
        expected_btmh: str | None = None,
        expected_length: int | None = None,
        max_length: int | None = None,
    ) -> Torrent:
        """Parse and check a .torrent.

        Refuses (:class:`~blackhole_sync_bittorrent.TorrentRefused` subclasses): anything but a
        single-file hybrid torrent whose name is a 64-hex sha256 (:class:`MalformedTorrent`), an
        info hash other than ``expected_btih``/``expected_btmh`` (:class:`InfoHashMismatch`), a
        length other than ``expected_length`` (:class:`LengthMismatch`) or above ``max_length``
        (:class:`TooLarge`). The info hashes are computed here from the raw ``info`` bytes and
        must agree with libtorrent's.
        """
        if expected_btih is not None and not _HEX40.fullmatch(expected_btih):
            raise ValueError("expected_btih must be 40 lowercase hex digits")
        if expected_btmh is not None and not _HEX64.fullmatch(expected_btmh):
            raise ValueError("expected_btmh must be 64 lowercase hex digits")
        if len(data) > MAX_TORRENT_BYTES:
            raise MalformedTorrent(f"torrent is {len(data)} bytes, more than {MAX_TORRENT_BYTES}")
        try:
            limits = cast("lt.load_torrent_limits", {"max_buffer_size": MAX_TORRENT_BYTES})
            info = lt.torrent_info(data, limits)
        except RuntimeError as e:
            raise MalformedTorrent(f"not a valid torrent: {e}") from e
        hashes = info.info_hashes()
        if not (hashes.has_v1() and hashes.has_v2()):
            raise MalformedTorrent("not a hybrid v1+v2 torrent")
        section = bytes(info.info_section())
        btih = hashlib.sha1(section).hexdigest()  # noqa: S324 - BitTorrent v1 info hash
        btmh = hashlib.sha256(section).hexdigest()
        if btih != str(hashes.v1) or btmh != str(hashes.v2):
            raise MalformedTorrent("info hashes disagree with libtorrent's")
        if expected_btih is not None and btih != expected_btih:
            raise InfoHashMismatch(f"torrent btih {btih} is not the expected {expected_btih}")
        if expected_btmh is not None and btmh != expected_btmh:
            raise InfoHashMismatch(f"torrent btmh {btmh} is not the expected {expected_btmh}")
        layout = info.layout()
        if layout.num_files() != 1:
            raise MalformedTorrent(f"torrent has {layout.num_files()} files, not one")
        name = info.name()
        if not _HEX64.fullmatch(name) or layout.file_path(0) != name:
            raise MalformedTorrent("torrent's file is not named by a sha256 hex digest")
        if int(layout.file_flags(0)) != 0:
            raise MalformedTorrent("torrent's file has attributes (pad, symlink, executable)")
        length = int(layout.file_size(0))
        if expected_length is not None and length != expected_length:
            raise LengthMismatch(f"torrent's file is {length} bytes, expected {expected_length}")
        if max_length is not None and length > max_length:
            raise TooLarge(f"torrent's file is {length} bytes, more than the cap {max_length}")
        return cls(
            data=bytes(data),
            btih=btih,
            btmh=btmh,
            name=name,
            length=length,
            piece_length=int(info.piece_length()),
            num_pieces=int(info.num_pieces()),
        )

    @property
    def magnet(self) -> str:
        """A magnet link with both info hashes, the length and the name (no trackers)."""
        return (
            f"magnet:?xt=urn:btih:{self.btih}&xt=urn:btmh:1220{self.btmh}"
            f"&xl={self.length}&dn={self.name}"
        )

    def torrent_info(self) -> lt.torrent_info:
        """A fresh libtorrent ``torrent_info`` for these bytes (for the engine)."""
        return lt.torrent_info(self.data)

    def piece_hashes(self) -> list[bytes]:
        """The v1 (SHA-1, 20 bytes) hash of each piece, by index."""
        info = self.torrent_info()
        return [bytes(info.hash_for_piece(i)) for i in range(self.num_pieces)]


def create_torrent(
    path: str | os.PathLike[str],
    *,
    sha256_hex: str | None = None,
    piece_size: int | None = None,
) -> Torrent:
    """Make the deterministic torrent of the file at ``path`` (blocking; offline).

    ``sha256_hex`` is the file's sha256 when the caller already knows it (it names the torrent);
    otherwise it is computed. The file is read once more for the piece hashes; if its length
    changes meanwhile, libtorrent fails and :class:`MalformedTorrent` is raised. ``piece_size``
    overrides :func:`piece_size_for` (a power of two, at least 16 KiB).
    """
    source = Path(path)
    length = source.stat().st_size
    if sha256_hex is None:
        sha256_hex = sha256_file(source)
    if not _HEX64.fullmatch(sha256_hex):
        raise ValueError("sha256_hex must be 64 lowercase hex digits")
    piece = piece_size_for(length) if piece_size is None else piece_size
    if piece < 16 * 1024 or piece & (piece - 1):
        raise ValueError("piece_size must be a power of two of at least 16 KiB")
    creator = lt.create_torrent([lt.create_file_entry(sha256_hex, length)], piece)
    creator.set_creation_date(0)
    # libtorrent hashes <directory>/<name>; when the file is called something else, it reads
    # it through a symlink named by the hash in a private temporary directory.
    try:
        if source.name == sha256_hex:
            lt.set_piece_hashes(creator, str(source.resolve().parent))
        else:
            with tempfile.TemporaryDirectory(prefix="bhsync-bt-") as tmp:
                os.symlink(source.resolve(), Path(tmp) / sha256_hex)
                lt.set_piece_hashes(creator, tmp)
    except RuntimeError as e:
        raise MalformedTorrent(f"could not hash {source}: {e}") from e
    data = lt.bencode(creator.generate())
    return Torrent.from_bytes(data, expected_length=length)
