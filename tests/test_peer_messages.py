"""The peer-message gate, attacked: forged, foreign, replayed, stale, oversized and malformed
messages, each with the verdict it must get (ARCHITECTURE section 5)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from blackhole_sync import (
    Envelope,
    HaltDoc,
    NodeStatusDoc,
    PeerMessage,
    PrivateKey,
    Repository,
    Verdict,
    format_time,
    init_node,
)
from blackhole_sync.network import PeerMessageGate, make_announcement, make_announcements
from blackhole_sync.node import NodeStore, StateDB

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


class Keys:
    def __init__(self) -> None:
        self.root = PrivateKey.generate()
        self.index = PrivateKey.generate()
        self.gov = [PrivateKey.generate() for _ in range(3)]
        self.stranger = PrivateKey.generate()


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def repo(tmp_path: Path, keys: Keys) -> Repository:
    repo = Repository.init(
        tmp_path / "repo", root_keys=[keys.root.public_key], root_threshold=1,
        release_keys=[keys.root.public_key], release_threshold=1,
        index_key=keys.index.public_key, sign_with=[keys.root],
        governance_keys=[k.public_key for k in keys.gov], governance_threshold=2,
    )  # fmt: skip
    repo.refresh(keys.index)
    return repo


@pytest.fixture
def node(tmp_path: Path, repo: Repository) -> Path:
    path = tmp_path / "node"
    init_node(path, root_bytes=repo.root_bytes(), sources=[str(repo.path)])
    return path


def gate_for(node: Path, repo: Repository) -> tuple[PeerMessageGate, StateDB]:
    state = StateDB.open(node / "state.db")
    return PeerMessageGate(repo.root, state), state


def message(kind: str, payload: bytes, peer: str = "peer-1") -> PeerMessage:
    return PeerMessage(kind, payload, peer, "test")


def announcement(repo: Repository, key: PrivateKey) -> bytes:
    data = repo.index_bytes()
    assert data is not None
    return make_announcement(data, repo.root(), "stable", key)


def test_an_announcement_by_the_index_key_is_accepted_once(
    node: Path, repo: Repository, keys: Keys
) -> None:
    gate, _ = gate_for(node, repo)
    payload = announcement(repo, keys.index)
    decided = gate.decide(message("announcement", payload))
    assert decided.verdict is Verdict.ACCEPT, decided.reason
    assert decided.document.index_version == repo.index().version  # type: ignore[union-attr]
    # the same bytes from another relay: a duplicate, dropped without penalty
    assert gate(message("announcement", payload, "peer-2")) is Verdict.IGNORE


def test_an_announcement_signed_by_another_key_is_rejected(
    node: Path, repo: Repository, keys: Keys
) -> None:
    gate, _ = gate_for(node, repo)
    forged = Envelope.from_bytes(announcement(repo, keys.index))
    resigned = Envelope.sign(forged.signed, [keys.stranger]).raw
    decided = gate.decide(message("announcement", resigned))
    assert decided.verdict is Verdict.REJECT and "index" in decided.reason


def test_a_byte_flipped_announcement_is_rejected(node: Path, repo: Repository, keys: Keys) -> None:
    gate, _ = gate_for(node, repo)
    payload = bytearray(announcement(repo, keys.index))
    at = payload.index(b'"index_version":') + len(b'"index_version":')
    payload[at] = ord("9") if payload[at] != ord("9") else ord("8")
    assert gate(message("announcement", bytes(payload))) is Verdict.REJECT


def test_an_announcement_for_another_network_is_rejected(
    tmp_path: Path, node: Path, repo: Repository, keys: Keys
) -> None:
    gate, _ = gate_for(node, repo)
    other = Envelope.from_bytes(announcement(repo, keys.index)).signed
    foreign = Envelope.sign({**other, "network_id": "testnet"}, [keys.index]).raw
    decided = gate.decide(message("announcement", foreign))
    assert decided.verdict is Verdict.REJECT and "network" in decided.reason


def test_a_replayed_announcement_is_ignored_also_after_a_restart(
    node: Path, repo: Repository, keys: Keys
) -> None:
    old = announcement(repo, keys.index)
    gate, state = gate_for(node, repo)
    assert gate(message("announcement", old)) is Verdict.ACCEPT
    repo.refresh(keys.index)
    assert gate(message("announcement", announcement(repo, keys.index))) is Verdict.ACCEPT
    state.close()
    restarted, _ = gate_for(node, repo)  # a new process over the same node directory
    decided = restarted.decide(message("announcement", old))
    assert decided.verdict is Verdict.IGNORE and "floor" in decided.reason


def test_an_expired_announcement_is_ignored_not_rejected(
    node: Path, repo: Repository, keys: Keys
) -> None:
    state = StateDB.open(node / "state.db")
    later = PeerMessageGate(repo.root, state, clock=lambda: NOW + dt.timedelta(days=30))
    decided = later.decide(message("announcement", announcement(repo, keys.index)))
    assert decided.verdict is Verdict.IGNORE and decided.reason == "expired"


@pytest.mark.parametrize(
    ("kind", "payload", "why"),
    [
        ("announcement", b"x" * 5000, "cap"),
        ("announcement", b'{"signed": {"_type": "announcement"}, "signed": {}}', "malformed"),
        ("announcement", b'{"signed":{"a":NaN},"signatures":[]}', "malformed"),
        ("index", b"{}", "unknown kind"),
        ("status", b"\xff\xfe", "malformed"),
    ],
)
def test_oversized_malformed_and_unknown_messages_are_rejected(
    node: Path, repo: Repository, kind: str, payload: bytes, why: str
) -> None:
    gate, _ = gate_for(node, repo)
    decided = gate.decide(message(kind, payload))
    assert decided.verdict is Verdict.REJECT and why in decided.reason


def status(
    key: PrivateKey, seq: int, *, node_id: str | None = None, network: str = "blackhole"
) -> bytes:
    doc = NodeStatusDoc(
        node_id=node_id or key.public_key.hex, network_id=network, seq=seq,
        expires=NOW + dt.timedelta(hours=1), current_version="1.0.0", state="idle",
    )  # fmt: skip
    return Envelope.sign(doc.to_dict(), [key]).raw


def test_a_node_status_is_accepted_from_its_own_key_and_replays_are_ignored(
    node: Path, repo: Repository
) -> None:
    gate, _ = gate_for(node, repo)
    peer = PrivateKey.generate()
    assert gate(message("status", status(peer, 5))) is Verdict.ACCEPT
    assert gate(message("status", status(peer, 5))) is Verdict.IGNORE
    assert gate(message("status", status(peer, 4))) is Verdict.IGNORE
    assert gate(message("status", status(peer, 6))) is Verdict.ACCEPT
    # floors are per node: another node's seq 1 is new
    assert gate(message("status", status(PrivateKey.generate(), 1))) is Verdict.ACCEPT


def test_a_status_signed_for_another_node_is_rejected(node: Path, repo: Repository) -> None:
    gate, _ = gate_for(node, repo)
    victim, attacker = PrivateKey.generate(), PrivateKey.generate()
    forged = status(attacker, 99, node_id=victim.public_key.hex)
    decided = gate.decide(message("status", forged))
    assert decided.verdict is Verdict.REJECT
    assert gate(message("status", status(victim, 1))) is Verdict.ACCEPT  # floor untouched


def halt(keys: list[PrivateKey], version: int) -> bytes:
    doc = HaltDoc("1.2.0", "failing health reports", version, NOW + dt.timedelta(days=1))
    return Envelope.sign(doc.to_dict(), keys).raw


def test_a_halt_needs_the_governance_threshold(node: Path, repo: Repository, keys: Keys) -> None:
    gate, _ = gate_for(node, repo)
    assert gate(message("halt", halt(keys.gov[:1], 1))) is Verdict.REJECT  # 1 of 2
    assert gate(message("halt", halt([keys.stranger, keys.gov[0]], 1))) is Verdict.REJECT
    assert gate(message("halt", halt(keys.gov[1:], 1))) is Verdict.ACCEPT
    assert gate(message("halt", halt(keys.gov[1:], 1))) is Verdict.IGNORE


def test_announcements_cover_every_channel_and_fit_a_dht_value(
    repo: Repository, keys: Keys
) -> None:
    data = repo.index_bytes()
    assert data is not None
    made = make_announcements(data, repo.root(), keys.index)
    assert set(made) == set(repo.index().channels)  # type: ignore[union-attr]
    assert all(len(v) <= 996 for v in made.values())
    with pytest.raises(Exception, match="not the index key"):
        make_announcement(data, repo.root(), "stable", keys.stranger)
    assert format_time(NOW)  # the clock helpers stay importable from the top level


def test_the_gate_counts_its_verdicts(node: Path, repo: Repository, keys: Keys) -> None:
    gate, _ = gate_for(node, repo)
    payload = announcement(repo, keys.index)
    gate(message("announcement", payload))
    gate(message("announcement", payload))
    gate(message("nonsense", b"{}"))
    assert gate.counts == {"accept": 1, "reject": 1, "ignore": 1}
    _ = NodeStore  # the store owns the same state database
