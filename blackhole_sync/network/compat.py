"""CompatibilityManager: fork ids at the handshake, message translation, deprecations.

**Fork id** (after Ethereum's EIP-2124). A node's fork id sums up what it runs: the network,
the protocol versions it speaks (``[node] protocol_versions``) and the protocol activations it
has gone through, in order. The hash is a CRC-32 chain: it starts from the network id and is
extended by each activation (``"<protocol version>@<activation point>"``); a node also sends
the hashes its chain had before its last few activations (``history``). Two peers are
compatible when they are on the same network, speak a protocol version in common, and one's
chain is the other's or a prefix of it (one has activated what the other has not yet: it
will). Anything else -- a foreign network, no common protocol, a chain that forked off -- is
refused at the handshake: :func:`admit` is the gossip plugin's peer-admission callback and
:func:`hello_bytes` what a node sends (transport options ``hello`` and ``admit``). A node that
declares no protocol versions sends the plugin's default hello (the network id), as the origin
does; both are admitted by every node of the network.

**Translation.** Messages of the host's protocol change shape between protocol versions;
plugins register translators (``blackhole_sync_protocol_translators``: objects with
``from_version``, ``to_version`` and ``translate(message)``) and
:meth:`CompatibilityManager.translate_protocol_message` chains them along the shortest path.

**Deprecations** are governance-signed :class:`~blackhole_sync.documents.Deprecation`
documents listed in the index; :meth:`CompatibilityManager.check_deprecated_features` turns the
verified ones into warnings (``node status`` shows them).
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from attrs import frozen

from ..documents import Deprecation, compare_versions, format_time
from ..errors import FormatError

__all__ = [
    "HELLO_MAX_BYTES",
    "CompatibilityManager",
    "DeprecationWarningInfo",
    "ForkId",
    "ProtocolTranslator",
    "admit",
    "deprecation_warnings",
    "fork_id",
    "hello_bytes",
    "parse_hello",
]

#: Largest hello a node sends or reads (the gossip plugin's ``hello_max_size``).
HELLO_MAX_BYTES = 256
#: Past chain hashes a hello carries (how far behind a peer may be and still be admitted).
HISTORY = 8
#: Most protocol versions a hello lists.
MAX_PROTOCOLS = 16


@frozen
class ForkId:
    """What a node sends at the handshake (see the module docstring)."""

    network: str
    protocols: tuple[int, ...]
    hash: str  # 8 hex digits
    history: tuple[str, ...] = ()
    next: int = 0  # the protocol version of a pending activation (0: none)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "network": self.network,
            "protocols": list(self.protocols),
            "fork": self.hash,
            "history": list(self.history),
            "next": self.next,
        }


def fork_id(
    network_id: str,
    protocol_versions: Iterable[int],
    activations: Sequence[tuple[int, str]] = (),
    *,
    pending: int = 0,
) -> ForkId:
    """The fork id of a node on ``network_id`` speaking ``protocol_versions`` that has gone
    through ``activations`` ((protocol version, activation point) in order: the point is a
    height or a time as text); ``pending`` names a protocol version locked in, not active."""
    h = zlib.crc32(network_id.encode())
    hashes = [f"{h:08x}"]
    for protocol, point in activations:
        h = zlib.crc32(f"{protocol}@{point}".encode(), h)
        hashes.append(f"{h:08x}")
    protocols = tuple(sorted(set(protocol_versions)))[-MAX_PROTOCOLS:]
    return ForkId(network_id, protocols, hashes[-1], tuple(hashes[:-1][-HISTORY:]), pending)


def hello_bytes(fork: ForkId) -> bytes:
    """The handshake bytes of ``fork`` (canonical JSON, at most :data:`HELLO_MAX_BYTES`)."""
    data = json.dumps(fork.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    if len(data) > HELLO_MAX_BYTES:
        raise ValueError(f"hello of {len(data)} bytes exceeds {HELLO_MAX_BYTES}")
    return data


def _hex8(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 8 or value.strip("0123456789abcdef"):
        raise FormatError("a fork hash is 8 lowercase hex digits")
    return value


def parse_hello(data: bytes) -> ForkId:
    """A peer's hello, strictly; :class:`FormatError` for anything else."""
    if len(data) > HELLO_MAX_BYTES:
        raise FormatError("hello too large")
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise FormatError(f"hello is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != 1:
        raise FormatError("not a version 1 hello")
    network, protocols = obj.get("network"), obj.get("protocols")
    history, nxt = obj.get("history", []), obj.get("next", 0)
    if not isinstance(network, str) or not network:
        raise FormatError("hello names no network")
    if not isinstance(protocols, list) or not all(type(p) is int for p in protocols):
        raise FormatError("hello protocols must be integers")
    if not isinstance(history, list) or len(history) > HISTORY:
        raise FormatError("hello history malformed")
    if type(nxt) is not int:
        raise FormatError("hello next must be an integer")
    return ForkId(
        network, tuple(protocols), _hex8(obj.get("fork")), tuple(_hex8(h) for h in history), nxt
    )


def compatible(local: ForkId, remote: ForkId) -> str | None:
    """Why ``remote`` is refused by ``local`` (None: admitted)."""
    if remote.network != local.network:
        return f"network {remote.network!r}, this node is on {local.network!r}"
    if not set(remote.protocols) & set(local.protocols):
        return f"no common protocol version ({list(remote.protocols)} vs {list(local.protocols)})"
    if remote.hash == local.hash:
        return None
    if remote.hash in local.history:
        return None  # the peer is behind on our chain: it will activate what we did
    if local.hash in remote.history:
        return None  # the peer is ahead on our chain
    return f"fork {remote.hash} is not on this node's chain ({local.hash})"


def admit(local: ForkId | None, peer: str, hello: bytes, network_id: str) -> bool:
    """The peer-admission decision of the handshake: True admits ``peer``.

    ``local`` is this node's fork id (None when it declares no protocol versions: then only
    the network is checked). A peer whose hello is the bare network id runs no host protocol
    (an origin, a mirror: the gossip plugin's default hello) and is admitted -- it only relays
    signed documents, which the peer-message gate checks one by one. Any other hello must be a
    fork id compatible with ours.
    """
    del peer  # the decision rests on what the peer runs, not who it is
    if hello == network_id.encode():
        return True
    try:
        remote = parse_hello(hello)
    except FormatError:
        return False
    if local is None:
        return remote.network == network_id
    return compatible(local, remote) is None


class ProtocolTranslator(Protocol):
    """Turns a host-protocol message of ``from_version`` into one of ``to_version``."""

    from_version: int
    to_version: int

    def translate(self, message: Mapping[str, Any]) -> Mapping[str, Any]: ...


@frozen
class DeprecationWarningInfo:
    """A deprecated feature: what, removed in which release, and whether that is soon."""

    feature: str
    remove_in: str
    message: str
    imminent: bool  # a release at or past ``remove_in`` is already published

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "remove_in": self.remove_in,
            "message": self.message,
            "imminent": self.imminent,
        }


