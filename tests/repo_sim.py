"""A small in-memory repository simulator for trust tests (python-tuf's RepositorySimulator).

It holds private keys per role, builds and signs root / index / release manifest documents,
and rotates keys. Every method returns the exact bytes a transport would deliver, so tests
feed them to :class:`blackhole_sync.documents.trust.TrustedState` unchanged, or tamper with them first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from blackhole_sync.documents import (
    Envelope,
    MetaFile,
    ReleaseManifest,
    canonical_bytes,
    format_time,
)
from blackhole_sync.documents.signing import PrivateKey, Signature

#: The one reference time every trust test runs at.
REF = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
ROLES = ("root", "release", "index")


def envelope_bytes(signed: Mapping[str, Any], signatures: Iterable[Signature]) -> bytes:
    """The delivered bytes of a signed document (canonical, as a publisher writes them)."""
    return Envelope.of(signed, tuple(signatures)).raw


def sign_bytes(signed: Mapping[str, Any], keys: Sequence[PrivateKey]) -> bytes:
    body = canonical_bytes(signed)
    return envelope_bytes(signed, [k.sign(body) for k in keys])


def artifact(name: str, data: bytes, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "length": len(data),
        "hashes": {"sha256": hashlib.sha256(data).hexdigest()},
        **more,
    }


class RepoSim:
    """Keys per role, the current root, the published releases and the index state."""

    def __init__(
        self,
        *,
        keys: Mapping[str, int] | None = None,
        thresholds: Mapping[str, int] | None = None,
        network_id: str = "blackhole",
    ) -> None:
        counts = {"root": 1, "release": 1, "index": 1, **(keys or {})}
        self.keys: dict[str, list[PrivateKey]] = {
            role: [PrivateKey.generate() for _ in range(n)] for role, n in counts.items()
        }
        self.thresholds: dict[str, int] = {role: 1 for role in counts}
        self.thresholds.update(thresholds or {})
        self.network_id = network_id
        self.root_version = 0
        self.root_expires = REF + dt.timedelta(days=365)
        self.roots: dict[int, bytes] = {}
        self.index_version = 0
        self.index_expires = REF + dt.timedelta(days=1)
        self.releases: dict[str, dict[str, MetaFile]] = {}  # channel -> version -> meta
        self.withdrawn: dict[str, dict[str, str]] = {}  # channel -> version -> reason
        self.manifests: dict[str, bytes] = {}
        self.make_root()

    # -- root ------------------------------------------------------------------------------

    def root_signed(self, version: int, **extra: Any) -> dict[str, Any]:
        all_keys = {k.keyid: k.public_key.to_dict() for ks in self.keys.values() for k in ks}
        return {
            "_type": "root",
            "spec_version": "1",
            "version": version,
            "expires": format_time(extra.pop("expires", self.root_expires)),
            "network_id": self.network_id,
            "keys": all_keys,
            "roles": {
                role: {"keyids": [k.keyid for k in ks], "threshold": self.thresholds[role]}
                for role, ks in self.keys.items()
            },
            **extra,
        }

    def make_root(
        self,
        *,
        version: int | None = None,
        signers: Sequence[PrivateKey] | None = None,
        **extra: Any,
    ) -> bytes:
        """Sign the next root (or ``version``) with the root keys (or ``signers``)."""
        version = self.root_version + 1 if version is None else version
        signed = self.root_signed(version, **extra)
        data = sign_bytes(signed, self.keys["root"] if signers is None else signers)
        self.root_version = max(self.root_version, version)
        self.roots[version] = data
        return data

    @property
    def root(self) -> bytes:
        return self.roots[self.root_version]

    def rotate(
        self,
        role: str,
        new_keys: int | Sequence[PrivateKey],
        *,
        threshold: int | None = None,
        sign_with: str = "both",
    ) -> bytes:
        """Replace ``role``'s keys and sign root N+1 with the old, the new or both root keys."""
        old_root_keys = list(self.keys["root"])
        if isinstance(new_keys, int):
            new_keys = [PrivateKey.generate() for _ in range(new_keys)]
        self.keys[role] = list(new_keys)
        if threshold is not None:
            self.thresholds[role] = threshold
        new_root_keys = self.keys["root"]
        signers = {
            "old": old_root_keys,
            "new": new_root_keys,
            "both": old_root_keys + [k for k in new_root_keys if k not in old_root_keys],
        }[sign_with]
        return self.make_root(signers=signers)

    # -- release manifests -------------------------------------------------------------------

    def manifest_signed(
        self, version: str, *, channel: str = "stable", n_artifacts: int = 1, **extra: Any
    ) -> dict[str, Any]:
        """A manifest in normal form (as ``ReleaseManifest.to_dict`` writes it)."""
        signed = {
            "_type": "release",
            "spec_version": "1",
            "version": version,
            "type": "binary",
            "channel": channel,
            "released": format_time(REF - dt.timedelta(days=1)),
            "artifacts": [
                artifact(f"node-{i}.bin", f"{version}:{i}".encode()) for i in range(n_artifacts)
            ],
            **extra,
        }
        return ReleaseManifest.from_dict(signed).to_dict()

    def make_manifest(
        self,
        version: str,
        *,
        signers: Sequence[PrivateKey] | None = None,
        channel: str = "stable",
        **extra: Any,
    ) -> bytes:
        signed = self.manifest_signed(version, channel=channel, **extra)
        data = sign_bytes(signed, self.keys["release"] if signers is None else signers)
        self.manifests[version] = data
        return data

    def add_release(self, version: str, *, channel: str = "stable", **extra: Any) -> bytes:
        """Sign a manifest and list it in the (next) index; returns the manifest bytes."""
        data = self.make_manifest(version, channel=channel, **extra)
        self.releases.setdefault(channel, {})[version] = MetaFile.of(data)
        return data

    def withdraw(self, version: str, reason: str = "broken") -> None:
        for channel, releases in self.releases.items():
            if version in releases:
                del releases[version]
                self.withdrawn.setdefault(channel, {})[version] = reason
                return
        raise KeyError(version)

    # -- index -------------------------------------------------------------------------------

    def index_signed(self, version: int, **extra: Any) -> dict[str, Any]:
        """An index in normal form (as ``Index.to_dict`` writes it)."""
        channels = sorted(set(self.releases) | set(self.withdrawn)) or ["stable"]
        return {
            "_type": "index",
            "spec_version": "1",
            "version": version,
            "expires": format_time(extra.pop("expires", self.index_expires)),
            "channels": {
                ch: {
                    "releases": {v: m.to_dict() for v, m in self.releases.get(ch, {}).items()},
                    "withdrawn": {v: {"reason": r} for v, r in self.withdrawn.get(ch, {}).items()},
                }
                for ch in channels
            },
            "rollouts": {},
            "halts": {},
            **extra,
        }

    def make_index(
        self,
        *,
        version: int | None = None,
        signers: Sequence[PrivateKey] | None = None,
        **extra: Any,
    ) -> bytes:
        """Sign the next index (or ``version``) with the index keys (or ``signers``)."""
        version = self.index_version + 1 if version is None else version
        signed = self.index_signed(version, **extra)
        data = sign_bytes(signed, self.keys["index"] if signers is None else signers)
        self.index_version = max(self.index_version, version)
        return data
