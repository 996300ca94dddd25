"""BEP 44 announcements across nine local DHT nodes, each a libtorrent session in its own process.

The DHT is an untrusted store. These tests show what it returns when someone puts a value
signed by another key, a lower seq or an equal seq with another value, and that the caller's
check (``decide`` below, a stand-in for the core's accept / reject / ignore decision) refuses
each of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from blackhole_sync_bittorrent import MutableItem, announcement_salt, create_torrent
from bt_helpers import Cluster, NodeProc, make_blob, sha256_of
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

pytestmark = [pytest.mark.xdist_group("net"), pytest.mark.timeout(180)]

NODES = 9
INDEX_KEY = SigningKey(bytes(range(32)))
ATTACKER_KEY = SigningKey(bytes(range(100, 132)))
SALT = announcement_salt("testnet", "stable")

Decision = Literal["accept", "reject", "ignore"]


def document(key: SigningKey, version: int, note: str = "") -> bytes:
    """A signed announcement: ed25519 signature + canonical JSON, as the core would make."""
    body = json.dumps(
        {"network": "testnet", "channel": "stable", "index_version": version, "note": note},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return bytes(key.sign(body))


def decide(
    candidate: dict[str, Any], trusted: VerifyKey, floor: tuple[int, bytes] | None
) -> Decision:
    """The caller's check of one DHT candidate; ``floor`` is the (seq, value) accepted last."""
    value = bytes.fromhex(candidate["value"])
    if bytes.fromhex(candidate["public_key"]) != bytes(trusted):
        return "reject"  # not the index key
    try:
        body = json.loads(trusted.verify(value))
    except (BadSignatureError, ValueError):
        return "reject"  # the document itself is not signed by the index key
    if body.get("index_version") != candidate["seq"] or bytes.fromhex(candidate["salt"]) != SALT:
        return "reject"
    if floor is not None:
        if candidate["seq"] < floor[0]:
            return "ignore"  # stale: the DHT (or a node) is behind
        if candidate["seq"] == floor[0]:
            return "ignore" if value == floor[1] else "reject"  # duplicate / equivocation
    return "accept"


def signed(key: SigningKey, seq: int, value: bytes, salt: bytes = SALT) -> dict[str, Any]:
    item = MutableItem.sign(key, value, seq, salt)
    return {
        "public_key": item.public_key.hex(),
        "salt": item.salt.hex(),
        "seq": item.seq,
        "value": item.value.hex(),
        "signature": item.signature.hex(),
    }


def get(node: NodeProc, key: SigningKey, salt: bytes = SALT) -> list[dict[str, Any]]:
    reply = node.request("dht_get", public_key=bytes(key.verify_key).hex(), salt=salt.hex())
    assert reply["nodes_responded"] >= 5, reply
    candidates: list[dict[str, Any]] = reply["candidates"]
    return candidates


@pytest.fixture(scope="module")
def dht(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProc]]:
    """Nine nodes; every node knows the first one and the one before it."""
    group = Cluster(tmp_path_factory.mktemp("dht"))
    try:
        nodes: list[NodeProc] = []
        for i in range(NODES):
            known = sorted({nodes[0].port, nodes[-1].port}) if nodes else []
            args = ["--dht-announce-interval", "5"]
            for port in known:
                args += ["--dht-node", f"127.0.0.1:{port}"]
            nodes.append(group.node(f"n{i}", backend=("asyncio", "trio")[i % 2], args=args))
        # Then every node learns every other (as a node would from its configuration or
        # gossip), and lookups from both ends reach the whole network.
        for node in nodes:
            node.request("dht_nodes", ports=[n.port for n in nodes if n is not node])
        for node in (nodes[0], nodes[-1]):
            reply = node.request("dht_get", public_key="00" * 32, salt="")
            assert reply["nodes_responded"] == NODES, reply
        yield nodes
    finally:
        group.close()


@pytest.fixture(scope="module")
def published(dht: list[NodeProc]) -> tuple[int, bytes]:
    """The index key's announcement at seq 5, put by node 3 (the origin)."""
    value = document(INDEX_KEY, 5)
    result = dht[3].request("dht_put", item=signed(INDEX_KEY, 5, value))
    assert result["stored"] >= 5, result
    assert result["refused"] == []
    return 5, value


# libtorrent's own lookups (the native put/get and the peer search) run first: libtorrent
# adds the sender of a BEP 44 put to its routing table even when the query is flagged
# read-only, and our client does not answer queries, so after our puts libtorrent's own
# lookups wait for those dead entries to time out (see the README's known limitations).


def test_peers_are_found_through_the_dht(dht: list[NodeProc], tmp_path: Path) -> None:
    blob, _ = make_blob(tmp_path / "origin", 512 * 1024, seed=9)
    torrent = create_torrent(blob)
    torrent_path = tmp_path / "t.torrent"
    torrent_path.write_bytes(torrent.data)
    dht[1].request("seed", torrent=str(torrent_path), file=str(blob))
    (tmp_path / "stage").mkdir()
    dht[7].request(
        "download",
        torrent=str(torrent_path),
        staging=str(tmp_path / "stage"),
        cap=1 << 20,
        use_dht=True,
    )
    done = dht[7].wait_event("finished", timeout=60)
    assert sha256_of(Path(done["path"])) == torrent.name
    dht[7].request("stop", btih=torrent.btih)
    dht[1].request("stop", btih=torrent.btih)


