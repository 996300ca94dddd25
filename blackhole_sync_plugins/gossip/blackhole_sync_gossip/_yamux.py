"""Yamux with go-yamux's receive-window rule: credit the window back once half of it is read.

py-libp2p 0.8's ``YamuxStream.read`` credits every read back at once ("release on read"):
pubsub reads a message as its varint length and then its body, so each message a peer sends
us costs a WINDOW_UPDATE frame back (12 bytes of yamux header in an 18-byte Noise frame), two
or three per message. Measured with ``bench/bench_gossip.py``: 11 % of the bytes a node writes,
about 0.9 of the amplification target of 8. go-yamux (Kubo and every go-libp2p node) sends an
update only when the unused credit falls below half the window; :class:`HalfWindowYamux` does
the same on the connections our host makes, and nothing else changes (py-libp2p's window
auto-tuning is for bulk streams; gossip messages are capped far below the 256 KiB window).

py-libp2p builds ``Yamux`` connections and their streams by name (the muxer options' class is
not used for yamux), so there is no factory to hand over: :func:`use_half_window_yamux` wraps
one swarm's muxer upgrade, and each connection it makes, and each stream that connection opens
or accepts, is given a subclass that overrides one method. Other hosts in the process are not
touched.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IMuxedConn, IMuxedStream, ISecureConn
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream


class HalfWindowStream(YamuxStream):
    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        """Send a WINDOW_UPDATE only once at least half the window has been read (go-yamux's
        ``sendWindowUpdate``): what was read is credited back in one frame."""
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            delta = self.target_recv_window - (self.recv_window + buffered)
            if delta < self.target_recv_window // 2:
                return
            self.recv_window += delta
        await self.send_window_update(delta)  # never under window_lock (see py-libp2p)


class HalfWindowYamux(Yamux):
    """``Yamux`` whose streams are :class:`HalfWindowStream`."""

    async def open_stream(self) -> YamuxStream:
        stream = await super().open_stream()
        stream.__class__ = HalfWindowStream
        return stream

    async def accept_stream(self) -> IMuxedStream:
        stream = await super().accept_stream()
        if type(stream) is YamuxStream:
            stream.__class__ = HalfWindowStream
        return stream


def use_half_window_yamux(swarm: Any) -> None:
    """Make every yamux connection ``swarm`` upgrades from now on a :class:`HalfWindowYamux`
    (before it starts: no stream exists yet)."""
    muxers = swarm.upgrader.muxer_multistream
    new_conn = muxers.new_conn

    async def half_window_conn(conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        muxed = await new_conn(conn, peer_id)
        if type(muxed) is Yamux:
            muxed.__class__ = HalfWindowYamux
        return muxed

    muxers.new_conn = half_window_conn
