"""A node's verified coordination documents: what the trusted index lists, fetched and checked.

The index lists each coordination document by length and sha256 (the validator set,
activation proposals, rollout plans, halts, deprecations, downgrades). A node takes one only
when all of these hold, in python-tuf's order: the bytes are exactly the listed ones; the
signatures meet the signing role's threshold under the trusted root (governance; release for a
downgrade); the document parses strictly; it has not expired at the reference time; and it
names this node's network where it names one. A listed document that fails any check is left
out (and logged) and recorded in ``refused``: one bad document never stops the others, and the
coordinator fails closed on it -- a release whose rollout plan or halt, or any activation
proposal, is listed but unverified waits until it verifies (fetched again at each check).

:func:`verify_coordination` is the pure check; :func:`refresh_coordination` fetches what the
trusted index lists that the node does not already hold (``trust/coordination/``, saved after
verification) and returns the verified set; :func:`load_coordination` reads the stored set
without the network (``node status``, ``network status``, the agent between checks).
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import TYPE_CHECKING, Any

from attrs import define, field

from ..documents import (
    DOCUMENT_TYPES,
    Deprecation,
    Downgrade,
    Envelope,
    HaltDoc,
    Index,
    MetaFile,
    Proposal,
    RolloutPlan,
    Root,
    ValidatorSet,
    coordination_relpath,
)
from ..errors import BlackholeSyncError, ExpiredError, LengthOrHashMismatchError, SecurityError

if TYPE_CHECKING:
    from ..fetch import RepositoryClient
    from ..node import TrustStore

__all__ = [
    "CoordinationDocs",
    "load_coordination",
    "refresh_coordination",
    "verify_coordination",
]

log = logging.getLogger(__name__)

_ROLE = {"downgrade": "release"}


def verify_coordination(
    kind: str, data: bytes, listed: MetaFile, root: Root, now: _dt.datetime
) -> Any:
    """The verified model of a listed coordination document, or a :class:`SecurityError`."""
    if not listed.matches(data):
        raise LengthOrHashMismatchError(f"{kind}: not the bytes the index lists")
    envelope = Envelope.from_bytes(data, expected_type=kind)
    root.verify_role(envelope, _ROLE.get(kind, "governance"))
    document = envelope.parse(DOCUMENT_TYPES[kind].from_dict)
    if document.expires <= now:
        raise ExpiredError(f"{kind} v{document.version} expired")
    network = getattr(document, "network_id", root.network_id)
    if network != root.network_id:
        raise SecurityError(f"{kind} for network {network!r}, this node is on {root.network_id!r}")
    return document


@define
class CoordinationDocs:
    """The verified coordination documents of one node (empty when the index lists none)."""

    validators: ValidatorSet | None = None
    proposals: dict[str, Proposal] = field(factory=dict)
    rollouts: dict[str, RolloutPlan] = field(factory=dict)
    halts: dict[str, HaltDoc] = field(factory=dict)
    deprecations: dict[str, Deprecation] = field(factory=dict)
    downgrades: dict[str, Downgrade] = field(factory=dict)
    #: relpath -> bytes, of each verified document (served to peers, saved)
    raw: dict[str, bytes] = field(factory=dict)
    #: relpath -> why a listed document was left out
    refused: dict[str, str] = field(factory=dict)

    def add(self, kind: str, key: str, document: Any, data: bytes) -> None:
        self.raw[coordination_relpath(kind, key)] = data
        if kind == "validators":
            self.validators = document
        else:
            tables: dict[str, dict[str, Any]] = {
                "proposal": self.proposals, "rollout": self.rollouts, "halt": self.halts,
                "deprecation": self.deprecations, "downgrade": self.downgrades,
            }  # fmt: skip
            tables[kind][key] = document

    def proposal(self, proposal_id: str) -> Proposal | None:
        return self.proposals.get(proposal_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "validators": None
            if self.validators is None
            else {
                "version": self.validators.version,
                "keys": len(self.validators.validators),
                "total_weight": self.validators.total_weight,
            },
            "proposals": sorted(self.proposals),
            "rollouts": sorted(self.rollouts),
            "halts": {v: h.reason for v, h in sorted(self.halts.items())},
            "deprecations": sorted(self.deprecations),
            "downgrades": sorted(self.downgrades),
            "refused": dict(self.refused),
        }


def _collect(
    index: Index, root: Root, now: _dt.datetime, read: Any
) -> tuple[CoordinationDocs, list[tuple[str, str, MetaFile]]]:
    docs = CoordinationDocs()
    missing = []
    for kind, key, listed in index.coordination():
        relpath = coordination_relpath(kind, key)
        data = read(relpath, kind)
        if data is None or not listed.matches(data):
            missing.append((kind, key, listed))
            continue
        try:
            docs.add(kind, key, verify_coordination(kind, data, listed, root, now), data)
        except SecurityError as exc:
            docs.refused[relpath] = str(exc)
    return docs, missing


def load_coordination(
    trust: TrustStore, index: Index | None, root: Root, now: _dt.datetime
) -> CoordinationDocs:
    """The stored documents the trusted ``index`` lists, verified again (no network)."""
    if index is None:
        return CoordinationDocs()
    docs, missing = _collect(index, root, now, trust.coordination_bytes)
    for kind, key, _listed in missing:
        docs.refused.setdefault(coordination_relpath(kind, key), "not fetched yet")
    return docs


async def refresh_coordination(
    client: RepositoryClient,
    trust: TrustStore,
    index: Index | None,
    root: Root,
    now: _dt.datetime,
) -> CoordinationDocs:
    """Fetch, verify and save what ``index`` lists that is not stored yet; the verified set.
    A document that cannot be fetched or does not verify is left out (``refused``)."""
    if index is None:
        return CoordinationDocs()
    docs, missing = _collect(index, root, now, trust.coordination_bytes)
    for kind, key, listed in missing:
        relpath = coordination_relpath(kind, key)
        try:
            data = await client.fetch_listed(relpath, listed)
            document = verify_coordination(kind, data, listed, root, now)
        except BlackholeSyncError as exc:
            log.warning("coordination document %s left out: %s", relpath, exc)
            docs.refused[relpath] = str(exc)
            continue
        trust.save_coordination(relpath, data)
        docs.add(kind, key, document, data)
    return docs
