"""Update policies: automatic, manual and critical handling, update windows, deferral.

One concern, one module (over 700 lines): the policy models, the per-release state they are
judged against and :func:`decide` are one decision procedure -- every field of the models is
read by :func:`decide`, and the state records exactly what it asks about -- so they are kept
together where one reading checks that each rule below is implemented once.

The design's ``AutomaticUpdatePolicy``, ``ManualUpdatePolicy`` and ``CriticalUpdatePolicy``
are frozen attrs classes here (snake_case fields), bundled by :class:`UpdatePolicy` with the
node's ``mode``. :func:`decide` is pure: given a policy, a release, the time and the node's
:class:`PolicyState`, it returns a :class:`Decision` and changes nothing. The caller (the
update agent, ``UpdateManager``) performs the action and records what happened in the state
(:meth:`PolicyState.mark_downloaded`, :meth:`PolicyState.mark_notified`, ...).

Policies govern the agent (``node run``) and the API. An explicit ``node update`` installs
now and does not consult them -- except the two safety settings of the automatic policy that
say how any install runs, ``max_downtime`` (restart plus health checks within that many
seconds of the switch, else roll back) and ``backup_before_update`` (false: no data backup
unless the install migrates a schema or changes configuration). ``require_health_check``:
the agent does not install by itself a release no health check applies to (the update
manager turns such an ``install`` into ``skip``).

Actions, in :class:`Decision`:

======== ======================================================================
install  install now
download stage the release (download and verify) but do not install it
notify   nothing to install yet; tell the operator (``Decision.channels``)
defer    not now (outside the update window, or deferred by the operator);
         ask again at ``Decision.not_before``
wait     waiting for a condition: the delay after release, network consensus,
         or the operator's confirmation (``node confirm``)
skip     the policy never installs this release by itself
======== ======================================================================

Critical releases (``critical`` in the signed manifest) are handled by
:class:`CriticalUpdatePolicy`, always on: with ``auto_install_critical`` they install even
when the automatic policy would not (``override_user_preferences``: under the manual policy,
a disabled automatic policy or an update type not allowed) and even outside the window, before
the delay after release and without waiting for network consensus (``override_scheduling``:
every "when" constraint). Activation of a protocol change is still governed separately by
the consensus module's activation state machine.

Network consensus (``wait_for_network_consensus``): the network coordination
(``network/coordinator.py``, through the update manager) reports each release's answer through
:meth:`PolicyState.set_consensus` before the policy decides -- reached once the activation
proposal that names the release is ACTIVE (a release no proposal names has nothing to agree
on), not reached once it FAILED; until it reports a version as reached, the automatic policy
answers ``wait`` for that version. This is the only hook point.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import semver
from attrs import define, field, frozen

from .._fsutil import write_atomic
from ..clock import utcnow
from ..documents import UPDATE_TYPES
from ..errors import ConflictError, FormatError

__all__ = [
    "ACTIONS",
    "DAY_NAMES",
    "MODES",
    "Action",
    "AutomaticUpdatePolicy",
    "CriticalUpdatePolicy",
    "Decision",
    "DeferralLimitError",
    "ManualUpdatePolicy",
    "PolicyState",
    "ReleaseLike",
    "TimeWindow",
    "UpdatePolicy",
    "decide",
    "select_update",
]

Action = Literal["install", "download", "notify", "defer", "skip", "wait"]
ACTIONS: Final = ("install", "download", "notify", "defer", "skip", "wait")
MODES: Final = ("automatic", "manual")
#: Days of the week as written in a :class:`TimeWindow` (Monday first, as ``weekday()``).
DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)\Z")


class DeferralLimitError(ConflictError):
    """The operator asked to defer a release more often than ``max_deferral_count`` allows,
    or the manual policy does not allow deferral at all (``allow_deferral = false``).

    A :class:`~blackhole_sync.errors.ConflictError`: the request conflicts with the node's
    recorded deferrals (command line exit 1). Nothing was recorded.
    """


class ReleaseLike(Protocol):
    """What :func:`decide` and :func:`select_update` read from a release.

    :class:`~blackhole_sync.documents.release.ReleaseManifest` satisfies it.
    """

    @property
    def version(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def critical(self) -> bool: ...

    @property
    def priority(self) -> int: ...

    @property
    def released(self) -> _dt.datetime: ...


R = TypeVar("R", bound=ReleaseLike)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of strings, not one string")
    return tuple(value)


# -- time windows ---------------------------------------------------------------------------


def _parse_hhmm(value: str) -> _dt.time:
    m = _HHMM.match(value)
    if m is None:
        raise ValueError(f"time {value!r} is not HH:MM (00:00 to 23:59)")
    return _dt.time(int(m.group(1)), int(m.group(2)))


def _check_days(_inst: object, _attr: object, value: tuple[str, ...]) -> None:
    for day in value:
        if day not in DAY_NAMES:
            raise ValueError(f"day {day!r} is not one of {', '.join(DAY_NAMES)}")
    if len(set(value)) != len(value):
        raise ValueError("a day appears twice in the window")


def _check_clock(_inst: object, attr: Any, value: str) -> None:
    if value:
        _parse_hhmm(value)


def _check_zone(_inst: object, _attr: object, value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r}") from exc


@frozen
class TimeWindow:
    """When automatic updates may install.

    ``days``: day names (``"mon"`` ... ``"sun"``); empty means every day. ``start`` and
    ``end``: ``"HH:MM"``; both empty means the whole day. A window whose end is not after its
    start wraps past midnight (``22:00``-``04:00``), and then ``days`` names the day it
    opens on. ``timezone``: an IANA name (``"UTC"``, ``"Europe/Berlin"``). The default window
    is always open.
    """

    days: tuple[str, ...] = field(default=(), converter=_str_tuple, validator=_check_days)
    start: str = field(default="", validator=_check_clock)
    end: str = field(default="", validator=_check_clock)
    timezone: str = field(default="UTC", validator=_check_zone)

    def __attrs_post_init__(self) -> None:
        if bool(self.start) != bool(self.end):
            raise ValueError("a window needs both start and end, or neither")
        if self.start and self.start == self.end:
            raise ValueError("a window's start and end must differ (leave both empty for all day)")

    @classmethod
    def always(cls) -> TimeWindow:
        return cls()

    @property
    def is_always(self) -> bool:
        return not self.days and not self.start

    def _local(self, now: _dt.datetime) -> _dt.datetime:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.astimezone(ZoneInfo(self.timezone))

    def _day_ok(self, day: _dt.date) -> bool:
        return not self.days or DAY_NAMES[day.weekday()] in self.days

    def contains(self, now: _dt.datetime) -> bool:
        """Whether ``now`` (timezone-aware) falls inside the window."""
        local = self._local(now)
        if not self.start:
            return self._day_ok(local.date())
        start, end = _parse_hhmm(self.start), _parse_hhmm(self.end)
        t = local.time().replace(tzinfo=None)
        if start < end:
            return start <= t < end and self._day_ok(local.date())
        # wraps past midnight: the evening part belongs to today, the morning to yesterday
        if t >= start:
            return self._day_ok(local.date())
        if t < end:
            return self._day_ok(local.date() - _dt.timedelta(days=1))
        return False

    def next_open(self, now: _dt.datetime) -> _dt.datetime:
        """``now`` when inside the window, else the next time it opens (in UTC)."""
        if self.contains(now):
            return now.astimezone(_dt.UTC)
        local = self._local(now)
        zone = ZoneInfo(self.timezone)
        start = _parse_hhmm(self.start) if self.start else _dt.time(0, 0)
        for offset in range(9):
            day = local.date() + _dt.timedelta(days=offset)
            if not self._day_ok(day):
                continue
            candidate = _dt.datetime.combine(day, start, tzinfo=zone)
            if candidate > local:
                return candidate.astimezone(_dt.UTC)
        raise AssertionError("a non-empty window opens within a week")  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": list(self.days),
            "start": self.start,
            "end": self.end,
            "timezone": self.timezone,
        }


# -- the three policies ---------------------------------------------------------------------


def _check_types(_inst: object, _attr: object, value: tuple[str, ...]) -> None:
    for t in value:
        if t not in UPDATE_TYPES:
            raise ValueError(f"update type {t!r} is not one of {', '.join(UPDATE_TYPES)}")


def _non_negative_td(_inst: object, attr: Any, value: _dt.timedelta) -> None:
    if value < _dt.timedelta(0):
        raise ValueError(f"{attr.name} must not be negative")


def _non_negative_int(_inst: object, attr: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attr.name} must be an integer >= 0")


def _basis_points(_inst: object, attr: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
        raise ValueError(f"{attr.name} must be basis points, 0 to 10000")


@frozen
class AutomaticUpdatePolicy:
    """Full automation with safety checks.

    Durations are :class:`datetime.timedelta`; ``consensus_threshold`` is in basis points
    (``7500`` = 75%). ``max_downtime``, ``require_health_check`` and ``backup_before_update``
    are carried into every install :class:`Decision` for the installer to honour (see the
    module docstring). config.toml refuses ``consensus_threshold`` (the signed activation
    proposal's ``threshold_bp`` decides); the field stays for the API (it only words the
    ``wait`` reason).
    """

    enabled: bool = True
    allowed_types: tuple[str, ...] = field(
        default=UPDATE_TYPES, converter=_str_tuple, validator=_check_types
    )
    max_downtime: _dt.timedelta = field(
        default=_dt.timedelta(minutes=5), validator=_non_negative_td
    )
    require_health_check: bool = False
    backup_before_update: bool = True
    update_window: TimeWindow = field(factory=TimeWindow)
    delay_after_release: _dt.timedelta = field(default=_dt.timedelta(0), validator=_non_negative_td)
    wait_for_network_consensus: bool = False
    consensus_threshold: int = field(default=7500, validator=_basis_points)


@frozen
class ManualUpdatePolicy:
    """User-controlled updates.

    ``notification_channels`` are channel names (``"log"``, ``"webhook"``, or a plugin's;
    see :func:`blackhole_sync.notify.channels_from_config`). ``download_bandwidth_limit`` is
    in bytes per second, 0 for unlimited. ``deferral_period`` (not in the design; needed to
    say how long ``node defer`` postpones) is how long one deferral lasts.
    """

    notify_on_new_updates: bool = True
    notification_channels: tuple[str, ...] = field(default=("log",), converter=_str_tuple)
    auto_download: bool = True
    download_bandwidth_limit: int = field(default=0, validator=_non_negative_int)
    require_user_confirmation: bool = True
    allow_deferral: bool = True
    max_deferral_count: int = field(default=3, validator=_non_negative_int)
    deferral_period: _dt.timedelta = field(
        default=_dt.timedelta(days=1), validator=_non_negative_td
    )


@frozen
class CriticalUpdatePolicy:
    """Emergency handling of releases flagged ``critical``; always in force.

    ``emergency_rollback`` switches the post-switch regression rollback on or off, for every
    release (``[regression]``: a metric past its threshold after a switch rolls back; off, the
    regression is recorded and the node stays).
    """

    auto_install_critical: bool = True
    override_user_preferences: bool = True
    override_scheduling: bool = True
    emergency_rollback: bool = True
    notify_after_install: bool = True


def _check_mode(_inst: object, _attr: object, value: str) -> None:
    if value not in MODES:
        raise ValueError(f"policy mode {value!r} is not one of {', '.join(MODES)}")


@frozen
class UpdatePolicy:
    """The node's policy: the mode in force and the settings of all three policies."""

    mode: str = field(default="automatic", validator=_check_mode)
    automatic: AutomaticUpdatePolicy = field(factory=AutomaticUpdatePolicy)
    manual: ManualUpdatePolicy = field(factory=ManualUpdatePolicy)
    critical: CriticalUpdatePolicy = field(factory=CriticalUpdatePolicy)


