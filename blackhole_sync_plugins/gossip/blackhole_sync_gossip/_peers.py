"""Which addresses may be dialled, and the bounded table of peers to dial.

The table is the node's memory of where peers are: bootstrap entries (kept
forever) and entries learnt by peer exchange (evicted oldest-first when the
table is full). Each entry carries its own exponential backoff, so a node whose
every dial failed keeps retrying, ever more slowly, instead of giving up (the
80-process measurement lost a node exactly that way).
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from dataclasses import dataclass

from libp2p.peer.id import ID
from multiaddr import Multiaddr
from multiaddr.exceptions import ProtocolLookupError

__all__ = ["AddressPolicy", "PeerBook"]


class AddressPolicy:
    """Decides which multiaddrs this node will dial or pass on to others."""

    def __init__(self, *, loopback_only: bool) -> None:
        self.loopback_only = loopback_only

    def allows(self, addr: Multiaddr) -> bool:
        names = [p.name for p in addr.protocols()]
        if "tcp" not in names or "p2p-circuit" in names:
            return False
        host: str | None = None
        for proto in ("ip4", "ip6"):
            try:
                host = addr.value_for_protocol(proto)
            except ProtocolLookupError:
                continue
            if host:
                break
        if not host:
            return False  # no DNS names: they could resolve anywhere
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        if ip.is_unspecified or ip.is_multicast:
            return False
        return ip.is_loopback if self.loopback_only else True

    @staticmethod
    def transport_part(addr: Multiaddr) -> Multiaddr:
        """The address without its ``/p2p/<id>`` suffix."""
        try:
            peer = addr.value_for_protocol("p2p")
        except ProtocolLookupError:
            return addr
        if not peer:
            return addr
        return addr.decapsulate(Multiaddr(f"/p2p/{peer}"))


@dataclass(slots=True)
class _Entry:
    addrs: tuple[Multiaddr, ...]
    bootstrap: bool
    failures: int = 0
    next_attempt: float = 0.0


class PeerBook:
    """Bounded table of dial candidates with per-peer exponential backoff."""

    def __init__(
        self,
        *,
        self_id: ID,
        policy: AddressPolicy,
        max_peers: int,
        max_addrs: int,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self._self_id = self_id
        self._policy = policy
        self._max_peers = max_peers
        self._max_addrs = max_addrs
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._entries: OrderedDict[ID, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, peer_id: ID, addrs: list[Multiaddr], *, bootstrap: bool = False) -> bool:
        """Remember where a peer listens; returns False if nothing usable was given."""
        if peer_id == self._self_id:
            return False
        usable: list[Multiaddr] = []
        for addr in addrs:
            addr = self._policy.transport_part(addr)
            if self._policy.allows(addr) and addr not in usable:
                usable.append(addr)
        if not usable:
            return False
        usable = usable[: self._max_addrs]
        entry = self._entries.get(peer_id)
        if entry is not None:
            if not entry.bootstrap:
                merged = list(dict.fromkeys([*usable, *entry.addrs]))
                entry.addrs = tuple(merged[: self._max_addrs])
            self._entries.move_to_end(peer_id)
            return True
        self._entries[peer_id] = _Entry(tuple(usable), bootstrap)
        self._evict()
        return True

    def _evict(self) -> None:
        while len(self._entries) > self._max_peers:
            for peer_id, entry in self._entries.items():
                if not entry.bootstrap:
                    del self._entries[peer_id]
                    break
            else:
                return  # only bootstrap entries left: they are never evicted

    def due(
        self, now: float, *, exclude: set[ID], limit: int
    ) -> list[tuple[ID, tuple[Multiaddr, ...]]]:
        """Up to ``limit`` candidates whose backoff has expired: fewest failures first, and
        among equals the operator's bootstrap entries before peers learnt or remembered."""
        ready = [
            (entry.failures, not entry.bootstrap, random.random(), peer_id, entry.addrs)
            for peer_id, entry in self._entries.items()
            if peer_id not in exclude and entry.next_attempt <= now
        ]
        ready.sort(key=lambda r: (r[0], r[1], r[2]))
        return [(peer_id, addrs) for _, _, _, peer_id, addrs in ready[:limit]]

    def record(self, peer_id: ID, ok: bool, now: float) -> None:
        entry = self._entries.get(peer_id)
        if entry is None:
            return
        if ok:
            entry.failures = 0
            entry.next_attempt = now
            return
        entry.failures += 1
        delay = min(self._backoff_max, self._backoff_initial * 2 ** (entry.failures - 1))
        entry.next_attempt = now + delay * random.uniform(0.8, 1.2)

    def peers(self) -> list[ID]:
        """Every peer in the table, most recently added or confirmed last."""
        return list(self._entries)

    def addrs_of(self, peer_id: ID) -> tuple[Multiaddr, ...]:
        entry = self._entries.get(peer_id)
        return entry.addrs if entry is not None else ()

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                "peer_id": p.to_base58(),
                "addrs": [str(a) for a in e.addrs],
                "bootstrap": e.bootstrap,
                "failures": e.failures,
            }
            for p, e in self._entries.items()
        ]
