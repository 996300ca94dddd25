"""Making announcements: the signed pointer to a new index that gossip and the DHT carry.

Only the holder of the online index key can make one (the same key signs the index). The
origin (``serve REPO --index-key KEY``), ``release publish`` and ``repo refresh`` call
:func:`make_announcements` with the index they just wrote; nodes decide what they receive with
:class:`~blackhole_sync.network.messages.PeerMessageGate`.
"""

from __future__ import annotations

from ..documents import (
    MAX_ANNOUNCEMENT_BYTES,
    Announcement,
    Envelope,
    Index,
    MetaFile,
    PrivateKey,
    Root,
)
from ..errors import FormatError, SignatureError

__all__ = ["make_announcement", "make_announcements"]


def make_announcement(index_bytes: bytes, root: Root, channel: str, key: PrivateKey) -> bytes:
    """The signed announcement of ``index_bytes`` (a signed index) for ``channel``.

    It expires with the index it names. Raises :class:`SignatureError` when ``key`` is not the
    root's index key (nobody would accept it) and :class:`FormatError` when the result would
    exceed :data:`~blackhole_sync.documents.MAX_ANNOUNCEMENT_BYTES`.
    """
    spec, _keys = root.role_keys("index")
    if key.keyid not in spec.keyids:
        raise SignatureError(f"key {key.keyid[:16]} is not the index key of root v{root.version}")
    index = Envelope.from_bytes(index_bytes, expected_type="index").parse(Index.from_dict)
    document = Announcement(
        network_id=root.network_id,
        channel=channel,
        index_version=index.version,
        index=MetaFile.of(index_bytes),
        expires=index.expires,
    )
    signed = Envelope.sign(document.to_dict(), [key]).raw
    if len(signed) > MAX_ANNOUNCEMENT_BYTES:
        raise FormatError(
            f"announcement of {len(signed)} bytes exceeds {MAX_ANNOUNCEMENT_BYTES} bytes"
        )
    return signed


def make_announcements(index_bytes: bytes, root: Root, key: PrivateKey) -> dict[str, bytes]:
    """One announcement per channel the index lists, by channel name."""
    index = Envelope.from_bytes(index_bytes, expected_type="index").parse(Index.from_dict)
    return {
        channel: make_announcement(index_bytes, root, channel, key)
        for channel in sorted(index.channels)
    }