class CompatibilityManager:
    """The design's CompatibilityManager for one node.

    ``protocol_versions`` are the protocol versions it speaks, ``translators`` the plugins'
    (``blackhole_sync_protocol_translators``), ``deprecations`` the verified deprecation
    documents, ``releases`` the published release versions (for "imminent").
    """

    def __init__(
        self,
        network_id: str,
        protocol_versions: Iterable[int],
        *,
        activations: Sequence[tuple[int, str]] = (),
        translators: Iterable[ProtocolTranslator] = (),
        deprecations: Iterable[Deprecation] = (),
        releases: Iterable[str] = (),
    ) -> None:
        self.network_id = network_id
        self.protocol_versions = tuple(sorted(set(protocol_versions)))
        self.activations = tuple(activations)
        self._edges: dict[int, dict[int, ProtocolTranslator]] = collections.defaultdict(dict)
        for t in translators:
            self._edges[t.from_version].setdefault(t.to_version, t)
        self.deprecations = tuple(deprecations)
        self.releases = tuple(releases)
        self.compatibility_target: int | None = None

    def fork_id(self, *, pending: int = 0) -> ForkId:
        return fork_id(self.network_id, self.protocol_versions, self.activations, pending=pending)

    def hello(self) -> bytes:
        return hello_bytes(self.fork_id())

    def admit(self, peer: str, hello: bytes) -> bool:
        return admit(self.fork_id(), peer, hello, self.network_id)

    def _path(self, a: int, b: int) -> list[ProtocolTranslator] | None:
        if a == b:
            return []
        queue: collections.deque[tuple[int, list[ProtocolTranslator]]] = collections.deque(
            [(a, [])]
        )
        seen = {a}
        while queue:
            version, path = queue.popleft()
            for nxt, translator in sorted(self._edges.get(version, {}).items()):
                if nxt in seen:
                    continue
                if nxt == b:
                    return [*path, translator]
                seen.add(nxt)
                queue.append((nxt, [*path, translator]))
        return None

    def check_protocol_compatibility(self, v1: int, v2: int) -> bool:
        """Whether a node on ``v1`` and one on ``v2`` can talk: the same version, or
        translators both ways."""
        return self._path(v1, v2) is not None and self._path(v2, v1) is not None

    def get_minimum_supported_version(self) -> int | None:
        """The oldest protocol version this node speaks (None: it declares none)."""
        return self.protocol_versions[0] if self.protocol_versions else None

    def enable_compatibility_mode(self, target_version: int) -> None:
        """Talk to peers on ``target_version`` through translators (ValueError: impossible)."""
        if not self.protocol_versions:
            raise ValueError("this node declares no protocol versions ([node] protocol_versions)")
        ours = self.protocol_versions[-1]
        if not self.check_protocol_compatibility(ours, target_version):
            raise ValueError(f"no translation between protocol {ours} and {target_version}")
        self.compatibility_target = target_version

    def translate_protocol_message(
        self, message: Mapping[str, Any], from_version: int, to_version: int
    ) -> Mapping[str, Any]:
        """``message`` of ``from_version`` as ``to_version`` expects it, through the shortest
        chain of registered translators (ValueError when there is none)."""
        path = self._path(from_version, to_version)
        if path is None:
            raise ValueError(f"no translator chain from protocol {from_version} to {to_version}")
        for translator in path:
            message = translator.translate(message)
        return message

    def announce_deprecation(
        self,
        feature: str,
        remove_in: str,
        *,
        message: str = "",
        version: int = 1,
        expires: _dt.datetime,
    ) -> Deprecation:
        """The (unsigned) deprecation document for governance to sign and publish."""
        return Deprecation(feature, remove_in, version, expires, message)

    def check_deprecated_features(self) -> list[DeprecationWarningInfo]:
        """Every deprecation in force, with "imminent" when its removal release is out."""
        return deprecation_warnings(self.deprecations, self.releases)


def deprecation_warnings(
    deprecations: Iterable[Deprecation], releases: Iterable[str]
) -> list[DeprecationWarningInfo]:
    """Warnings for verified deprecations; "imminent" once a release at or past the removal
    version is published."""
    published = list(releases)
    out = []
    for d in sorted(deprecations, key=lambda d: d.feature):
        imminent = any(compare_versions(r, d.remove_in) >= 0 for r in published)
        text = d.message or f"{d.feature} is removed in {d.remove_in}"
        out.append(DeprecationWarningInfo(d.feature, d.remove_in, text, imminent))
    return out


def activation_point(height: int | None, time: _dt.datetime | None) -> str:
    """The text of an activation point in a fork id's chain."""
    return f"h{height}" if height is not None else f"t{format_time(time) if time else ''}"
