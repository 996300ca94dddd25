"""Hypothesis properties of the signed-document formats and of version ordering."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from blackhole_sync.documents import (
    MAX_INT,
    UPDATE_TYPES,
    Envelope,
    Index,
    ReleaseManifest,
    Root,
    canonical_bytes,
    format_time,
    parse_version,
)
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.documents.versions import VersionComparison, compare_versions, sort_versions
from blackhole_sync.errors import FormatError, SignatureError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [PrivateKey.generate() for _ in range(8)]

# -- strategies -----------------------------------------------------------------------------------

ints = st.integers(min_value=0, max_value=MAX_INT)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,15}", fullmatch=True)
file_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,30}", fullmatch=True).filter(
    lambda n: n not in (".", "..")
)
sha256 = st.binary(min_size=32, max_size=32).map(bytes.hex)
times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2200, 1, 1)).map(
    lambda t: format_time(t.replace(microsecond=0, tzinfo=dt.UTC))
)

numeric_id = st.integers(min_value=0, max_value=10**6).map(str)
alnum_id = st.from_regex(r"[0-9A-Za-z-]{0,5}[A-Za-z-][0-9A-Za-z-]{0,5}", fullmatch=True)
prerelease = st.lists(numeric_id | alnum_id, min_size=1, max_size=3).map(".".join)
core = st.tuples(*[st.integers(min_value=0, max_value=30)] * 3).map(
    lambda t: "%d.%d.%d" % t  # noqa: UP031
)
versions = st.builds(
    lambda c, pre: c if pre is None else f"{c}-{pre}", core, st.none() | prerelease
)

json_values = st.recursive(
    st.none() | st.booleans() | ints | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
extras = st.dictionaries(names.map(lambda n: "x_" + n), json_values, max_size=2)


def metafile() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda n, h: {"length": n, "hashes": {"sha256": h}}, ints, sha256)


@st.composite
def roots(draw: st.DrawFn) -> dict[str, Any]:
    roles = {}
    used: dict[str, Any] = {}
    for role in ("root", "release", "index", "governance")[: draw(st.integers(3, 4))]:
        keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True))
        roles[role] = {
            "keyids": [k.keyid for k in keys],
            "threshold": draw(st.integers(1, len(keys))),
            **draw(extras),
        }
        used.update({k.keyid: k.public_key.to_dict() for k in keys})
    return {
        "_type": "root",
        "spec_version": "1",
        "version": draw(st.integers(1, MAX_INT)),
        "expires": draw(times),
        "keys": used,
        "roles": roles,
        "network_id": draw(names),
        **draw(extras),
    }


@st.composite
def indexes(draw: st.DrawFn) -> dict[str, Any]:
    all_versions = draw(st.lists(versions, max_size=8, unique=True))
    channels: dict[str, Any] = {}
    for v in all_versions:
        ch = channels.setdefault(draw(names), {"releases": {}, "withdrawn": {}})
        if draw(st.booleans()):
            ch["releases"][v] = draw(metafile())
        else:
            ch["withdrawn"][v] = {"reason": draw(texts)}
    return {
        "_type": "index",
        "spec_version": "1",
        "version": draw(st.integers(1, MAX_INT)),
        "expires": draw(times),
        "channels": channels,
        "rollouts": draw(st.dictionaries(versions, metafile(), max_size=2)),
        "halts": draw(st.dictionaries(versions, metafile(), max_size=2)),
        **draw(extras),
    }


@st.composite
def artifacts(draw: st.DrawFn, name: str) -> dict[str, Any]:
    art: dict[str, Any] = {
        "name": name,
        "length": draw(ints),
        "hashes": {"sha256": draw(sha256)},
        "mode": draw(st.integers(0, 0o777)),
        "platform": draw(st.sampled_from(["any", "linux", "darwin"])),
        "arch": draw(st.sampled_from(["any", "x86_64", "aarch64"])),
        **draw(extras),
    }
    if draw(st.booleans()):
        art["locators"] = [{"kind": "url", "value": "https://example.org/" + name}]
    return art


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    file_list = draw(st.lists(file_names, min_size=1, max_size=5, unique=True))
    doc: dict[str, Any] = {
        "_type": "release",
        "spec_version": "1",
        "version": draw(versions),
        "type": draw(st.sampled_from(UPDATE_TYPES)),
        "channel": draw(names),
        "artifacts": [draw(artifacts(n)) for n in file_list],
        "released": draw(times),
        "critical": draw(st.booleans()),
        "priority": draw(st.integers(0, 1000)),
        **draw(extras),
    }
    if draw(st.booleans()):
        doc["notes"] = draw(texts.filter(bool))
    if draw(st.booleans()):
        doc["compatibility"] = {
            "min_from_version": draw(versions),
            "protocol_versions": draw(st.lists(st.integers(0, 100), min_size=1, max_size=3)),
        }
    return doc


MODELS = {"root": Root, "index": Index, "release": ReleaseManifest}
documents = st.one_of(
    roots().map(lambda d: ("root", d)),
    indexes().map(lambda d: ("index", d)),
    manifests().map(lambda d: ("release", d)),
)


# -- documents round-trip through bytes ---------------------------------------------------------


@SETTINGS
@given(documents, st.lists(st.sampled_from(KEYS), max_size=3, unique=True))
def test_documents_round_trip_through_bytes(
    doc: tuple[str, dict[str, Any]], keys: list[PrivateKey]
) -> None:
    kind, signed = doc
    model = MODELS[kind].from_dict(signed)
    data = Envelope.sign(model.to_dict(), keys).raw
    envelope = Envelope.from_bytes(data, expected_type=kind)
    again = envelope.parse(MODELS[kind].from_dict)
    assert again == model
    assert envelope.signed_bytes == canonical_bytes(model.to_dict())
    assert canonical_bytes(again.to_dict()) == envelope.signed_bytes
    assert [s.keyid for s in envelope.signatures] == [k.keyid for k in keys]
    # Any JSON layout of the same document parses to the same canonical bytes.
    pretty = json.dumps(json.loads(data), indent=1, ensure_ascii=True).encode()
    assert Envelope.from_bytes(pretty).signed_bytes == envelope.signed_bytes


# -- flipping any byte of the signed bytes breaks verification -------------------------------------

RELEASE_KEYS = KEYS[:5]
FLIP_ROOT = Root.from_dict(
    {
        "_type": "root",
        "spec_version": "1",
        "version": 1,
        "expires": "2100-01-01T00:00:00Z",
        "keys": {k.keyid: k.public_key.to_dict() for k in KEYS},
        "roles": {
            "root": {"keyids": [KEYS[7].keyid], "threshold": 1},
            "index": {"keyids": [KEYS[6].keyid], "threshold": 1},
            "release": {"keyids": [k.keyid for k in RELEASE_KEYS], "threshold": 3},
        },
    }
)


@SETTINGS
@given(manifests(), st.data())
def test_flipping_any_signed_byte_fails_verification(
    signed: dict[str, Any], data: st.DataObject
) -> None:
    envelope = Envelope.sign(ReleaseManifest.from_dict(signed).to_dict(), RELEASE_KEYS)
    FLIP_ROOT.verify_role(Envelope.from_bytes(envelope.raw), "release")  # the original verifies
    body = bytearray(envelope.signed_bytes)
    position = data.draw(st.integers(0, len(body) - 1), label="position")
    body[position] ^= data.draw(st.integers(1, 255), label="mask")
    sigs = json.dumps([s.to_dict() for s in envelope.signatures]).encode()
    tampered = b'{"signatures":' + sigs + b',"signed":' + bytes(body) + b"}"
    with pytest.raises((FormatError, SignatureError)):
        parsed = Envelope.from_bytes(tampered, expected_type="release")
        parsed.parse(ReleaseManifest.from_dict)
        FLIP_ROOT.verify_role(parsed, "release")


# -- ordering of accepted versions is total --------------------------------------------------------


@SETTINGS
@given(versions, versions, versions)
def test_version_ordering_is_total(a: str, b: str, c: str) -> None:
    for v in (a, b, c):
        assert parse_version(v) == v
    ab, ba = compare_versions(a, b), compare_versions(b, a)
    assert ab == -ba  # antisymmetric
    assert (ab is VersionComparison.EQUAL) == (a == b)  # consistent with equality
    if ab <= 0 and compare_versions(b, c) <= 0:
        assert compare_versions(a, c) <= 0  # transitive
    ordered = sort_versions([a, b, c])
    assert all(compare_versions(x, y) <= 0 for x, y in itertools.pairwise(ordered))


@SETTINGS
@given(core, prerelease)
def test_prerelease_sorts_before_its_release(release: str, pre: str) -> None:
    assert compare_versions(f"{release}-{pre}", release) is VersionComparison.OLDER


_VOTE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2, max_value=2**64),
    st.sampled_from(["a" * 64, "A" * 64, "g" * 64, "blackhole", "Bad Net", "", "x" * 129,
                     "2026-12-01T00:00:00Z", "2026-13-01T00:00:00Z", "vote", "health"]),
    st.lists(st.integers(), max_size=2),
)  # fmt: skip


@given(
    changes=st.dictionaries(
        st.sampled_from(["_type", "node_id", "network_id", "seq", "expires", "proposal",
                         "release_digest", "support", "extra_field"]),
        _VOTE_VALUES, max_size=3,
    ),
    dropped=st.sets(st.sampled_from(["node_id", "seq", "support"]), max_size=1),
)  # fmt: skip
@settings(max_examples=400, deadline=None)
def test_the_votes_fast_path_accepts_only_what_the_full_parser_accepts_alike(
    changes: dict[str, Any], dropped: set[str]
) -> None:
    """The tally's accept-only fast path (``_plain_vote``) never accepts what the full parser
    refuses, and what it accepts is the same Vote."""
    from blackhole_sync.documents import Vote, node_documents

    obj: dict[str, Any] = {
        "_type": "vote", "node_id": "ab" * 32, "network_id": "blackhole", "seq": 7,
        "expires": "2027-01-01T00:00:00Z", "proposal": "protocol-8",
        "release_digest": "cd" * 32, "support": True,
    }  # fmt: skip
    obj.update(changes)
    for key in dropped:
        obj.pop(key, None)
    fast = node_documents._plain_vote(dict(obj))
    original = node_documents._plain_vote
    node_documents._plain_vote = lambda _obj: None  # the full parser alone
    try:
        full: Vote | FormatError = Vote.from_dict(dict(obj))
    except FormatError as exc:
        full = exc
    finally:
        node_documents._plain_vote = original
    if fast is not None:
        assert fast == full
    if not changes and not dropped:
        assert fast is not None  # the plain shape takes the fast path


def _vote_both_ways(data: bytes) -> tuple[Any, Any]:
    """The one-step vote parser's answer, and the general parser's (envelope and model, or
    its FormatError)."""
    from blackhole_sync.documents import Vote, plain_vote_envelope

    fast = plain_vote_envelope(data)
    try:
        envelope = Envelope.from_bytes(data, expected_type="vote")
        full: Any = (envelope, envelope.parse(Vote.from_dict))
    except FormatError as exc:
        full = exc
    return fast, full


def _assert_alike(fast: Any, full: Any) -> None:
    if fast is None:
        return
    assert not isinstance(full, FormatError), f"the fast path took what the parser refuses: {full}"
    (env, vote), (full_env, full_vote) = fast, full
    assert env == full_env and vote == full_vote
    assert dict(env.signed) == dict(full_env.signed)
    assert env.signed_bytes == full_env.signed_bytes and env.raw == full_env.raw
    assert vote.expires.tzinfo is full_vote.expires.tzinfo


_VOTE_FIELD_VALUES = {
    "_type": st.sampled_from(["vote", "health", "Vote"]),
    "node_id": sha256 | st.sampled_from(["AB" * 32, "ab" * 31, "00" * 32]),
    "network_id": names | st.sampled_from(["Bad", "-x", "a" * 65, "ne\u00e9t", ""]),
    "seq": st.integers(min_value=-3, max_value=2**64) | st.sampled_from([MAX_INT, MAX_INT + 1]),
    "expires": times | st.sampled_from(["2026-02-30T00:00:00Z", "0000-01-01T00:00:00Z",
                                        "2026-01-01T24:00:00Z", "2026-01-01 00:00:00Z"]),
    "proposal": st.from_regex(r"[A-Za-z0-9._-]{1,130}", fullmatch=True) | texts,
    "release_digest": sha256 | st.just("CD" * 32),
    "support": st.booleans() | st.sampled_from([0, 1, None, "true"]),
}  # fmt: skip


@given(
    fields=st.fixed_dictionaries({}, optional=_VOTE_FIELD_VALUES),
    extra=st.dictionaries(st.sampled_from(["extra", "zz", "a"]), json_values, max_size=1),
    sig=st.binary(min_size=64, max_size=64).map(bytes.hex) | st.sampled_from(["ab", "AB" * 64]),
    keyid=sha256 | st.just("0" * 63),
    signatures=st.integers(min_value=0, max_value=2),
)
@settings(max_examples=600, deadline=None)
def test_the_one_step_vote_parser_agrees_with_the_general_parser(
    fields: dict[str, Any], extra: dict[str, Any], sig: str, keyid: str, signatures: int
) -> None:
    """``plain_vote_envelope`` (the gate's fast path for canonical votes) returns exactly the
    envelope and Vote the general parser builds, or declines: it never accepts what the
    general parser refuses. Votes are written canonically, field values drawn valid and not."""
    signed = {**extra, **fields}
    document = {"signed": signed, "signatures": [{"keyid": keyid, "sig": sig}] * signatures}
    fast, full = _vote_both_ways(canonical_bytes(document))
    _assert_alike(fast, full)
    valid = {
        "_type": "vote", "node_id": "ab" * 32, "network_id": "blackhole", "seq": 3,
        "expires": "2027-01-01T00:00:00Z", "proposal": "protocol-8",
        "release_digest": "cd" * 32, "support": False,
    }  # fmt: skip
    plain = {"signed": valid, "signatures": [{"keyid": "ef" * 32, "sig": "01" * 64}]}
    assert _vote_both_ways(canonical_bytes(plain))[0] is not None  # the plain shape is fast


_PLAIN_VOTE = canonical_bytes(
    {
        "signed": {
            "_type": "vote", "node_id": "ab" * 32, "network_id": "blackhole", "seq": 12,
            "expires": "2027-01-01T00:00:00Z", "proposal": "p-1.x_2",
            "release_digest": "cd" * 32, "support": True,
        },
        "signatures": [{"keyid": "ef" * 32, "sig": "01" * 64}],
    }
)  # fmt: skip


@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete"]),
            st.integers(min_value=0, max_value=len(_PLAIN_VOTE) - 1),
            st.sampled_from([*b' "\\{}[],:0189afAFZTnu-._\x00\xc3\xa9', 0x7F, 0xFF]),
        ),
        min_size=1,
        max_size=3,
    )
)
@settings(max_examples=800, deadline=None)
def test_no_byte_edit_of_a_canonical_vote_makes_the_one_step_parser_disagree(
    edits: list[tuple[str, int, int]],
) -> None:
    """Spaces, duplicate or reordered keys, escapes, leading zeros, non-ASCII bytes, a broken
    calendar: whatever a byte edit makes of a canonical vote, the fast path declines or builds
    what the general parser builds."""
    data = bytearray(_PLAIN_VOTE)
    for op, at, byte in edits:
        at = min(at, len(data) - 1)
        if op == "replace":
            data[at] = byte
        elif op == "insert":
            data.insert(at, byte)
        else:
            del data[at]
    fast, full = _vote_both_ways(bytes(data))
    _assert_alike(fast, full)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"seq":12', b'"seq":012'),  # a leading zero: not JSON
        (b'"seq":12', b'"seq":9223372036854775808'),  # over MAX_INT
        (b'"proposal":"p-1.x_2"', b'"proposal":"p-1.x\\u005f2"'),  # an escape
        (b'"support":true', b'"support":true,"support":false'),  # a duplicate key
        (b'"expires":"2027-01-01', b'"expires":"2027-02-30'),  # no such day
        (b'"expires":"2027-01-01T00', b'"expires":"2027-01-01T24'),  # no such hour
        (b"T00:00:00Z", b"T00:00:60Z"),  # no such second
        (b'{"signatures"', b'{ "signatures"'),  # not canonical
    ],
)
def test_the_one_step_vote_parser_declines_the_near_misses(old: bytes, new: bytes) -> None:
    data = _PLAIN_VOTE.replace(old, new, 1)
    assert data != _PLAIN_VOTE
    fast, full = _vote_both_ways(data)
    assert fast is None
    if old.startswith(b'"proposal"'):  # an escape is valid JSON for the general parser
        assert not isinstance(full, FormatError) and full[1].proposal == "p-1.x_2"
    elif old.startswith(b"{"):
        assert not isinstance(full, FormatError)  # a space: the general parser reads it
    else:
        assert isinstance(full, FormatError)
