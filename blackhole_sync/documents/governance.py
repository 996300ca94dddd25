"""Governance documents: signed by k-of-n governance keys, versioned, with an expiry.

A :class:`RolloutPlan` phases a release in by percentages and health gates; a :class:`HaltDoc`
halts a release's rollout; a :class:`Proposal` asks the network to activate a protocol version
(BIP9-style signalling). The index lists the current plans and halts by length and sha256.
The validator set, the downgrade document and the announcement join these later.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError
from .fields import SPEC_VERSION, _Reader, _string, format_time

__all__ = ["HaltDoc", "Proposal", "RolloutPhase", "RolloutPlan"]


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
    release: str
    version: int
    expires: _dt.datetime
    start: _dt.datetime
    phases: tuple[RolloutPhase, ...]
    salt: str = ""
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "rollout"

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
        last = 0
        for p in phases:
            if p.percentage_bp < last:
                raise FormatError(f"{where}.phases: percentages must not decrease")
            last = p.percentage_bp
        return cls(
            release, version, expires, start, phases, r.string("salt", "", max_len=128), r.extra()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
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


@frozen
class HaltDoc:
    release: str
    reason: str
    version: int
    expires: _dt.datetime
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "halt"

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
    """A protocol activation proposal (BIP9-style signalling)."""

    id: str
    release: str
    protocol_version: int
    threshold_bp: int
    start: _dt.datetime
    timeout: _dt.datetime
    expires: _dt.datetime
    activation_delay: int = 0  # seconds after lock-in
    extra: Mapping[str, Any] = field(factory=dict)

    TYPE: ClassVar[str] = "proposal"

    @classmethod
    def from_dict(cls, obj: Any, where: str = "proposal") -> Proposal:
        r = _Reader(obj, where)
        r.const("_type", cls.TYPE)
        r.const("spec_version", SPEC_VERSION)
        return cls(
            r.string("id", max_len=128),
            r.version("release"),
            r.integer("protocol_version"),
            r.integer("threshold_bp", maximum=10_000),
            r.time("start"),
            r.time("timeout"),
            r.time("expires"),
            r.integer("activation_delay", 0),
            r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
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
        }