# -- per-node state -------------------------------------------------------------------------


def _iso(t: _dt.datetime) -> str:
    return t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_iso(value: Any, where: str) -> _dt.datetime:
    if not isinstance(value, str):
        raise FormatError(f"{where}: expected a time string")
    try:
        t = _dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError as exc:
        raise FormatError(f"{where}: {value!r} is not YYYY-MM-DDTHH:MM:SSZ") from exc
    return t.replace(tzinfo=_dt.UTC)


@define
class PolicyState:
    """What the node remembers between decisions, per release version.

    Mutable; :func:`decide` only reads it. Persist it with :meth:`save` / :meth:`load`,
    :meth:`to_dict` / :meth:`from_dict`, or bind it to the node store with :meth:`from_meta`.

    ``consensus`` maps a version to the network's answer: True reached, False not reached;
    a version absent is unknown. The consensus module reports through :meth:`set_consensus`.
    """

    deferrals: dict[str, int] = field(factory=dict)
    deferred_until: dict[str, _dt.datetime] = field(factory=dict)
    confirmed: set[str] = field(factory=set)
    downloaded: set[str] = field(factory=set)
    notified: set[str] = field(factory=set)
    consensus: dict[str, bool] = field(factory=dict)
    _set_meta: Callable[[str, str | None], None] | None = field(
        default=None, init=False, eq=False, repr=False
    )

    #: The key :meth:`from_meta` reads and bound states write.
    META_KEY: ClassVar[str] = "policy_state"

    @classmethod
    def from_meta(
        cls,
        get_meta: Callable[[str], str | None],
        set_meta: Callable[[str, str | None], None] | None = None,
    ) -> PolicyState:
        """Read the state from a key/value store (the node store's ``get_meta``).

        With ``set_meta`` the state is bound: every change (:meth:`defer`, :meth:`confirm`,
        :meth:`mark_downloaded`, ...) is written back at once under :attr:`META_KEY`.
        """
        raw = get_meta(cls.META_KEY)
        if raw is None:
            state = cls()
        else:
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise FormatError(f"{cls.META_KEY}: not JSON: {exc}") from exc
            state = cls.from_dict(obj, cls.META_KEY)
        state._set_meta = set_meta
        return state

    def _changed(self) -> None:
        if self._set_meta is not None:
            self._set_meta(self.META_KEY, json.dumps(self.to_dict(), sort_keys=True))

    def deferral_count(self, version: str) -> int:
        return self.deferrals.get(version, 0)

    def defer(
        self,
        version: str,
        policy: UpdatePolicy | ManualUpdatePolicy,
        *,
        now: _dt.datetime | None = None,
    ) -> int:
        """Record one deferral of ``version``; return how many there have been.

        Raises :class:`DeferralLimitError` (recording nothing) when deferral is not allowed
        or ``max_deferral_count`` deferrals were already made. A confirmation of the version
        is withdrawn by deferring it.
        """
        manual = policy.manual if isinstance(policy, UpdatePolicy) else policy
        if not manual.allow_deferral:
            raise DeferralLimitError(f"{version}: the policy does not allow deferral")
        count = self.deferral_count(version)
        if count >= manual.max_deferral_count:
            raise DeferralLimitError(
                f"{version}: already deferred {count} time(s), "
                f"the maximum is {manual.max_deferral_count}"
            )
        if now is None:
            now = utcnow()
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.deferrals[version] = count + 1
        until = now.astimezone(_dt.UTC) + manual.deferral_period
        self.deferred_until[version] = until.replace(microsecond=0)  # as persisted
        self.confirmed.discard(version)
        self._changed()
        return count + 1

    def confirm(self, version: str) -> None:
        """The operator confirmed ``version`` (``node confirm``): it may install now."""
        self.confirmed.add(version)
        self.deferred_until.pop(version, None)
        self._changed()

    def mark_downloaded(self, version: str) -> None:
        self.downloaded.add(version)
        self._changed()

    def mark_notified(self, version: str) -> None:
        self.notified.add(version)
        self._changed()

    def set_consensus(self, version: str, reached: bool | None) -> None:
        """Hook point for the consensus module: True reached, False not, None unknown."""
        if reached is None:
            self.consensus.pop(version, None)
        else:
            self.consensus[version] = reached
        self._changed()

    def consensus_status(self, version: str) -> bool | None:
        return self.consensus.get(version)

    def forget(self, version: str) -> None:
        """Drop everything recorded about ``version`` (after it installed or was withdrawn)."""
        for mapping in (self.deferrals, self.deferred_until, self.consensus):
            mapping.pop(version, None)
        for s in (self.confirmed, self.downloaded, self.notified):
            s.discard(version)
        self._changed()

    def to_dict(self) -> dict[str, Any]:
        return {
            "deferrals": dict(sorted(self.deferrals.items())),
            "deferred_until": {v: _iso(t) for v, t in sorted(self.deferred_until.items())},
            "confirmed": sorted(self.confirmed),
            "downloaded": sorted(self.downloaded),
            "notified": sorted(self.notified),
            "consensus": dict(sorted(self.consensus.items())),
        }

    @classmethod
    def from_dict(cls, obj: Any, where: str = "policy state") -> PolicyState:
        """Parse :meth:`to_dict` output; raises :class:`~blackhole_sync.errors.FormatError`."""
        if not isinstance(obj, Mapping):
            raise FormatError(f"{where}: expected an object")
        known = {"deferrals", "deferred_until", "confirmed", "downloaded", "notified", "consensus"}
        extra = set(obj) - known
        if extra:
            raise FormatError(f"{where}: unknown field {sorted(extra)[0]!r}")

        def mapping(name: str) -> Mapping[str, Any]:
            value = obj.get(name, {})
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise FormatError(f"{where}.{name}: expected an object")
            return value

        def strings(name: str) -> set[str]:
            value = obj.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise FormatError(f"{where}.{name}: expected a list of strings")
            return set(value)

        deferrals: dict[str, int] = {}
        for v, n in mapping("deferrals").items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise FormatError(f"{where}.deferrals.{v}: expected an integer >= 0")
            deferrals[v] = n
        consensus: dict[str, bool] = {}
        for v, b in mapping("consensus").items():
            if not isinstance(b, bool):
                raise FormatError(f"{where}.consensus.{v}: expected true or false")
            consensus[v] = b
        until = {
            v: _from_iso(t, f"{where}.deferred_until.{v}")
            for v, t in mapping("deferred_until").items()
        }
        return cls(
            deferrals=deferrals,
            deferred_until=until,
            confirmed=strings("confirmed"),
            downloaded=strings("downloaded"),
            notified=strings("notified"),
            consensus=consensus,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PolicyState:
        """Read a state file; a missing file is an empty state."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return cls()
        if len(raw) > 16 * 1024 * 1024:
            raise FormatError(f"{p}: policy state larger than 16 MiB")
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise FormatError(f"{p}: not JSON: {exc}") from exc
        return cls.from_dict(obj, str(p))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state atomically (temporary file, fsync, rename)."""
        data = json.dumps(self.to_dict(), sort_keys=True, indent=1).encode() + b"\n"
        write_atomic(Path(path), data, mode=0o600)


# -- decisions ------------------------------------------------------------------------------


@frozen
class Decision:
    """What to do about one release now, and why.

    ``notify``: tell the operator about the release now (it has not been notified yet);
    afterwards call :meth:`PolicyState.mark_notified`. ``notify_after_install``: after
    installing, send an ``installed`` notification (critical releases). ``not_before``: when
    to ask again (``defer`` and ``wait``), None when unknown. ``require_health_check``,
    ``backup_before_update``, ``max_downtime`` and ``emergency_rollback`` tell the installer
    how to install.
    """

    action: Action
    reason: str
    version: str
    critical: bool = False
    notify: bool = False
    channels: tuple[str, ...] = ()
    notify_after_install: bool = False
    emergency_rollback: bool = False
    require_health_check: bool = False
    backup_before_update: bool = True
    max_downtime: _dt.timedelta | None = None
    not_before: _dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for ``--json`` output)."""
        return {
            "action": self.action,
            "reason": self.reason,
            "version": self.version,
            "critical": self.critical,
            "notify": self.notify,
            "channels": list(self.channels),
            "notify_after_install": self.notify_after_install,
            "emergency_rollback": self.emergency_rollback,
            "require_health_check": self.require_health_check,
            "backup_before_update": self.backup_before_update,
            "max_downtime": None
            if self.max_downtime is None
            else int(self.max_downtime.total_seconds()),
            "not_before": None if self.not_before is None else _iso(self.not_before),
        }


def decide(
    policy: UpdatePolicy, release: ReleaseLike, *, now: _dt.datetime, state: PolicyState
) -> Decision:
    """Decide what to do about ``release`` at ``now`` (timezone-aware). Pure: reads only.

    The caller decides only about releases newer than the installed version.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    version = release.version
    auto, manual, crit = policy.automatic, policy.manual, policy.critical
    critical = bool(release.critical)
    notify = manual.notify_on_new_updates and version not in state.notified
    channels = manual.notification_channels if manual.notify_on_new_updates else ()

    def make(action: Action, reason: str, **kw: Any) -> Decision:
        kw.setdefault("notify", notify)
        return Decision(
            action,
            reason,
            version,
            critical=critical,
            channels=channels,
            emergency_rollback=crit.emergency_rollback,
            require_health_check=auto.require_health_check,
            backup_before_update=auto.backup_before_update,
            max_downtime=auto.max_downtime,
            **kw,
        )

    automatic_allows = (
        policy.mode == "automatic" and auto.enabled and release.type in auto.allowed_types
    )

    # 1. critical releases
    if (
        critical
        and crit.auto_install_critical
        and (automatic_allows or crit.override_user_preferences)
    ):
        after = crit.notify_after_install
        if crit.override_scheduling:
            return make(
                "install",
                "critical release: installing now, overriding preferences and scheduling",
                notify=False,
                notify_after_install=after,
            )
        return _automatic_schedule(
            auto, release, now, state, make, notify_after_install=after, prefix="critical release: "
        )

    # 2. the automatic policy
    if policy.mode == "automatic" and auto.enabled:
        if release.type not in auto.allowed_types:
            allowed = ", ".join(auto.allowed_types) or "none"
            if manual.notify_on_new_updates:
                return make(
                    "notify",
                    f"{release.type} updates are not installed automatically "
                    f"(allowed: {allowed}); install with `node update`",
                )
            return make(
                "skip",
                f"{release.type} updates are not installed automatically (allowed: {allowed})",
            )
        return _automatic_schedule(
            auto, release, now, state, make, notify_after_install=False, prefix=""
        )

    # 3. the manual policy (also the automatic mode with enabled = false)
    if version in state.confirmed:
        return make("install", "confirmed by the operator", notify=False)
    until = state.deferred_until.get(version)
    if until is not None and now < until:
        return make(
            "defer",
            f"deferred by the operator ({state.deferral_count(version)} of "
            f"{manual.max_deferral_count}) until {_iso(until)}",
            notify=False,
            not_before=until,
        )
    if not manual.require_user_confirmation:
        return make("install", "manual policy without confirmation: installing")
    if manual.auto_download and version not in state.downloaded:
        return make("download", "manual policy: downloading; installs after `node confirm`")
    where = "downloaded; " if version in state.downloaded else ""
    if notify:
        return make("notify", f"{where}new release {version}: confirm with `node confirm`")
    return make("wait", f"{where}waiting for the operator's confirmation (`node confirm`)")


