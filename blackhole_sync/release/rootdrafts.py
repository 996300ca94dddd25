"""Root drafts: a new root signed by separate holders, each on their own machine.

``repo init`` or ``repo rotate`` given fewer root keys than the threshold(s) cannot finish
the root alone. It writes the root, signed by the keys it was given, as a draft
(``REPO/.bhsync/drafts/root/root.json``, never ``root.json``); each holder then adds their own
signature (``repo sign REPO --key KEY``: :func:`sign_root_draft`) and ``repo publish-root``
(:func:`publish_root_draft`) publishes it once it verifies as nodes verify it:

* a first root (version 1) needs its own root threshold;
* a rotation (version N+1) needs the thresholds of root N *and* of itself.

A signature counts once per distinct key. Only keys of the old or the new root role may sign
(anything else: :class:`SignatureError`, nothing written); a second signature by the same key
is a no-op. While a draft is pending, another ``init``/``rotate`` is a
:class:`ConflictError`; :func:`discard_root_draft` drops it.

The draft also records the repository settings it changes (``config.json`` beside it: the
root expiry period of a rotation), written only when it is published.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Literal

from attrs import frozen

from .._fsutil import fsync_dir, remove_tree, write_atomic
from ..documents import Envelope, Root, Signer, TrustedState
from ..errors import ConflictError, FormatError, NoSuchVersionError, SignatureError
from .layout import RepoConfig, RepoLayout, json_bytes, read_limited

__all__ = [
    "RoleProgress",
    "RootDraftStatus",
    "discard_root_draft",
    "publish_root_draft",
    "root_draft_status",
    "sign_root_draft",
    "write_root_draft",
]


@frozen
class RoleProgress:
    """How far a root draft is towards one root role's threshold."""

    root_version: int
    threshold: int
    signed_by: tuple[str, ...]  # key ids of that role whose signatures verify

    @property
    def met(self) -> bool:
        return len(self.signed_by) >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "root_version": self.root_version,
            "threshold": self.threshold,
            "signatures": len(self.signed_by),
            "signed_by": list(self.signed_by),
            "met": self.met,
        }


@frozen
class RootDraftStatus:
    """A pending root draft: what it is and who signed it."""

    version: int
    kind: Literal["init", "rotate"]
    root: Root
    signed_by: tuple[str, ...]  # every root key (old or new) whose signature verifies
    new: RoleProgress  # the draft's own root threshold
    old: RoleProgress | None  # the current root's threshold (a rotation)

    @property
    def complete(self) -> bool:
        return self.new.met and (self.old is None or self.old.met)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "expires": self.root.to_dict()["expires"],
            "signed_by": list(self.signed_by),
            "new_threshold": self.new.to_dict(),
            "old_threshold": None if self.old is None else self.old.to_dict(),
            "complete": self.complete,
        }


def _verified(root: Root, env: Envelope) -> tuple[str, ...]:
    """Key ids of ``root``'s root role whose signatures on ``env`` verify, each once."""
    _spec, keys = root.role_keys("root")
    good: list[str] = []
    for sig in env.signatures:
        key = keys.get(sig.keyid)
        if key is None or sig.keyid in good:
            continue
        try:
            raw = bytes.fromhex(sig.sig)
        except ValueError:
            continue
        if key.verify(env.signed_bytes, raw):
            good.append(sig.keyid)
    return tuple(good)


def _current_root(layout: RepoLayout) -> Root | None:
    return layout.root() if layout.root_path().is_file() else None


def _pending(layout: RepoLayout) -> tuple[Envelope, Root]:
    env = layout.root_draft_envelope()
    if env is None:
        raise NoSuchVersionError(f"{layout.path} has no pending root draft")
    return env, env.parse(Root.from_dict)


def root_draft_status(layout: RepoLayout) -> RootDraftStatus | None:
    """The pending root draft and how far it is towards its thresholds; None without one."""
    if layout.root_draft_envelope() is None:
        return None
    env, draft = _pending(layout)
    current = _current_root(layout)
    new = RoleProgress(draft.version, draft.roles["root"].threshold, _verified(draft, env))
    old = None
    if current is not None:
        old = RoleProgress(
            current.version, current.roles["root"].threshold, _verified(current, env)
        )
    signed = tuple(dict.fromkeys((*new.signed_by, *(old.signed_by if old else ()))))
    kind: Literal["init", "rotate"] = "rotate" if current is not None else "init"
    return RootDraftStatus(draft.version, kind, draft, signed, new, old)


def _root_keyids(draft: Root, current: Root | None) -> set[str]:
    ids = set(draft.roles["root"].keyids)
    if current is not None:
        ids |= set(current.roles["root"].keyids)
    return ids


