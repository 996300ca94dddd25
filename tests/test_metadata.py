"""Strict parsing and canonical encoding: every bad-input rule of issue 2, item 4."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from repo_sim import REF, RepoSim, artifact, sign_bytes

import blackhole_sync.documents as documents
from blackhole_sync.documents import (
    MAX_INT,
    MAX_SIZES,
    Envelope,
    Index,
    MetaFile,
    ReleaseManifest,
    Root,
    canonical,
    canonical_bytes,
    check_safe_name,
    check_safe_path,
    format_time,
    parse_time,
    parse_version,
    strict_loads,
)
from blackhole_sync.errors import FormatError, UnsafePathError


@pytest.fixture(scope="module")
def sim() -> RepoSim:
    sim = RepoSim(keys={"release": 3}, thresholds={"release": 2})
    sim.add_release("1.0.0")
    return sim


def full_manifest(sim: RepoSim) -> dict[str, Any]:
    """A release manifest using every optional field of the format."""
    h = "ab" * 32
    return sim.manifest_signed(
        "1.2.0-rc.1",
        n_artifacts=0,
        artifacts=[
            artifact("node.bin", b"binary", mode=0o755, platform="linux", arch="x86_64"),
            {
                **artifact(
                    "web.tar",
                    b"tar",
                    unpack={
                        "format": "tar",
                        "members": [
                            {"path": "static", "mode": 0o755, "type": "dir"},
                            {
                                "path": "static/app.js",
                                "mode": 0o644,
                                "length": 3,
                                "hashes": {"sha256": h},
                            },
                        ],
                    },
                    locators=[{"kind": "url", "value": "https://example.org/web.tar"}],
                ),
            },
            artifact(
                "secret.bin",
                b"plain",
                encryption={
                    "scheme": "secretstream-xchacha20poly1305+sealedbox-x25519",
                    "ciphertext": {"length": 99, "hashes": {"sha256": h}},
                    "recipients": [{"public": "cd" * 32, "sealed_key": "ef" * 40}],
                    "chunk_size": 65536,
                },
            ),
        ],
        critical=True,
        priority=7,
        deltas=[
            {
                "artifact": "node.bin",
                "from_version": "1.1.0",
                "source": {"length": 5, "hashes": {"sha256": h}},
                "patch": {"length": 2, "hashes": {"sha256": h}},
                "output_length": 6,
                "codec": "bsdiff4",
            }
        ],
        migrations=[{"id": "m1", "from_schema": 1, "to_schema": 2, "sql": "SELECT 1"}],
        schema={
            "from_version": 1,
            "to_version": 2,
            "backup_required": True,
            "estimated_seconds": 3,
        },
        config_changes=[
            {"key": "net.peers", "value": {"max": 50}, "scope": "regional", "selector": "eu"}
        ],
        protocol={"version": 4, "breaking": True, "consensus_threshold_bp": 9000},
        compatibility={"min_from_version": "1.0.0", "protocol_versions": [3, 4]},
        self_test={"argv": ["./node", "--self-test"], "timeout": 30},
        health={"argv": ["./node", "--health"], "timeout": 10, "window": 300},
        notes="Release notes",
    )


def test_sparse_document_parses_with_defaults(sim: RepoSim) -> None:
    """Optional fields may be omitted; the model fills in their defaults.

    ``to_dict`` writes the defaults out, so a sparse document's canonical bytes differ from
    its model's: signatures are therefore always verified over the received ``signed`` object
    (``Envelope.signed_bytes``), and co-signing must use ``Envelope.add_signature``.
    """
    signed = sim.manifest_signed("1.0.0")
    sparse = {k: v for k, v in signed.items() if k not in ("critical", "priority")}
    manifest = ReleaseManifest.from_dict(sparse)
    assert (manifest.critical, manifest.priority) == (False, 0)
    assert manifest.to_dict() == signed


def envelope(signed: Any, signatures: Any = ()) -> bytes:
    return json.dumps({"signed": signed, "signatures": list(signatures)}).encode()


# -- strict JSON ----------------------------------------------------------------------------------


def test_size_cap_applies_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed a document over the cap")

    monkeypatch.setattr(canonical.json, "loads", boom)
    with pytest.raises(FormatError, match="cap"):
        strict_loads(b"{" + b" " * 100 + b"}", max_size=100)
    oversized = b" " * (MAX_SIZES["root"] + 1)
    with pytest.raises(FormatError, match="cap"):
        Envelope.from_bytes(oversized, expected_type="root")


def test_size_cap_at_limit_accepted() -> None:
    data = b'{"a":1}'
    assert strict_loads(data, max_size=len(data)) == {"a": 1}
    with pytest.raises(FormatError):
        strict_loads(data, max_size=len(data) - 1)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"a":1,"a":1}', "duplicate"),
        (b'{"a":{"b":1,"b":2}}', "duplicate"),
        (b'{"a":1.0}', "float"),
        (b'{"a":1e3}', "float"),
        (b'{"a":-0.5}', "float"),
        (b'{"a":NaN}', "NaN"),
        (b'{"a":Infinity}', "Infinity"),
        (b'{"a":-Infinity}', "Infinity"),
        (b'{"a":-1}', "range"),
        (b'{"a":9223372036854775808}', "range"),
        (b'{"a":[99999999999999999999999]}', "range"),
        (b'{"a":"\\ud800"}', "surrogate"),
        (b'{"a":"x\\udfffy"}', "surrogate"),
        (b'{"\\ud83d":1}', "surrogate"),
        (b'\xef\xbb\xbf{"a":1}', "byte order mark"),
        (b'{"a":"\xff"}', "UTF-8"),
        (b'{"a":"\xed\xa0\x80"}', "UTF-8"),  # a surrogate encoded as UTF-8 bytes
        (b"\xfe\xff\x00{\x00}", "UTF-8"),
        (b'{"a":1} {}', "JSON"),
        (b"", "JSON"),
        (b"[" * 64 + b"]" * 64, "nesting"),
    ],
)
def test_strict_json_refuses(data: bytes, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        strict_loads(data, max_size=4096)


def test_strict_json_accepts_integer_bounds() -> None:
    assert strict_loads(b'{"a":[0,9223372036854775807]}', max_size=100) == {"a": [0, MAX_INT]}


def test_strict_json_refuses_str() -> None:
    with pytest.raises(TypeError):
        strict_loads('{"a":1}', max_size=100)  # type: ignore[arg-type]


def test_canonical_bytes_sorted_compact_unescaped() -> None:
    obj = {"b": [1, {"d": "é\n", "c": "\u2028"}], "a": "\x00"}
    assert canonical_bytes(obj) == '{"a":"\\u0000","b":[1,{"c":"\u2028","d":"é\\n"}]}'.encode()
    assert strict_loads(canonical_bytes(obj), max_size=1000) == obj


def test_canonical_bytes_refuses_floats_and_nan() -> None:
    with pytest.raises(FormatError):
        canonical_bytes({"a": float("nan")})


# -- envelopes --------------------------------------------------------------------------------------


def test_envelope_unknown_top_level_field_refused(sim: RepoSim) -> None:
    obj = json.loads(sim.root)
    obj["unsigned_extra"] = 1
    with pytest.raises(FormatError, match="top-level"):
        Envelope.from_bytes(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "sig",
    [
        {"keyid": "ab" * 32},
        {"keyid": "ab" * 32, "sig": "00" * 63},
        {"keyid": "AB" * 32, "sig": "00" * 64},
        {"keyid": "ab" * 32, "sig": "00" * 64, "extra": 1},
        {"keyid": "ab" * 32, "sig": None},
        "ab" * 32,
    ],
)
def test_envelope_malformed_signature_refused(sig: Any) -> None:
    with pytest.raises(FormatError):
        Envelope.from_bytes(envelope({"_type": "index"}, [sig]))


def test_envelope_too_many_signatures_refused() -> None:
    sig = {"keyid": "ab" * 32, "sig": "00" * 64}
    with pytest.raises(FormatError):
        Envelope.from_bytes(envelope({"_type": "index"}, [sig] * 257))


def test_envelope_wrong_type_refused(sim: RepoSim) -> None:
    with pytest.raises(FormatError, match="expected a index"):
        Envelope.from_bytes(sim.root, expected_type="index")


@pytest.mark.parametrize("body", [b"[]", b'{"signed": [], "signatures": []}', b'{"signed": {}}'])
def test_envelope_shape_refused(body: bytes) -> None:
    with pytest.raises(FormatError):
        Envelope.from_bytes(body)


# -- models: round trip and unknown fields ---------------------------------------------------------


def test_full_release_manifest_round_trips(sim: RepoSim) -> None:
    signed = full_manifest(sim)
    manifest = ReleaseManifest.from_dict(signed)
    assert canonical_bytes(manifest.to_dict()) == canonical_bytes(signed)
    assert manifest.artifact("web.tar").unpack is not None
    assert manifest.artifact("secret.bin").blob.length == 99
    assert [a.name for a in manifest.artifacts_for("linux", "x86_64")] == [
        "node.bin",
        "web.tar",
        "secret.bin",
    ]
    assert manifest.artifacts_for("darwin", "arm64")[0].name == "web.tar"


def test_root_and_index_round_trip(sim: RepoSim) -> None:
    for data, model in ((sim.root, Root), (sim.make_index(), Index)):
        env = Envelope.from_bytes(data)
        assert canonical_bytes(env.parse(model.from_dict).to_dict()) == env.signed_bytes


def test_unknown_fields_kept_so_canonical_bytes_round_trip_and_verify(sim: RepoSim) -> None:
    signed = full_manifest(sim)
    signed["x_new_top"] = {"nested": [1, 2, "three"]}
    signed["artifacts"][0]["x_new_artifact"] = "kept"
    signed["artifacts"][1]["unpack"]["members"][0]["x_new_member"] = 5
    signed["deltas"][0]["source"]["x_new_meta"] = True
    data = sign_bytes(signed, sim.keys["release"])
    env = Envelope.from_bytes(data, expected_type="release")
    manifest = env.parse(ReleaseManifest.from_dict)
    assert manifest.extra == {"x_new_top": {"nested": [1, 2, "three"]}}
    assert manifest.artifacts[0].extra == {"x_new_artifact": "kept"}
    rebuilt = Envelope.of(manifest.to_dict(), env.signatures)
    assert rebuilt.signed_bytes == env.signed_bytes
    root = Envelope.from_bytes(sim.root).parse(Root.from_dict)
    root.verify_role(Envelope.from_bytes(rebuilt.raw), "release")


def test_explicit_null_refused(sim: RepoSim) -> None:
    signed = full_manifest(sim)
    signed["notes"] = None
    with pytest.raises(FormatError, match="null"):
        ReleaseManifest.from_dict(signed)


# -- models: field rules ----------------------------------------------------------------------------


def mutate(signed: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(signed)
    *parents, last = path.split(".")
    node: Any = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("priority", True),  # a boolean where an integer belongs
        ("priority", False),
        ("artifacts.0.length", True),
        ("artifacts.0.mode", False),
        ("migrations.0.from_schema", True),
        ("protocol.version", True),
        ("artifacts.0.length", "6"),
        ("critical", 1),  # an integer where a boolean belongs
        ("priority", -1),
        ("artifacts.0.length", -1),
        ("artifacts.0.length", 2**63),
        ("priority", 1001),
        ("protocol.consensus_threshold_bp", 10_001),
    ],
)
def test_wrong_typed_or_out_of_range_field_refused(sim: RepoSim, path: str, value: Any) -> None:
    with pytest.raises(FormatError):
        ReleaseManifest.from_dict(mutate(full_manifest(sim), path, value))


def test_integer_bounds_through_bytes(sim: RepoSim) -> None:
    """Out-of-range integers are refused while parsing, even in unknown fields."""
    for value in (b"-1", b"9223372036854775808", b"-9223372036854775809"):
        text = sim.manifests["1.0.0"].replace(
            b'"spec_version"', b'"x":' + value + b',"spec_version"'
        )
        with pytest.raises(FormatError, match="range"):
            Envelope.from_bytes(text)
    text = sim.manifests["1.0.0"].replace(
        b'"spec_version"', b'"x":9223372036854775807,"spec_version"'
    )
    assert Envelope.from_bytes(text).signed["x"] == MAX_INT


@pytest.mark.parametrize(
    "version",
    [
        "v1.2.3",
        "1.2",
        "1",
        "1.2.3+build",
        "1.2.3-rc.1+b.5",
        "01.2.3",
        "1.02.3",
        "1.2.3-01",
        " 1.2.3",
        "1.2.3\n",
        "",
    ],
)
def test_version_not_semver_or_with_build_metadata_refused(sim: RepoSim, version: str) -> None:
    with pytest.raises(FormatError):
        parse_version(version)
    with pytest.raises(FormatError):
        ReleaseManifest.from_dict(mutate(full_manifest(sim), "version", version))
    with pytest.raises(FormatError):
        ReleaseManifest.from_dict(mutate(full_manifest(sim), "deltas.0.from_version", version))
    index = sim.index_signed(1)
    index["channels"]["stable"]["releases"] = {version: MetaFile.of(b"x").to_dict()}
    with pytest.raises(FormatError):
        Index.from_dict(index)


@pytest.mark.parametrize("version", ["1.2.3", "0.0.0", "1.2.3-rc.1", "10.20.30-alpha.beta.1"])
def test_semver_versions_accepted(version: str) -> None:
    assert parse_version(version) == version


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha512", "SHA256", "blake2b", ""])
def test_unknown_hash_algorithm_refused(sim: RepoSim, algorithm: str) -> None:
    signed = full_manifest(sim)
    hashes = {**signed["artifacts"][0]["hashes"], algorithm: "ab" * 32}
    with pytest.raises(FormatError, match="unknown hash algorithm"):
        ReleaseManifest.from_dict(mutate(signed, "artifacts.0.hashes", hashes))
    with pytest.raises(FormatError, match="unknown hash algorithm"):
        MetaFile.from_dict({"length": 1, "hashes": {algorithm: "ab" * 32}})


@pytest.mark.parametrize("digest", ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, 5])
def test_malformed_digest_refused(digest: Any) -> None:
    with pytest.raises(FormatError):
        MetaFile.from_dict({"length": 1, "hashes": {"sha256": digest}})


def test_sha256_required() -> None:
    with pytest.raises(FormatError):
        MetaFile.from_dict({"length": 1, "hashes": {}})


UNSAFE_NAMES = [
    "..",
    ".",
    "",
    "/etc/passwd",
    "a\\b",
    "..\\..\\evil",
    "a\x00b",
    "a" * 256,
    "é" * 128,  # 256 bytes in UTF-8
    "C:",
    "a\nb",
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_path_unsafe_artifact_name_refused(sim: RepoSim, name: str) -> None:
    with pytest.raises(UnsafePathError):
        check_safe_name(name)
    with pytest.raises(UnsafePathError):
        ReleaseManifest.from_dict(mutate(full_manifest(sim), "artifacts.0.name", name))


@pytest.mark.parametrize("name", ["sub/dir", "../x", "a/../../b"])
def test_artifact_name_with_directories_refused(name: str) -> None:
    with pytest.raises(UnsafePathError):
        check_safe_name(name)


@pytest.mark.parametrize(
    "path", ["../x", "a/../../b", "/abs", "a//b", "a/./b", "a\\b", "a/" + "b" * 256]
)
def test_path_unsafe_member_path_refused(sim: RepoSim, path: str) -> None:
    with pytest.raises(UnsafePathError):
        check_safe_path(path)
    with pytest.raises(UnsafePathError):
        ReleaseManifest.from_dict(
            mutate(full_manifest(sim), "artifacts.1.unpack.members.1.path", path)
        )


def test_safe_names_accepted() -> None:
    assert check_safe_name("a" * 255) == "a" * 255
    assert check_safe_name("é" * 127) == "é" * 127
    assert check_safe_name("node-1.2.3.tar.gz") == "node-1.2.3.tar.gz"
    assert check_safe_path("static/js/app.js") == "static/js/app.js"


def test_artifact_name_through_bytes_with_nul_refused(sim: RepoSim) -> None:
    data = sim.manifests["1.0.0"].replace(b'"node-0.bin"', b'"node\\u0000.bin"')
    env = Envelope.from_bytes(data)
    with pytest.raises(UnsafePathError):
        env.parse(ReleaseManifest.from_dict)


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777, 0o100644])
def test_setuid_or_type_bits_in_mode_refused(sim: RepoSim, mode: int) -> None:
    with pytest.raises(FormatError):
        ReleaseManifest.from_dict(mutate(full_manifest(sim), "artifacts.0.mode", mode))


def test_duplicate_archive_member_refused(sim: RepoSim) -> None:
    signed = full_manifest(sim)
    members = signed["artifacts"][1]["unpack"]["members"]
    with pytest.raises(UnsafePathError):
        ReleaseManifest.from_dict(
            mutate(signed, "artifacts.1.unpack.members", [*members, members[1]])
        )


def test_duplicate_artifact_refused(sim: RepoSim) -> None:
    signed = full_manifest(sim)
    with pytest.raises(FormatError):
        ReleaseManifest.from_dict(
            mutate(signed, "artifacts", [*signed["artifacts"], signed["artifacts"][0]])
        )


def test_delta_for_unknown_artifact_refused(sim: RepoSim) -> None:
    with pytest.raises(FormatError):
        ReleaseManifest.from_dict(mutate(full_manifest(sim), "deltas.0.artifact", "other.bin"))


@pytest.mark.parametrize(
    ("field", "value"),
    [("type", "firmware"), ("channel", "Stable!"), ("_type", "index"), ("spec_version", "2")],
)
def test_enumerated_fields_refused(sim: RepoSim, field: str, value: str) -> None:
    with pytest.raises(FormatError):
        ReleaseManifest.from_dict(mutate(full_manifest(sim), field, value))


@pytest.mark.parametrize(
    "value",
    ["2030-01-01", "2030-01-01T00:00:00", "2030-01-01T00:00:00.5Z", "2030-02-30T00:00:00Z", 5],
)
def test_malformed_time_refused(value: Any) -> None:
    with pytest.raises(FormatError):
        parse_time(value)


def test_time_round_trip() -> None:
    assert parse_time(format_time(REF)) == REF
    assert format_time(REF + dt.timedelta(seconds=1)) == "2030-01-01T00:00:01Z"


# -- root and index rules -------------------------------------------------------------------------------


def test_root_key_id_not_sha256_of_key_refused(sim: RepoSim) -> None:
    signed = sim.root_signed(1)
    key = next(iter(signed["keys"].values()))
    signed["keys"]["ab" * 32] = key
    with pytest.raises(FormatError):
        Root.from_dict(signed)


def test_root_role_threshold_above_distinct_keys_refused(sim: RepoSim) -> None:
    """A role listing one key twice cannot reach a threshold of two with it."""
    signed = sim.root_signed(1)
    kid = signed["roles"]["root"]["keyids"][0]
    signed["roles"]["root"] = {"keyids": [kid, kid], "threshold": 2}
    with pytest.raises(FormatError, match="distinct"):
        Root.from_dict(signed)


@pytest.mark.parametrize(
    "change", ["missing_role", "unknown_role", "unknown_key", "zero_threshold", "bool_threshold"]
)
def test_root_role_rules(sim: RepoSim, change: str) -> None:
    signed = sim.root_signed(1)
    roles = signed["roles"]
    if change == "missing_role":
        del roles["index"]
    elif change == "unknown_role":
        roles["mirror"] = roles["index"]
    elif change == "unknown_key":
        roles["index"] = {"keyids": ["ab" * 32], "threshold": 1}
    elif change == "zero_threshold":
        roles["index"]["threshold"] = 0
    else:
        roles["index"]["threshold"] = True
    with pytest.raises(FormatError):
        Root.from_dict(signed)


def test_root_key_with_unknown_field_refused(sim: RepoSim) -> None:
    signed = sim.root_signed(1)
    key = next(iter(signed["keys"].values()))
    key["x"] = 1
    with pytest.raises(FormatError):
        Root.from_dict(signed)


def test_index_release_both_listed_and_withdrawn_refused(sim: RepoSim) -> None:
    signed = sim.index_signed(1)
    signed["channels"]["stable"]["withdrawn"] = {"1.0.0": {"reason": "x"}}
    with pytest.raises(FormatError):
        Index.from_dict(signed)


def test_index_release_in_two_channels_refused(sim: RepoSim) -> None:
    signed = sim.index_signed(1)
    signed["channels"]["beta"] = copy.deepcopy(signed["channels"]["stable"])
    with pytest.raises(FormatError):
        Index.from_dict(signed)


def test_index_version_zero_refused(sim: RepoSim) -> None:
    with pytest.raises(FormatError):
        Index.from_dict(sim.index_signed(0))


def test_unknown_null_fields_kept_so_canonical_bytes_round_trip(sim: RepoSim) -> None:
    """Regression: ``to_dict`` dropped unknown fields whose value is null."""
    signed = full_manifest(sim)
    signed["x_null"] = None
    signed["artifacts"][0]["x_null"] = None
    signed["health"]["x_null"] = None
    manifest = ReleaseManifest.from_dict(signed)
    assert canonical_bytes(manifest.to_dict()) == canonical_bytes(signed)


@pytest.mark.parametrize(
    "value", ["\uff12\uff10\uff13\uff10-01-01T00:00:00Z", "2030-01-01T00:00:0\u0663Z"]
)
def test_non_ascii_digits_in_time_refused(value: str) -> None:
    """Regression: ``\\d`` and ``strptime`` accepted other scripts' digits."""
    with pytest.raises(FormatError):
        parse_time(value)


# -- the package does no I/O ----------------------------------------------------------------------


def test_documents_package_does_no_io() -> None:
    """Documents are parsed, verified and built from bytes in memory; reading and writing them
    is the caller's job. (Key files are the one exception left, in ``signing``, until they move
    out in a later issue.)"""
    io = re.compile(r"\bopen\(|\bimport (os|pathlib|socket|subprocess|shutil)\b|\bPath\(|\bos\.")
    package = Path(documents.__file__).parent
    strays = [
        f"{path.name}:{n}"
        for path in sorted(package.glob("*.py"))
        if path.name != "signing.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if io.search(line)
    ]
    assert not strays, f"I/O in the documents package: {strays}"
