"""The root document: the keys and thresholds of every role.

Signed by k-of-n root keys; a new root version is signed by the thresholds of both the old and
the new root, and versions go up by exactly one (``TrustedState`` enforces the chain).
:meth:`Root.verify_role` checks an envelope against a role's threshold under this root.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError
from .envelope import Envelope
from .fields import SPEC_VERSION, _channel_name, _keyid, _Reader, format_time
from .signing import PublicKey, verify_threshold

__all__ = ["Role", "Root"]


@frozen
class Role:
    keyids: tuple[str, ...]
    threshold: int
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "role") -> Role:
        r = _Reader(obj, where)
        keyids = r.items("keyids", _keyid, max_items=256)
        threshold = r.integer("threshold", minimum=1, maximum=256)
        if threshold > len(set(keyids)):
            raise FormatError(f"{where}: threshold {threshold} exceeds its distinct keys")
        return cls(keyids, threshold, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "keyids": list(self.keyids), "threshold": self.threshold}


def _public_key(value: Any, where: str) -> PublicKey:
    r = _Reader(value, where)
    r.const("keytype", "ed25519")
    r.const("scheme", "ed25519")
    key = PublicKey.from_hex(r.string("public", max_len=64))
    if r.extra():
        raise FormatError(f"{where}: unknown key fields {sorted(r.extra())}")
    return key


@frozen
class Root:
    """Keys and thresholds of every role. Versions go up by exactly one."""

    version: int
    expires: _dt.datetime
    keys: Mapping[str, PublicKey]
    roles: Mapping[str, Role]
    network_id: str = "blackhole"
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "root"
    REQUIRED_ROLES: ClassVar[tuple[str, ...]] = ("root", "release", "index")
    KNOWN_ROLES: ClassVar[tuple[str, ...]] = ("root", "release", "index", "governance")

    @classmethod
    def from_dict(cls, obj: Any, where: str = "root") -> Root:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        version = r.integer("version", minimum=1)
        expires = r.time("expires")
        keys = r.mapping("keys", _public_key, max_items=1024)
        for kid, key in keys.items():
            if key.keyid != kid:
                raise FormatError(f"{where}.keys: key id {kid[:16]}... is not sha256 of its key")
        roles = r.mapping("roles", Role.from_dict, max_items=16)
        for name in cls.REQUIRED_ROLES:
            if name not in roles:
                raise FormatError(f"{where}.roles: the {name!r} role is required")
        for name, role in roles.items():
            if name not in cls.KNOWN_ROLES:
                raise FormatError(f"{where}.roles: unknown role {name!r}")
            for kid in role.keyids:
                if kid not in keys:
                    raise FormatError(f"{where}.roles.{name}: key {kid[:16]}... not in keys")
        network_id = _channel_name(
            r.string("network_id", "blackhole", max_len=64), f"{where}.network_id"
        )
        return cls(version, expires, keys, roles, network_id, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "expires": format_time(self.expires),
            "keys": {k: v.to_dict() for k, v in self.keys.items()},
            "roles": {k: v.to_dict() for k, v in self.roles.items()},
            "network_id": self.network_id,
        }

    def role_keys(self, role: str) -> tuple[Role, dict[str, PublicKey]]:
        if role not in self.roles:
            raise FormatError(f"root version {self.version} has no {role!r} role")
        spec = self.roles[role]
        return spec, {k: self.keys[k] for k in spec.keyids}

    def verify_role(self, envelope: Envelope, role: str) -> frozenset[str]:
        """Verify ``envelope`` meets ``role``'s threshold under this root."""
        spec, keys = self.role_keys(role)
        return verify_threshold(
            envelope.signed_bytes,
            envelope.signatures,
            keys,
            spec.keyids,
            spec.threshold,
            what=f"{envelope.type} (role {role}, root v{self.version})",
        )
