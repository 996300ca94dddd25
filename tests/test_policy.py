"""Update policies: windows, delays, allowed types, manual confirmation, deferral, critical."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from attrs import frozen

from blackhole_sync.documents import ReleaseManifest
from blackhole_sync.errors import ConflictError, FormatError
from blackhole_sync.node.policy import (
    AutomaticUpdatePolicy,
    CriticalUpdatePolicy,
    DeferralLimitError,
    ManualUpdatePolicy,
    PolicyState,
    TimeWindow,
    UpdatePolicy,
    decide,
    select_update,
)

UTC = dt.UTC
RELEASED = dt.datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
WEDNESDAY_NOON = dt.datetime(2024, 1, 3, 12, 0, tzinfo=UTC)
WEEKEND_NIGHTS = TimeWindow(days=("sat", "sun"), start="02:00", end="05:00")


@frozen
class Release:
    version: str
    type: str = "binary"
    critical: bool = False
    priority: int = 0
    released: dt.datetime = RELEASED


def automatic(**kw: object) -> UpdatePolicy:
    return UpdatePolicy(mode="automatic", automatic=AutomaticUpdatePolicy(**kw))  # type: ignore[arg-type]


def manual(**kw: object) -> UpdatePolicy:
    return UpdatePolicy(mode="manual", manual=ManualUpdatePolicy(**kw))  # type: ignore[arg-type]


# -- the design's fields all exist --------------------------------------------------------


def test_design_fields_exist_in_snake_case() -> None:
    a = AutomaticUpdatePolicy()
    for name in (
        "enabled allowed_types max_downtime require_health_check backup_before_update "
        "update_window delay_after_release wait_for_network_consensus consensus_threshold"
    ).split():
        assert hasattr(a, name), name
    m = ManualUpdatePolicy()
    for name in (
        "notify_on_new_updates notification_channels auto_download download_bandwidth_limit "
        "require_user_confirmation allow_deferral max_deferral_count"
    ).split():
        assert hasattr(m, name), name
    c = CriticalUpdatePolicy()
    for name in (
        "auto_install_critical override_user_preferences override_scheduling "
        "emergency_rollback notify_after_install"
    ).split():
        assert hasattr(c, name), name


# -- automatic policy ---------------------------------------------------------------------


def test_window_excluding_now_defers_until_it_opens() -> None:
    d = decide(
        automatic(update_window=WEEKEND_NIGHTS),
        Release("1.1.0"),
        now=WEDNESDAY_NOON,
        state=PolicyState(),
    )
    assert d.action == "defer"
    assert "window" in d.reason
    assert d.not_before == dt.datetime(2024, 1, 6, 2, 0, tzinfo=UTC)  # Saturday 02:00


def test_inside_window_installs() -> None:
    saturday = dt.datetime(2024, 1, 6, 3, 30, tzinfo=UTC)
    d = decide(
        automatic(update_window=WEEKEND_NIGHTS), Release("1.1.0"), now=saturday, state=PolicyState()
    )
    assert d.action == "install"
    assert d.backup_before_update and not d.require_health_check  # safe defaults
    assert d.max_downtime == dt.timedelta(minutes=5)


def test_critical_release_installs_outside_the_window() -> None:
    d = decide(
        automatic(update_window=WEEKEND_NIGHTS),
        Release("1.1.1", critical=True),
        now=WEDNESDAY_NOON,
        state=PolicyState(),
    )
    assert d.action == "install"
    assert d.critical and d.notify_after_install and d.emergency_rollback


def test_critical_without_override_scheduling_respects_the_window() -> None:
    policy = UpdatePolicy(
        automatic=AutomaticUpdatePolicy(update_window=WEEKEND_NIGHTS),
        critical=CriticalUpdatePolicy(override_scheduling=False),
    )
    d = decide(policy, Release("1.1.1", critical=True), now=WEDNESDAY_NOON, state=PolicyState())
    assert d.action == "defer"
    assert d.reason.startswith("critical release")


def test_critical_overrides_the_manual_policy() -> None:
    d = decide(manual(), Release("1.1.1", critical=True), now=WEDNESDAY_NOON, state=PolicyState())
    assert d.action == "install"
    assert d.notify_after_install


def test_critical_without_override_user_preferences_follows_manual_policy() -> None:
    policy = UpdatePolicy(
        mode="manual", critical=CriticalUpdatePolicy(override_user_preferences=False)
    )
    d = decide(policy, Release("1.1.1", critical=True), now=WEDNESDAY_NOON, state=PolicyState())
    assert d.action == "download"


def test_critical_auto_install_off_is_treated_like_any_release() -> None:
    policy = UpdatePolicy(
        automatic=AutomaticUpdatePolicy(update_window=WEEKEND_NIGHTS),
        critical=CriticalUpdatePolicy(auto_install_critical=False),
    )
    d = decide(policy, Release("1.1.1", critical=True), now=WEDNESDAY_NOON, state=PolicyState())
    assert d.action == "defer"
    assert not d.notify_after_install


def test_delay_after_release_waits_then_installs() -> None:
    policy = automatic(delay_after_release=dt.timedelta(days=3))
    release = Release("1.1.0")
    early = decide(policy, release, now=RELEASED + dt.timedelta(days=2), state=PolicyState())
    assert early.action == "wait"
    assert early.not_before == RELEASED + dt.timedelta(days=3)
    late = decide(policy, release, now=RELEASED + dt.timedelta(days=3), state=PolicyState())
    assert late.action == "install"


def test_update_type_not_allowed_notifies_or_skips() -> None:
    policy = automatic(allowed_types=("binary", "configuration"))
    d = decide(policy, Release("2.0.0", type="schema"), now=WEDNESDAY_NOON, state=PolicyState())
    assert d.action == "notify"
    assert "schema" in d.reason
    assert d.notify and d.channels == ("log",)
    quiet = UpdatePolicy(
        automatic=AutomaticUpdatePolicy(allowed_types=("binary",)),
        manual=ManualUpdatePolicy(notify_on_new_updates=False),
    )
    d = decide(quiet, Release("2.0.0", type="protocol"), now=WEDNESDAY_NOON, state=PolicyState())
    assert d.action == "skip"
    ok = decide(policy, Release("2.0.0", type="binary"), now=WEDNESDAY_NOON, state=PolicyState())
    assert ok.action == "install"


def test_disabled_automatic_policy_behaves_like_manual() -> None:
    policy = automatic(enabled=False)
    d = decide(policy, Release("1.1.0"), now=WEDNESDAY_NOON, state=PolicyState())
    assert d.action == "download"


def test_wait_for_network_consensus_until_reported_reached() -> None:
    policy = automatic(wait_for_network_consensus=True, consensus_threshold=9000)
    release = Release("1.1.0")
    state = PolicyState()
    d = decide(policy, release, now=WEDNESDAY_NOON, state=state)
    assert d.action == "wait" and "not yet known" in d.reason and "90%" in d.reason
    state.set_consensus("1.1.0", False)
    assert decide(policy, release, now=WEDNESDAY_NOON, state=state).action == "wait"
    state.set_consensus("1.1.0", True)
    assert decide(policy, release, now=WEDNESDAY_NOON, state=state).action == "install"
    state.set_consensus("1.1.0", None)
    assert state.consensus_status("1.1.0") is None


# -- manual policy ------------------------------------------------------------------------


def test_manual_policy_downloads_but_waits_for_confirmation() -> None:
    policy = manual()
    release = Release("1.1.0")
    state = PolicyState()
    first = decide(policy, release, now=WEDNESDAY_NOON, state=state)
    assert first.action == "download"
    assert first.notify and first.channels == ("log",)
    state.mark_downloaded("1.1.0")
    state.mark_notified("1.1.0")
    for _ in range(3):  # asking again changes nothing
        again = decide(policy, release, now=WEDNESDAY_NOON, state=state)
        assert again.action == "wait"
        assert "confirmation" in again.reason
        assert not again.notify
    state.confirm("1.1.0")
    assert decide(policy, release, now=WEDNESDAY_NOON, state=state).action == "install"


def test_manual_policy_without_auto_download_notifies_once_then_waits() -> None:
    policy = manual(auto_download=False)
    release = Release("1.1.0")
    state = PolicyState()
    assert decide(policy, release, now=WEDNESDAY_NOON, state=state).action == "notify"
    state.mark_notified("1.1.0")
    assert decide(policy, release, now=WEDNESDAY_NOON, state=state).action == "wait"


def test_manual_policy_without_confirmation_installs() -> None:
    d = decide(
        manual(require_user_confirmation=False),
        Release("1.1.0"),
        now=WEDNESDAY_NOON,
        state=PolicyState(),
    )
    assert d.action == "install"


def test_deferral_count_is_enforced() -> None:
    policy = manual(max_deferral_count=2, deferral_period=dt.timedelta(hours=6))
    state = PolicyState()
    release = Release("1.1.0")
    assert state.defer("1.1.0", policy, now=WEDNESDAY_NOON) == 1
    d = decide(policy, release, now=WEDNESDAY_NOON + dt.timedelta(hours=1), state=state)
    assert d.action == "defer"
    assert d.not_before == WEDNESDAY_NOON + dt.timedelta(hours=6)
    assert "1 of 2" in d.reason
    assert state.defer("1.1.0", policy, now=WEDNESDAY_NOON) == 2
    with pytest.raises(DeferralLimitError, match="maximum is 2"):
        state.defer("1.1.0", policy, now=WEDNESDAY_NOON)
    assert state.deferral_count("1.1.0") == 2  # the refused deferral recorded nothing
    assert issubclass(DeferralLimitError, ConflictError)
    # the deferral expires, and the release comes back
    later = decide(policy, release, now=WEDNESDAY_NOON + dt.timedelta(hours=7), state=state)
    assert later.action == "download"


def test_deferral_refused_when_not_allowed() -> None:
    with pytest.raises(DeferralLimitError, match="does not allow"):
        PolicyState().defer("1.1.0", manual(allow_deferral=False), now=WEDNESDAY_NOON)


def test_deferring_withdraws_a_confirmation() -> None:
    state = PolicyState()
    state.confirm("1.1.0")
    state.defer("1.1.0", manual(), now=WEDNESDAY_NOON)
    d = decide(manual(), Release("1.1.0"), now=WEDNESDAY_NOON, state=state)
    assert d.action == "defer"


# -- windows ------------------------------------------------------------------------------


def test_window_wrapping_midnight_belongs_to_the_day_it_opens() -> None:
    w = TimeWindow(days=("fri",), start="22:00", end="04:00")
    assert w.contains(dt.datetime(2024, 1, 5, 23, 0, tzinfo=UTC))  # Friday night
    assert w.contains(dt.datetime(2024, 1, 6, 3, 59, tzinfo=UTC))  # Saturday early
    assert not w.contains(dt.datetime(2024, 1, 6, 4, 0, tzinfo=UTC))
    assert not w.contains(dt.datetime(2024, 1, 6, 23, 0, tzinfo=UTC))  # Saturday night
    assert w.next_open(dt.datetime(2024, 1, 6, 12, 0, tzinfo=UTC)) == dt.datetime(
        2024, 1, 12, 22, 0, tzinfo=UTC
    )


def test_window_in_a_timezone() -> None:
    w = TimeWindow(start="02:00", end="03:00", timezone="Asia/Tokyo")  # UTC+9
    assert w.contains(dt.datetime(2024, 1, 3, 17, 30, tzinfo=UTC))
    assert not w.contains(dt.datetime(2024, 1, 3, 2, 30, tzinfo=UTC))


def test_empty_window_is_always_open() -> None:
    w = TimeWindow()
    assert w.is_always and w.contains(WEDNESDAY_NOON)
    assert w.next_open(WEDNESDAY_NOON) == WEDNESDAY_NOON


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"start": "24:00", "end": "01:00"}, "HH:MM"),
        ({"start": "01:00"}, "both start and end"),
        ({"start": "01:00", "end": "01:00"}, "must differ"),
        ({"days": ("monday",)}, "not one of"),
        ({"timezone": "Nowhere/Else"}, "unknown timezone"),
    ],
)
def test_invalid_windows(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TimeWindow(**kw)  # type: ignore[arg-type]


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(UpdatePolicy(), Release("1.0.0"), now=dt.datetime(2024, 1, 1), state=PolicyState())


# -- selection, state persistence ---------------------------------------------------------


def test_select_update_priority_first_then_highest_version() -> None:
    candidates = [
        Release("1.0.0", priority=5),
        Release("3.0.0"),
        Release("1.2.0", priority=5),
        Release("1.2.0-rc.1", priority=5),
    ]
    chosen = select_update(candidates)
    assert chosen is not None and chosen.version == "1.2.0"
    assert select_update([Release("1.10.0"), Release("1.9.0")]) == Release("1.10.0")
    assert select_update([]) is None


def test_release_manifest_satisfies_the_release_protocol() -> None:
    manifest = ReleaseManifest(
        version="1.1.0",
        type="binary",
        channel="stable",
        artifacts=(),
        released=RELEASED,
        critical=True,
    )
    d = decide(manual(), manifest, now=WEDNESDAY_NOON, state=PolicyState())
    assert d.action == "install" and d.critical


def test_policy_state_round_trips_through_a_file(tmp_path: Path) -> None:
    state = PolicyState()
    state.defer("1.1.0", manual(), now=WEDNESDAY_NOON)
    state.confirm("1.2.0")
    state.mark_downloaded("1.2.0")
    state.mark_notified("1.2.0")
    state.set_consensus("1.2.0", True)
    path = tmp_path / "policy.json"
    state.save(path)
    assert PolicyState.load(path) == state
    assert PolicyState.load(tmp_path / "absent.json") == PolicyState()
    state.forget("1.2.0")
    assert "1.2.0" not in state.confirmed and state.consensus_status("1.2.0") is None


@pytest.mark.parametrize(
    "text",
    ['{"deferrals": {"1.0.0": -1}}', '{"bogus": 1}', '{"confirmed": "1.0.0"}', "[]", "{"],
)
def test_policy_state_refuses_malformed_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(text)
    with pytest.raises(FormatError):
        PolicyState.load(path)


def test_decision_is_json_serialisable() -> None:
    import json

    d = decide(
        automatic(update_window=WEEKEND_NIGHTS),
        Release("1.1.0"),
        now=WEDNESDAY_NOON,
        state=PolicyState(),
    )
    out = json.loads(json.dumps(d.to_dict()))
    assert out["action"] == "defer"
    assert out["not_before"] == "2024-01-06T02:00:00Z"
    assert out["max_downtime"] == 300


def test_policy_state_bound_to_a_key_value_store() -> None:
    meta: dict[str, str] = {}

    def set_meta(key: str, value: str | None) -> None:
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value

    state = PolicyState.from_meta(meta.get, set_meta)
    assert state == PolicyState()
    assert state.defer("1.1.0", manual(max_deferral_count=1)) == 1  # now defaults to now
    state.mark_downloaded("1.1.0")
    reread = PolicyState.from_meta(meta.get)
    assert reread == state and reread.deferral_count("1.1.0") == 1
    with pytest.raises(DeferralLimitError):
        reread.defer("1.1.0", manual(max_deferral_count=1))
    meta[PolicyState.META_KEY] = "{not json"
    with pytest.raises(FormatError):
        PolicyState.from_meta(meta.get)
