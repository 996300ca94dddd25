"""The node's own sources, as the transport uses them: ``.torrent`` files and web seeds.

A repository serves ``torrents/<btih>.torrent`` next to ``blobs/`` (the release builder writes
it when this plugin is installed). A node fetches it from its sources (``http(s)://``,
``file://`` or a path; other schemes are skipped) and keeps the first one whose info hash is
the signed one -- a torrent is metadata, checked like any download: by the value from signed
metadata. That lets a swarm start with no peer online: a BEP 19 web seed serves pieces, not
metadata.

Web seeds are the same sources' ``blobs/<sha256>`` URLs (http and https only).

Every read is bounded: at most :func:`torrent_cap` bytes per ``.torrent``, ``TORRENT_TIMEOUT``
seconds per source.
"""

from __future__ import annotations

import errno
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Final

import anyio
import anyio.to_thread

from blackhole_sync.errors import (
    BlobNotFoundError,
    LengthExceededError,
    LengthOrHashMismatchError,
    SourceUnavailableError,
)
from blackhole_sync.fetch import join_url, normalize_source, url_to_path

from ._errors import InfoHashMismatch, TooLarge, TorrentRefused
from ._torrent import MAX_TORRENT_BYTES, MIN_PIECE_SIZE, Torrent

__all__ = [
    "TORRENT_TIMEOUT",
    "TorrentMismatchError",
    "fetch_torrent",
    "torrent_cap",
    "torrent_relpath",
    "web_seed_urls",
]

#: Seconds one source may take to deliver a ``.torrent``.
TORRENT_TIMEOUT: Final = 20.0


class TorrentMismatchError(LengthOrHashMismatchError):
    """Every ``.torrent`` the sources served for a signed info hash was refused (another info
    hash, not a single-file hybrid torrent named by a sha256): a security refusal, like a blob
    that does not verify -- the core moves on to the next source and reports it if none
    delivers."""


def torrent_relpath(btih: str) -> str:
    """Where a repository serves the torrent of ``btih``: ``torrents/<btih>.torrent``."""
    return f"torrents/{btih}.torrent"


def torrent_cap(max_length: int) -> int:
    """The most bytes a hybrid torrent of a file of at most ``max_length`` bytes needs (20
    bytes of v1 and 32 of v2 hashes per piece at the smallest piece size, plus room for the
    rest), capped at :data:`MAX_TORRENT_BYTES`."""
    pieces = -(-max(max_length, 1) // MIN_PIECE_SIZE)
    return min(MAX_TORRENT_BYTES, 16 * 1024 + 64 * pieces)


def web_seed_urls(sources: Sequence[str], sha256: str) -> list[str]:
    """The ``blobs/<sha256>`` URL under each http(s) source (BEP 19 web seeds)."""
    out = []
    for source in sources:
        base = normalize_source(source)
        if base.split(":", 1)[0].lower() in ("http", "https"):
            out.append(join_url(base, f"blobs/{sha256}"))
    return out


def _ssl_context(tls: Mapping[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.get("ca_file") or None)
    if tls.get("cert_file"):
        context.load_cert_chain(tls["cert_file"], tls.get("key_file") or None)
    return context


def _read_url(url: str, cap: int, tls: Mapping[str, str]) -> bytes | None:
    """The body at ``url`` (None: 404/410), at most ``cap`` + 1 bytes read (blocking)."""
    request = urllib.request.Request(url, headers={"User-Agent": "blackhole-sync-bittorrent"})  # noqa: S310 - the node's http(s) sources only
    context = _ssl_context(tls) if url.lower().startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=TORRENT_TIMEOUT, context=context) as reply:  # noqa: S310 - http(s) only
            return bytes(reply.read(cap + 1))
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return None
        raise SourceUnavailableError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        raise SourceUnavailableError(f"{url}: {exc}") from exc


def _read_file(url: str, cap: int) -> bytes | None:
    try:
        with open(url_to_path(url), "rb") as f:
            return f.read(cap + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.EISDIR):
            return None
        raise SourceUnavailableError(f"{url}: {exc}") from exc


async def fetch_torrent(
    sources: Sequence[str],
    btih: str,
    *,
    max_length: int,
    tls: Mapping[str, str] | None = None,
) -> Torrent:
    """The torrent of ``btih`` from the first source that serves one with that info hash.

    Raises :class:`LengthExceededError` when the (matching) torrent's file is longer than
    ``max_length``; :class:`TorrentMismatchError` when sources served only torrents that were
    refused; :class:`BlobNotFoundError` when no source has one; otherwise
    :class:`SourceUnavailableError`.
    """
    cap = torrent_cap(max_length)
    refused: list[str] = []
    unavailable: list[str] = []
    for source in sources:
        try:
            base = normalize_source(source)
        except Exception as exc:  # noqa: BLE001 - a bad source is skipped, named below
            unavailable.append(f"{source}: {exc}")
            continue
        scheme = base.split(":", 1)[0].lower()
        if scheme not in ("http", "https", "file"):
            continue
        url = join_url(base, torrent_relpath(btih))
        try:
            if scheme == "file":
                data = await anyio.to_thread.run_sync(_read_file, url, cap)
            else:
                data = await anyio.to_thread.run_sync(
                    _read_url, url, cap, dict(tls or {}), abandon_on_cancel=True
                )
        except SourceUnavailableError as exc:
            unavailable.append(str(exc))
            continue
        if data is None:
            continue
        if len(data) > cap:
            refused.append(f"{url}: more than {cap} bytes")
            continue
        try:
            return Torrent.from_bytes(data, expected_btih=btih, max_length=max_length)
        except TooLarge as exc:
            raise LengthExceededError(f"btih:{btih}: {exc}") from exc
        except InfoHashMismatch as exc:
            refused.append(f"{url}: {exc}")
        except TorrentRefused as exc:
            refused.append(f"{url}: {exc}")
    if refused:
        raise TorrentMismatchError(
            f"btih:{btih}: every torrent the sources served was refused: {'; '.join(refused)}"
        )
    if unavailable:
        raise SourceUnavailableError(
            f"btih:{btih}: no source could deliver its torrent: {'; '.join(unavailable)}"
        )
    raise BlobNotFoundError(f"btih:{btih}: no source serves {torrent_relpath(btih)}")
