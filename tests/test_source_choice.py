"""Source choice by what peers hold: the update optimizer counts bytes that nearby peers
report holding (a delta's target version, a full blob) as cheaper than origin bytes, and picks
delta or full, and which chain, accordingly; the plan says how many bytes peers hold."""

from __future__ import annotations

from blackhole_sync.codecs import AvailableUpdates, DeltaEdge, FullDownload, UpdateOptimizer
from blackhole_sync.network import NetworkView


def test_a_full_blob_peers_hold_beats_a_slightly_smaller_chain_from_the_origin() -> None:
    available = AvailableUpdates({"1.2.0": 1000}, [DeltaEdge("1.0.0", "1.2.0", 700)])
    alone = UpdateOptimizer().calculate_update_path("1.0.0", "1.2.0", available=available)
    assert alone.is_delta and alone.peer_bytes == 0  # 700 <= 80 % of 1000
    held = UpdateOptimizer(peer_held={"1.2.0"}).calculate_update_path(
        "1.0.0", "1.2.0", available=available
    )
    # the patch is held too (peers at 1.2.0): delta still wins, all of it from peers
    assert held.is_delta and held.peer_bytes == 700


def test_a_chain_through_a_version_peers_hold_is_preferred_to_a_direct_origin_patch() -> None:
    edges = [
        DeltaEdge("1.0.0", "1.2.0", 300),  # direct, only the origin has it
        DeltaEdge("1.0.0", "1.1.0", 250),  # peers at 1.1.0 hold this one...
        DeltaEdge("1.1.0", "1.2.0", 200),  # ...and the origin this one
    ]
    available = AvailableUpdates({"1.2.0": 10_000}, edges)
    bytes_only = UpdateOptimizer().calculate_update_path("1.0.0", "1.2.0", available=available)
    assert [e.to_version for e in bytes_only.steps] == ["1.2.0"]
    with_peers = UpdateOptimizer(peer_held={"1.1.0"}).calculate_update_path(
        "1.0.0", "1.2.0", available=available
    )
    assert [e.to_version for e in with_peers.steps] == ["1.1.0", "1.2.0"]
    assert with_peers.peer_bytes == 250


def test_a_full_download_peers_hold_wins_over_an_origin_chain_that_is_not_much_smaller() -> None:
    available = AvailableUpdates({"2.0.0": 1000}, [DeltaEdge("1.0.0", "2.0.0", 500)])
    plan = UpdateOptimizer(peer_held={"1.9.0"}).calculate_update_path(
        "1.0.0", "2.0.0", available=available
    )
    assert plan.is_delta  # nobody holds 2.0.0: the smaller origin patch
    peers_have_full = AvailableUpdates({"2.0.0": 1000}, [DeltaEdge("1.0.0", "2.0.0", 500)])
    opt = UpdateOptimizer(peer_held={"2.0.0"}, peer_cost=0.25)
    # both the patch and the full blob are held by peers at 2.0.0: the patch is still smaller
    assert opt.calculate_update_path("1.0.0", "2.0.0", available=peers_have_full).is_delta
    full = opt.calculate_update_path(None, "2.0.0", available=peers_have_full)
    assert isinstance(full.steps[0], FullDownload) and full.peer_bytes == 1000


def test_the_network_view_reports_which_versions_peers_hold() -> None:
    import datetime as dt

    from blackhole_sync import NodeStatusDoc, PrivateKey

    view = NetworkView()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    for current, held in [("1.1.0", ("1.0.0", "1.1.0")), ("1.1.0", ()), (None, ())]:
        key = PrivateKey.generate().public_key.hex
        view.add_status(NodeStatusDoc(key, "blackhole", 1, expires, current, "idle", None, held))
    assert view.held_versions() == {"1.1.0": 2, "1.0.0": 1}