def write_root_draft(
    layout: RepoLayout,
    draft: Root,
    signers: list[Signer],
    *,
    config: RepoConfig | None = None,
) -> Envelope:
    """Write ``draft`` signed by ``signers`` (each a root key of the current root or of the
    draft) as the pending root draft; ``config``: the settings to write when it is published.
    The caller holds the repository lock and has checked there is no pending draft."""
    current = _current_root(layout)
    allowed = _root_keyids(draft, current)
    for signer in signers:
        if signer.keyid not in allowed:
            raise SignatureError(
                f"key {signer.keyid[:16]}... is not a root key of "
                + (f"root v{current.version} or " if current is not None else "")
                + f"the new root v{draft.version}"
            )
    env = Envelope.sign(draft.to_dict(), list({s.keyid: s for s in signers}.values()))
    layout.root_draft_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write_atomic(layout.root_draft_config_path, json_bytes(config.to_dict()), mode=0o600)
    write_atomic(layout.root_draft_path, env.raw)
    return env


def sign_root_draft(layout: RepoLayout, key: Signer) -> bool:
    """Add one holder's signature to the pending root draft; False if that key had signed.

    :class:`SignatureError` for a key of neither the current nor the new root role,
    :class:`NoSuchVersionError` without a draft.
    """
    with layout.locked():
        env, draft = _pending(layout)
        current = _current_root(layout)
        if key.keyid not in _root_keyids(draft, current):
            raise SignatureError(
                f"key {key.keyid[:16]}... is not a root key of "
                + (f"root v{current.version} or " if current is not None else "")
                + f"the draft root v{draft.version}"
            )
        signed = set(_verified(draft, env))
        if current is not None:
            signed |= set(_verified(current, env))
        if key.keyid in signed:
            return False
        kept = tuple(s for s in env.signatures if s.keyid != key.keyid)  # a bad one is replaced
        new = Envelope.of(env.signed, (*kept, key.sign(env.signed_bytes)))
        write_atomic(layout.root_draft_path, new.raw)
        return True


def publish_root_draft(
    layout: RepoLayout, state: TrustedState | None, now: _dt.datetime
) -> tuple[Root, Envelope]:
    """Publish the pending root draft once it verifies as a node verifies it.

    ``state`` is a fresh verifier of the repository's roots (None for a first root), ``now``
    the reference time. Below the old or the new threshold: :class:`SignatureError`, nothing
    written. The caller holds the repository lock. Returns the published root and envelope;
    the settings the draft changes are written too (and set on ``layout``).
    """
    env, draft = _pending(layout)
    try:
        if state is None:
            if draft.version != 1:
                raise ConflictError(f"the root draft is v{draft.version}, but there is no root")
            TrustedState(env.raw, reference_time=now)
        else:
            if draft.version != state.root.version + 1:
                raise ConflictError(
                    f"the root draft is v{draft.version}, but the repository is at root "
                    f"v{state.root.version}: discard it (repo discard-root) and start again"
                )
            state.update_root(env.raw)  # the old AND the new thresholds
    except SignatureError as exc:
        status = root_draft_status(layout)
        needs = ""
        if status is not None:
            parts = [
                f"root v{draft.version}: {len(status.new.signed_by)} of {status.new.threshold}"
            ]
            if status.old is not None:
                parts.append(
                    f"root v{status.old.root_version}: {len(status.old.signed_by)} of "
                    f"{status.old.threshold}"
                )
            needs = " (" + "; ".join(parts) + ")"
        raise SignatureError(
            f"the root draft v{draft.version} is not yet signed by enough root key holders"
            f"{needs}: each runs `repo sign REPO --key KEY`"
        ) from exc
    write_atomic(layout.root_path(draft.version), env.raw)
    write_atomic(layout.root_path(), env.raw)
    if layout.root_draft_config_path.is_file():
        try:
            obj = json.loads(read_limited(layout.root_draft_config_path, 64 * 1024))
        except ValueError as exc:
            raise FormatError("the root draft's config.json is not JSON") from exc
        config = RepoConfig.from_dict(obj)
        write_atomic(layout.config_path, json_bytes(config.to_dict()), mode=0o600)
        layout.config = config
    remove_tree(layout.root_draft_dir)
    fsync_dir(layout.drafts_dir)
    return draft, env


def discard_root_draft(layout: RepoLayout) -> int:
    """Drop the pending root draft (returns its version); :class:`NoSuchVersionError` without
    one. Discarding a first root's draft removes what ``repo init`` made, so that the
    directory can be initialised again."""
    with layout.locked():
        _env, draft = _pending(layout)
        first = not layout.root_path().exists()
        remove_tree(layout.root_draft_dir)
        fsync_dir(layout.drafts_dir)
    if first:
        remove_tree(layout.private_dir)
        for empty in (layout.blobs_dir, layout.manifests_dir):
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
    return draft.version
