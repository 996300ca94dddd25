"""Coordination documents on the repository side: drafts signed by separate holders, then
published into the index.

Governance documents (validator set, activation proposal, rollout plan, halt, deprecation) are
signed by the governance role's threshold, the downgrade by the release role's. Each is made as
a draft (``.bhsync/drafts/coordination/<name>.json``: the envelope collecting signatures) by
one holder's command (``governance propose|plan|halt|validators|deprecate``, ``release
downgrade``); every other holder adds a signature with the same command on the same draft
(``governance sign REPO NAME``). A signature counts once per distinct key of the role in the
newest root; a key outside the role is refused before anything is written.

``governance publish REPO --index-key KEY`` publishes every draft that meets its threshold: the
document goes to ``governance/...`` (``downgrades/...``), and a new index lists it by length and
sha256 -- a proposal by id, a plan or halt by release, a deprecation by feature, a downgrade by
the version it returns to, the one validator set. Drafts below their threshold stay drafts.

Versions: a new document for a subject that has one published gets the next version (peers keep
a seq floor per subject, so they only take the newer one).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from attrs import frozen

from .._fsutil import write_atomic
from ..documents import (
    DOCUMENT_TYPES,
    MAX_SIZES,
    Downgrade,
    Envelope,
    Index,
    MetaFile,
    Root,
    Signer,
    coordination_relpath,
    format_time,
    governance_subject,
)
from ..errors import ConflictError, NoSuchVersionError, SignatureError
from .drafts import release_signers
from .layout import RepoLayout, read_limited

if TYPE_CHECKING:
    from .repository import Repository

__all__ = [
    "COORDINATION_KINDS",
    "CoordinationDraft",
    "coordination_relpath",
    "discard_coordination_draft",
    "list_coordination_drafts",
    "next_coordination_version",
    "publish_coordination",
    "sign_coordination_draft",
    "write_coordination_draft",
]

#: The role whose threshold signs each coordination kind.
COORDINATION_KINDS: dict[str, str] = {
    "validators": "governance",
    "proposal": "governance",
    "rollout": "governance",
    "halt": "governance",
    "deprecation": "governance",
    "downgrade": "release",
}


def _key_of(kind: str, document: Any) -> str:
    """The index key a document is listed under ("" for the one validator set)."""
    if kind == "validators":
        return ""
    field = {"proposal": "id", "rollout": "release", "halt": "release",
             "deprecation": "feature", "downgrade": "to_version"}[kind]  # fmt: skip
    return str(getattr(document, field))


def _draft_name(kind: str, key: str) -> str:
    return kind if not key else f"{kind}-{key}"


def listing(index: Index | None, kind: str, key: str) -> MetaFile | None:
    """The index's entry for a coordination document (None: not listed)."""
    if index is None:
        return None
    if kind == "validators":
        return index.validators
    table = {"proposal": index.proposals, "rollout": index.rollouts, "halt": index.halts,
             "deprecation": index.deprecations, "downgrade": index.downgrades}[kind]  # fmt: skip
    return table.get(key)


def _with_listing(index: Index, kind: str, key: str, meta: MetaFile) -> Index:
    if kind == "validators":
        return attrs.evolve(index, validators=meta)
    field = {"proposal": "proposals", "rollout": "rollouts", "halt": "halts",
             "deprecation": "deprecations", "downgrade": "downgrades"}[kind]  # fmt: skip
    changes: dict[str, Any] = {field: {**getattr(index, field), key: meta}}
    return attrs.evolve(index, **changes)


def next_coordination_version(layout: RepoLayout, kind: str, key: str) -> int:
    """One above the published document's version for this subject (1 when there is none)."""
    meta = listing(layout.index(), kind, key)
    if meta is None:
        return 1
    data = read_limited(layout.coordination_path(coordination_relpath(kind, key)), MAX_SIZES[kind])
    document = Envelope.from_bytes(data, expected_type=kind).parse(DOCUMENT_TYPES[kind].from_dict)
    return int(document.version) + 1


@frozen
class CoordinationDraft:
    """A coordination document waiting for signatures."""

    name: str
    kind: str
    key: str
    envelope: Envelope
    signers: tuple[str, ...]
    threshold: int

    @property
    def document(self) -> Any:
        return self.envelope.parse(DOCUMENT_TYPES[self.kind].from_dict)

    @property
    def complete(self) -> bool:
        return len(self.signers) >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "subject": governance_subject(self.document),
            "role": COORDINATION_KINDS[self.kind],
            "signatures": len(self.signers),
            "threshold": self.threshold,
            "signed_by": list(self.signers),
            "document": dict(self.envelope.signed),
        }


def _signers(root: Root, kind: str, envelope: Envelope) -> tuple[str, ...]:
    return tuple(release_signers(root, envelope, role=COORDINATION_KINDS[kind]))


def _check_holder(root: Root, kind: str, key: Signer) -> None:
    role = COORDINATION_KINDS[kind]
    if role not in root.roles:
        raise SignatureError(f"root v{root.version} has no {role} role: it cannot sign a {kind}")
    if key.keyid not in root.roles[role].keyids:
        raise SignatureError(f"key {key.keyid[:16]}... is not a {role} key of root v{root.version}")


