"""Governance documents: signed by k-of-n governance keys, versioned, with an expiry.

A :class:`RolloutPlan` phases a release in by percentages and health gates; a :class:`HaltDoc`
halts a release's rollout; a :class:`Proposal` asks the network to activate a protocol version
(BIP9-style signalling); the :class:`ValidatorSet` names the node keys (and their weights) whose
votes and halting health reports count; a :class:`Deprecation` announces that a feature goes
away in a given version. The index lists each of them by length and sha256.

Each has a ``version`` that goes up for the same subject (a release's plan or halt, a
proposal's id, the one validator set, a feature's deprecation): peers keep a seq floor per
subject (:func:`governance_subject`), so an older document is never taken over a newer one.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError
from .fields import _HEX64, SPEC_VERSION, _Reader, _string, format_time

__all__ = [
    "MAX_VALIDATORS",
    "Deprecation",
    "HaltDoc",
    "Proposal",
    "RolloutPhase",
    "RolloutPlan",
    "ValidatorSet",
    "governance_subject",
]

#: Most keys a validator set may list (the simulator and the benchmark use up to 500).
MAX_VALIDATORS = 1024
#: Largest weight of one validator (weights are summed in Python ints: no overflow).
MAX_WEIGHT = 1_000_000
_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")


def _identifier(value: Any, where: str) -> str:
    """A proposal id or feature name: letters, digits, ``.``, ``_``, ``-`` (it names files)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise FormatError(f"{where}: {value!r} is not a valid identifier (a-z0-9._-, <= 64)")
    return value


@frozen
class RolloutPhase:
    name: str
    percentage_bp: int
    duration: int  # seconds
    success_threshold_bp: int = 9500
    selector: Mapping[str, str] = field(factory=dict)  # e.g. {"region": "eu"}
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "phase") -> RolloutPhase:
        r = _Reader(obj, where)
        return cls(
            r.string("name", max_len=64),
            r.integer("percentage_bp", maximum=10_000),
            r.integer("duration", maximum=365 * 86_400),
            r.integer("success_threshold_bp", 9500, maximum=10_000),
            r.mapping("selector", _string, {}, max_items=16),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "name": self.name,
            "percentage_bp": self.percentage_bp,
            "duration": self.duration,
            "success_threshold_bp": self.success_threshold_bp,
            "selector": dict(self.selector),
        }


@frozen
class RolloutPlan:
    """A release phased in: who may install when, and when the rollout halts by itself.

    ``phases`` are cumulative: a node whose position (``sha256(node id, release digest,
    salt)`` in basis points) is below a phase's ``percentage_bp`` may install once that phase
    has opened; phase ``i`` opens at ``start`` plus the durations of the phases before it.
    ``halt_threshold_bp`` (0: never by itself) halts the rollout once validators holding that
    share of the validator set's weight report the release unhealthy.
    """

    release: str
    version: int
    expires: _dt.datetime
    start: _dt.datetime
    phases: tuple[RolloutPhase, ...]
    salt: str = ""
    halt_threshold_bp: int = 0
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "rollout"

    @property
    def subject(self) -> str:
        return f"rollout:{self.release}"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "rollout") -> RolloutPlan:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        release = r.version("release")
        version = r.integer("version", minimum=1)
        expires = r.time("expires")
        start = r.time("start")
        phases = r.items("phases", RolloutPhase.from_dict, max_items=64)
        if not phases:
            raise FormatError(f"{where}.phases: at least one phase")
        last = 0
        for p in phases:
            if p.percentage_bp < last:
                raise FormatError(f"{where}.phases: percentages must not decrease")
            last = p.percentage_bp
        salt = r.string("salt", "", max_len=128)
        halt = r.integer("halt_threshold_bp", 0, maximum=10_000)
        return cls(release, version, expires, start, phases, salt, halt, r.extra())

    def to_dict(self) -> dict[str, Any]:
        out = {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "release": self.release,
            "version": self.version,
            "expires": format_time(self.expires),
            "start": format_time(self.start),
            "phases": [p.to_dict() for p in self.phases],
            "salt": self.salt,
        }
        if self.halt_threshold_bp:
            out["halt_threshold_bp"] = self.halt_threshold_bp
        return out


@frozen
class HaltDoc:
    """The rollout of ``release`` stops: nodes that have not installed it do not."""

    release: str
    reason: str
    version: int
    expires: _dt.datetime
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "halt"

    @property
    def subject(self) -> str:
        return f"halt:{self.release}"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "halt") -> HaltDoc:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        return cls(
            r.version("release"),
            r.string("reason", max_len=1024),
            r.integer("version", minimum=1),
            r.time("expires"),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "release": self.release,
            "reason": self.reason,
            "version": self.version,
            "expires": format_time(self.expires),
        }