def _automatic_schedule(
    auto: AutomaticUpdatePolicy,
    release: ReleaseLike,
    now: _dt.datetime,
    state: PolicyState,
    make: Callable[..., Decision],
    *,
    notify_after_install: bool,
    prefix: str,
) -> Decision:
    window = auto.update_window
    if not window.contains(now):
        opens = window.next_open(now)
        return make(
            "defer",
            f"{prefix}outside the update window; it opens at {_iso(opens)}",
            notify=False,
            not_before=opens,
            notify_after_install=notify_after_install,
        )
    released = release.released
    if released.tzinfo is None:
        released = released.replace(tzinfo=_dt.UTC)
    ready = released + auto.delay_after_release
    if now < ready:
        return make(
            "wait",
            f"{prefix}released {_iso(released)}; waiting until {_iso(ready)} (delay after release)",
            notify=False,
            not_before=ready,
            notify_after_install=notify_after_install,
        )
    if auto.wait_for_network_consensus:
        status = state.consensus_status(release.version)
        if status is not True:
            what = "not reached" if status is False else "not yet known"
            return make(
                "wait",
                f"{prefix}network consensus ({auto.consensus_threshold / 100:g}%) {what}",
                notify=False,
                notify_after_install=notify_after_install,
            )
    return make(
        "install",
        f"{prefix}automatic policy: installing",
        notify=False,
        notify_after_install=notify_after_install,
    )


def select_update(candidates: Iterable[R]) -> R | None:
    """The design's ``selectUpdate``: highest priority first, then highest version.

    Returns None when there are no candidates.
    """
    best: R | None = None
    best_key: tuple[int, semver.Version] | None = None
    for release in candidates:
        key = (release.priority, semver.Version.parse(release.version))
        if best_key is None or key > best_key:
            best, best_key = release, key
    return best