def _load(layout: RepoLayout, name: str) -> CoordinationDraft:
    path = layout.coordination_draft_path(name)
    if not path.is_file():
        raise NoSuchVersionError(f"no coordination draft {name!r}")
    data = read_limited(path, max(MAX_SIZES[k] for k in COORDINATION_KINDS))
    envelope = Envelope.from_bytes(data)
    kind = envelope.type
    if kind not in COORDINATION_KINDS:
        raise ConflictError(f"draft {name!r} holds a {kind!r}, not a coordination document")
    document = envelope.parse(DOCUMENT_TYPES[kind].from_dict)
    root = layout.root()
    role = COORDINATION_KINDS[kind]
    threshold = root.roles[role].threshold if role in root.roles else 1
    return CoordinationDraft(
        name, kind, _key_of(kind, document), envelope, _signers(root, kind, envelope), threshold
    )


def write_coordination_draft(layout: RepoLayout, document: Any, key: Signer) -> CoordinationDraft:
    """Start the draft of ``document`` signed by ``key``, or add ``key``'s signature when the
    same document is already a draft (:class:`ConflictError` when a different one is)."""
    kind = document.TYPE
    root = layout.root()
    _check_holder(root, kind, key)
    name = _draft_name(kind, _key_of(kind, document))
    signed = document.to_dict()
    with layout.locked():
        path = layout.coordination_draft_path(name)
        if path.is_file():
            existing = _load(layout, name)
            if dict(existing.envelope.signed) != signed:
                raise ConflictError(
                    f"a different draft {name!r} is pending: sign it (governance sign) or "
                    "discard it first"
                )
            envelope = existing.envelope
        else:
            envelope = Envelope.of(signed, ())
        if key.keyid not in _signers(root, kind, envelope):
            kept = tuple(s for s in envelope.signatures if s.keyid != key.keyid)
            envelope = Envelope.of(envelope.signed, (*kept, key.sign(envelope.signed_bytes)))
            layout.coordination_drafts_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, envelope.raw, mode=0o600)
    return _load(layout, name)


def sign_coordination_draft(layout: RepoLayout, name: str, key: Signer) -> bool:
    """Add one holder's signature to a pending draft; False if that key had signed."""
    draft = _load(layout, name)
    _check_holder(layout.root(), draft.kind, key)
    if key.keyid in draft.signers:
        return False
    write_coordination_draft(layout, draft.document, key)
    return True


def list_coordination_drafts(layout: RepoLayout) -> list[CoordinationDraft]:
    folder = layout.coordination_drafts_dir
    if not folder.is_dir():
        return []
    return [_load(layout, p.stem) for p in sorted(folder.glob("*.json"))]


def discard_coordination_draft(layout: RepoLayout, name: str) -> None:
    path = layout.coordination_draft_path(name)
    if not path.is_file():
        raise NoSuchVersionError(f"no coordination draft {name!r}")
    with layout.locked():
        os.unlink(path)


def publish_coordination(
    repo: Repository,
    index_key: Signer,
    *,
    names: Sequence[str] | None = None,
    now: _dt.datetime | None = None,
) -> list[str]:
    """Publish the drafts (``names``, or every one) that meet their threshold; returns the
    names published. A named draft below its threshold raises :class:`SignatureError`;
    nothing is written then."""
    from .layout import norm_time

    now = norm_time(now)
    drafts = list_coordination_drafts(repo)
    if names is not None:
        wanted = set(names)
        missing = wanted - {d.name for d in drafts}
        if missing:
            raise NoSuchVersionError(f"no coordination draft {sorted(missing)[0]!r}")
        drafts = [d for d in drafts if d.name in wanted]
        short = [d for d in drafts if not d.complete]
        if short:
            d = short[0]
            raise SignatureError(
                f"draft {d.name!r}: {len(d.signers)} of the {d.threshold} signatures needed"
            )
    ready = [d for d in drafts if d.complete]
    if not ready:
        return []
    index = repo.index()
    for d in ready:
        document = d.document
        if document.expires <= now:
            raise ConflictError(f"draft {d.name!r} expired at {format_time(document.expires)}")
        published = listing(index, d.kind, d.key)
        if published is not None and next_coordination_version(repo, d.kind, d.key) > (
            document.version
        ):
            raise ConflictError(
                f"draft {d.name!r} has version {document.version}; a newer one is published"
            )
        if isinstance(document, Downgrade) and (
            index is None or index.listing(document.to_version) is None
        ):
            raise NoSuchVersionError(
                f"downgrade to {document.to_version}: that release is not published"
            )

    def change(new: Index) -> Index:
        for d in ready:
            new = _with_listing(new, d.kind, d.key, MetaFile.of(d.envelope.raw))
        return new

    keep: Callable[[Any], Any] = lambda chans: chans  # noqa: E731 - the channels stay
    with repo.locked():
        _index, data, _state = repo._next_index(index_key, now, keep, coordination=change)
        for d in ready:
            target = repo.coordination_path(coordination_relpath(d.kind, d.key))
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, d.envelope.raw, mode=0o644)
        write_atomic(repo.index_path, data)
        for d in ready:
            repo.coordination_draft_path(d.name).unlink(missing_ok=True)
    return [d.name for d in ready]