@frozen
class Proposal:
    """A protocol activation proposal (BIP9-style signalling).

    Validators vote between ``start`` and ``timeout`` (the signalling window); a vote binds
    ``release_digest`` (the sha256 of the release manifest the index lists) and the network
    id. At ``timeout`` each node evaluates: the proposal locks in when the supporting weight
    reaches ``threshold_bp`` of the validator set's weight. Without a lock-in certificate by
    ``timeout + grace`` it fails. A locked-in proposal activates at the chain height
    ``activation_height`` when given, else at ``timeout + activation_delay``: the same point on
    every node, whenever it learnt of the lock-in.
    """

    id: str
    release: str
    protocol_version: int
    threshold_bp: int
    start: _dt.datetime
    timeout: _dt.datetime
    expires: _dt.datetime
    activation_delay: int = 0  # seconds after the end of the signalling window
    release_digest: str = ""
    grace: int = 0  # seconds after the timeout during which a certificate is still adopted
    activation_height: int | None = None
    version: int = 1
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "proposal"

    @property
    def subject(self) -> str:
        return f"proposal:{self.id}"

    @property
    def activation_time(self) -> _dt.datetime:
        """When a locked-in proposal without an activation height activates."""
        return self.timeout + _dt.timedelta(seconds=self.activation_delay)

    @property
    def deadline(self) -> _dt.datetime:
        """The end of the grace period: no certificate by then means FAILED."""
        return self.timeout + _dt.timedelta(seconds=self.grace)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "proposal") -> Proposal:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        ident = _identifier(r.string("id", max_len=64), f"{where}.id")
        release = r.version("release")
        protocol_version = r.integer("protocol_version")
        threshold = r.integer("threshold_bp", minimum=1, maximum=10_000)
        start, timeout, expires = r.time("start"), r.time("timeout"), r.time("expires")
        if timeout <= start:
            raise FormatError(f"{where}: the timeout must come after the start")
        delay = r.integer("activation_delay", 0, maximum=10 * 365 * 86_400)
        digest = r.string("release_digest", "", max_len=64)
        if digest and not _HEX64.match(digest):
            raise FormatError(f"{where}.release_digest: expected 64 lowercase hex digits")
        grace = r.integer("grace", 0, maximum=365 * 86_400)
        height = r.integer("activation_height", None)
        version = r.integer("version", 1, minimum=1)
        return cls(
            ident, release, protocol_version, threshold, start, timeout, expires, delay,
            digest, grace, height, version, r.extra(),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "id": self.id,
            "release": self.release,
            "protocol_version": self.protocol_version,
            "threshold_bp": self.threshold_bp,
            "start": format_time(self.start),
            "timeout": format_time(self.timeout),
            "expires": format_time(self.expires),
            "activation_delay": self.activation_delay,
            "version": self.version,
        }
        if self.release_digest:
            out["release_digest"] = self.release_digest
        if self.grace:
            out["grace"] = self.grace
        if self.activation_height is not None:
            out["activation_height"] = self.activation_height
        return out


@frozen
class ValidatorSet:
    """The node keys whose votes and halting health reports count, each with a weight.

    ``validators`` maps a node id (its ed25519 public key, 64 lowercase hex digits: the
    ``node_id`` its votes carry) to a weight of at least 1. A key appears once (a JSON object
    cannot hold it twice: the strict parser refuses duplicate keys).
    """

    version: int
    expires: _dt.datetime
    validators: Mapping[str, int]
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "validators"
    subject: ClassVar[str] = "validators"

    @property
    def total_weight(self) -> int:
        return sum(self.validators.values())

    def weight(self, node_id: str) -> int:
        """The weight of ``node_id`` (0 when it is not a validator)."""
        return self.validators.get(node_id, 0)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "validators") -> ValidatorSet:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        version = r.integer("version", minimum=1)
        expires = r.time("expires")
        validators = r.mapping("validators", _weight, max_items=MAX_VALIDATORS)
        for node_id in validators:
            if not _HEX64.match(node_id):
                raise FormatError(f"{where}.validators: {node_id[:16]!r} is not a node id")
        if not validators:
            raise FormatError(f"{where}.validators: at least one validator")
        return cls(version, expires, validators, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "expires": format_time(self.expires),
            "validators": dict(self.validators),
        }


def _weight(value: Any, where: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_WEIGHT:
        raise FormatError(f"{where}: a weight is an integer 1..{MAX_WEIGHT}")
    return value


@frozen
class Deprecation:
    """``feature`` is deprecated and goes away in ``remove_in`` (a release version)."""

    feature: str
    remove_in: str
    version: int
    expires: _dt.datetime
    message: str = ""
    since: str | None = None
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "deprecation"

    @property
    def subject(self) -> str:
        return f"deprecation:{self.feature}"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "deprecation") -> Deprecation:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        feature = _identifier(r.string("feature", max_len=64), f"{where}.feature")
        remove_in = r.version("remove_in")
        version = r.integer("version", minimum=1)
        expires = r.time("expires")
        message = r.string("message", "", max_len=1024)
        since = r.version("since", None)
        return cls(feature, remove_in, version, expires, message, since, r.extra())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "_type": self.TYPE,
            "spec_version": SPEC_VERSION,
            "feature": self.feature,
            "remove_in": self.remove_in,
            "version": self.version,
            "expires": format_time(self.expires),
            "message": self.message,
        }
        if self.since is not None:
            out["since"] = self.since
        return out


def governance_subject(document: Any) -> str:
    """What a governance document is about, for seq floors and file names: ``rollout:1.2.0``,
    ``halt:1.2.0``, ``proposal:<id>``, ``validators``, ``deprecation:<feature>``."""
    subject: str = document.subject
    return subject