def test_libtorrent_native_put_and_get_agree_with_our_signatures(dht: list[NodeProc]) -> None:
    key = SigningKey(bytes(range(50, 82)))
    salt = announcement_salt("testnet", "native")
    value = document(key, 1, "native")
    put = dht[4].request(
        "dht_put_native", seed=bytes(key).hex(), value=value.hex(), salt=salt.hex()
    )
    assert put["seq"] == 1 and put["stored"] >= 5  # libtorrent picks seq = found + 1
    candidates = get(dht[0], key, salt)  # our client verifies libtorrent's signature with pynacl
    assert [(c["seq"], c["value"]) for c in candidates] == [(1, value.hex())]
    # And the other way round: our put (seq 7), libtorrent's lookup.
    ours = signed(key, 7, document(key, 7, "ours"), salt)
    assert dht[6].request("dht_put", item=ours)["stored"] >= 5
    native = dht[2].request("dht_get_native", public_key=ours["public_key"], salt=salt.hex())[
        "item"
    ]
    assert native == {k: ours[k] for k in native}


def test_an_announcement_put_with_a_chosen_seq_is_found_from_every_side(
    dht: list[NodeProc], published: tuple[int, bytes]
) -> None:
    for node in (dht[0], dht[5], dht[8]):
        candidates = get(node, INDEX_KEY)
        assert [c["seq"] for c in candidates] == [5]
        assert candidates[0]["responders"] >= 5
        assert decide(candidates[0], INDEX_KEY.verify_key, None) == "accept"
        assert decide(candidates[0], INDEX_KEY.verify_key, published) == "ignore"  # seen already


def test_a_value_signed_by_another_key_is_refused(
    dht: list[NodeProc], published: tuple[int, bytes]
) -> None:
    forged_doc = document(ATTACKER_KEY, 6, "evil")
    # Under the attacker's own key the DHT stores it: anyone may write under their own key.
    own = dht[7].request("dht_put", item=signed(ATTACKER_KEY, 6, forged_doc))
    assert own["stored"] >= 5
    theirs = get(dht[1], ATTACKER_KEY)
    assert [c["seq"] for c in theirs] == [6]
    assert decide(theirs[0], INDEX_KEY.verify_key, published) == "reject"
    # Under the index key, signed by the attacker: every node refuses the put (bad signature).
    forged = signed(ATTACKER_KEY, 6, forged_doc)
    forged["public_key"] = bytes(INDEX_KEY.verify_key).hex()
    refused = dht[7].request("dht_put", item=forged)
    assert refused["stored"] == 0
    assert refused["refused"] and all(code == 206 for code, _ in refused["refused"]), refused
    # A genuine DHT signature over a document the index key did not sign: refused by the caller.
    inner_forgery = document(ATTACKER_KEY, 6, "evil")
    candidate = {**signed(INDEX_KEY, 6, inner_forgery), "responders": 1}
    assert decide(candidate, INDEX_KEY.verify_key, published) == "reject"
    # What the index key's readers get is still the genuine announcement.
    assert [c["seq"] for c in get(dht[2], INDEX_KEY)] == [5]


def test_a_lower_seq_is_refused(dht: list[NodeProc], published: tuple[int, bytes]) -> None:
    older = signed(INDEX_KEY, 3, document(INDEX_KEY, 3))  # a genuine, older announcement
    replay = dht[6].request("dht_put", item=older)
    assert replay["stored"] == 0
    assert replay["refused"] and all(code == 302 for code, _ in replay["refused"]), replay
    candidates = get(dht[4], INDEX_KEY)
    assert [c["seq"] for c in candidates] == [5]  # the DHT itself does not go back
    # Were a node (or an expired DHT) to hand it out, the caller's floor refuses it.
    assert decide({**older, "responders": 1}, INDEX_KEY.verify_key, published) == "ignore"


def test_an_equal_seq_with_another_value_is_refused(
    dht: list[NodeProc], published: tuple[int, bytes]
) -> None:
    other = signed(INDEX_KEY, 5, document(INDEX_KEY, 5, "equivocation"))
    put = dht[2].request("dht_put", item=other)
    candidates = get(dht[8], INDEX_KEY)
    seqs_and_values = sorted((c["seq"], c["value"]) for c in candidates)
    print("equal-seq put:", put, "get now returns:", seqs_and_values)
    assert all(seq == 5 for seq, _ in seqs_and_values)
    assert {"seq": 5, "value": published[1].hex()}.items() <= {
        **candidates[0],
        "seq": 5,
    }.items() or any(c["value"] == published[1].hex() for c in candidates)
    for candidate in candidates:
        expected = "ignore" if candidate["value"] == published[1].hex() else "reject"
        assert decide(candidate, INDEX_KEY.verify_key, published) == expected
    assert decide({**other, "responders": 1}, INDEX_KEY.verify_key, published) == "reject"


def test_a_node_without_the_key_re_puts_the_signed_item(dht: list[NodeProc]) -> None:
    salt = announcement_salt("testnet", "keepalive")
    item = signed(INDEX_KEY, 9, document(INDEX_KEY, 9, "keep"), salt)
    dht[5].request("keep_published", item=item, interval=3600)  # node 5 never had the key
    deadline = time.monotonic() + 20
    while not (found := get(dht[1], INDEX_KEY, salt)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [c["seq"] for c in found] == [9]
    again = dht[8].request("dht_put", item=item)  # a plain re-put is accepted too
    assert again["stored"] >= 5 and again["refused"] == []
