"""The trusted state machine, attacked through an in-memory repository simulator.

Each test is named after the attack it stages (python-tuf style). On every refusal the trusted
state must be unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from repo_sim import REF, RepoSim, envelope_bytes, sign_bytes

from blackhole_sync.documents import (
    Envelope,
    Index,
    MetaFile,
    ReleaseManifest,
    Root,
    canonical_bytes,
)
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.documents.trust import TrustedState
from blackhole_sync.errors import (
    ExpiredError,
    FormatError,
    LengthOrHashMismatchError,
    RollbackError,
    SecurityError,
    SignatureError,
    UnsafePathError,
    VanishedReleaseError,
    WithdrawnReleaseError,
)


def state(sim: RepoSim, root: bytes | None = None) -> TrustedState:
    return TrustedState(sim.roots[1] if root is None else root, reference_time=REF)


@pytest.fixture
def sim() -> RepoSim:
    return RepoSim(keys={"root": 3, "release": 3}, thresholds={"root": 2, "release": 2})


# -- local root ---------------------------------------------------------------------------------


def test_local_root_corrupt_refused(sim: RepoSim) -> None:
    for bad in (b"", b"{", sim.root[:-1], sim.root.replace(b'"root"', b'"r00t"', 1)):
        with pytest.raises(FormatError):
            TrustedState(bad, reference_time=REF)


def test_local_root_unsigned_refused(sim: RepoSim) -> None:
    with pytest.raises(SignatureError):
        TrustedState(sim.make_root(version=1, signers=[]), reference_time=REF)


def test_local_root_below_threshold_refused(sim: RepoSim) -> None:
    with pytest.raises(SignatureError):
        TrustedState(sim.make_root(version=1, signers=sim.keys["root"][:1]), reference_time=REF)


def test_local_root_signed_by_foreign_key_refused(sim: RepoSim) -> None:
    foreign = [PrivateKey.generate(), PrivateKey.generate()]
    with pytest.raises(SignatureError):
        TrustedState(sim.make_root(version=1, signers=foreign), reference_time=REF)


def test_local_root_other_document_type_refused(sim: RepoSim) -> None:
    with pytest.raises(FormatError):
        TrustedState(sim.make_index(), reference_time=REF)


# -- root rotation --------------------------------------------------------------------------------


def test_root_rotation_signed_by_old_and_new_keys_accepted(sim: RepoSim) -> None:
    trusted = state(sim)
    new_root = sim.rotate("root", 3, threshold=2, sign_with="both")
    assert trusted.update_root(new_root).version == 2
    assert trusted.root_bytes == new_root


def test_root_rotation_signed_only_by_new_keys_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    with pytest.raises(SignatureError):
        trusted.update_root(sim.rotate("root", 3, threshold=2, sign_with="new"))
    assert trusted.root.version == 1


def test_root_rotation_signed_only_by_old_keys_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    with pytest.raises(SignatureError):
        trusted.update_root(sim.rotate("root", 3, threshold=2, sign_with="old"))
    assert trusted.root.version == 1


def test_root_rotation_below_old_threshold_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    old = sim.keys["root"]
    new = [PrivateKey.generate() for _ in range(3)]
    sim.keys["root"] = new
    data = sim.make_root(signers=[old[0], *new])  # one old key of the threshold's two
    with pytest.raises(SignatureError):
        trusted.update_root(data)


def test_root_version_skipping_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    with pytest.raises(RollbackError):
        trusted.update_root(sim.make_root(version=3))
    assert trusted.root.version == 1


def test_root_version_replay_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    trusted.update_root(sim.make_root())
    with pytest.raises(RollbackError):
        trusted.update_root(sim.roots[1])
    with pytest.raises(RollbackError):
        trusted.update_root(sim.roots[2])


def test_root_chain_walked_one_version_at_a_time(sim: RepoSim) -> None:
    trusted = state(sim)
    for _ in range(4):
        sim.rotate("root", 3, threshold=2)
    for version in range(2, 6):
        assert trusted.update_root(sim.roots[version]).version == version


def test_root_for_another_network_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    sim.network_id = "other-net"
    with pytest.raises(SecurityError):
        trusted.update_root(sim.make_root())


def test_expired_root_refused_before_index(sim: RepoSim) -> None:
    trusted = state(sim, sim.make_root(version=1, expires=REF - dt.timedelta(seconds=1)))
    with pytest.raises(ExpiredError):
        trusted.check_root_fresh()
    with pytest.raises(ExpiredError):
        trusted.update_index(sim.make_index())
    assert trusted.index is None


def test_expired_root_rotated_to_fresh_root_accepted(sim: RepoSim) -> None:
    trusted = state(sim, sim.make_root(version=1, expires=REF))
    trusted.update_root(sim.make_root())
    trusted.check_root_fresh()
    trusted.update_index(sim.make_index())


# -- index ----------------------------------------------------------------------------------------


def test_index_threshold_not_met_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    with pytest.raises(SignatureError):
        trusted.update_index(sim.make_index(signers=[]))


def test_index_signed_by_key_outside_role_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    with pytest.raises(SignatureError):
        trusted.update_index(sim.make_index(signers=sim.keys["release"]))
    with pytest.raises(SignatureError):
        trusted.update_index(sim.make_index(signers=[PrivateKey.generate()]))


def test_index_rollback_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    old = sim.make_index()
    trusted.update_index(sim.make_index())
    with pytest.raises(RollbackError):
        trusted.update_index(old)
    assert trusted.index is not None and trusted.index.version == 2


def test_index_equal_version_other_bytes_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    trusted.update_index(sim.make_index(version=5))
    sim.add_release("1.0.0")
    with pytest.raises(RollbackError):
        trusted.update_index(sim.make_index(version=5))
    assert trusted.index is not None and trusted.index.all_releases() == {}


def test_index_equal_version_identical_bytes_is_noop(sim: RepoSim) -> None:
    trusted = state(sim)
    data = sim.make_index()
    first = trusted.update_index(data)
    assert trusted.update_index(data) is first
    assert trusted.index_bytes == data


def test_index_expired_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    with pytest.raises(ExpiredError):
        trusted.update_index(sim.make_index(expires=REF))
    assert trusted.index is None


def test_index_equal_version_redelivered_after_expiry_refused(sim: RepoSim) -> None:
    data = sim.make_index(expires=REF + dt.timedelta(seconds=10))
    trusted = state(sim)
    trusted.update_index(data)
    later = TrustedState(sim.roots[1], reference_time=REF + dt.timedelta(seconds=10))
    later.load_trusted_index(data)
    with pytest.raises(ExpiredError):
        later.update_index(data)


def test_index_fast_forward_recovery_after_index_key_rotation(sim: RepoSim) -> None:
    trusted = state(sim)
    # The old index key is compromised and pushes the version to the maximum.
    trusted.update_index(sim.make_index(version=2**63 - 1))
    trusted.update_root(sim.rotate("index", 1))
    assert trusted.index is None  # the floor was dropped
    recovered = trusted.update_index(sim.make_index(version=3))
    assert recovered.version == 3


def test_index_key_rotation_old_index_key_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    old_index_keys = sim.keys["index"]
    trusted.update_index(sim.make_index())
    trusted.update_root(sim.rotate("index", 1))
    with pytest.raises(SignatureError):
        trusted.update_index(sim.make_index(signers=old_index_keys))


def test_index_floor_kept_when_other_roles_rotate(sim: RepoSim) -> None:
    trusted = state(sim)
    trusted.update_index(sim.make_index(version=10))
    trusted.update_root(sim.rotate("release", 3, threshold=2))
    with pytest.raises(RollbackError):
        trusted.update_index(sim.make_index(version=3))


def test_stored_index_under_rotated_keys_is_not_a_floor(sim: RepoSim) -> None:
    stored = sim.make_index(version=2**62)
    sim.rotate("index", 1)
    trusted = state(sim, sim.root)
    assert trusted.load_trusted_index(stored) is False
    trusted.update_index(sim.make_index(version=1))


def test_stored_index_is_rollback_floor(sim: RepoSim) -> None:
    stored = sim.make_index(version=7)
    trusted = state(sim)
    assert trusted.load_trusted_index(stored) is True
    with pytest.raises(RollbackError):
        trusted.update_index(sim.make_index(version=6))


def test_release_vanishing_from_newer_index_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    sim.add_release("1.0.0")
    trusted.update_index(sim.make_index())
    del sim.releases["stable"]["1.0.0"]
    with pytest.raises(VanishedReleaseError):
        trusted.update_index(sim.make_index())
    assert "1.0.0" in trusted.require_index().all_releases()


def test_release_moved_to_other_channel_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    sim.add_release("1.0.0")
    trusted.update_index(sim.make_index())
    sim.releases["beta"] = {"1.0.0": sim.releases["stable"].pop("1.0.0")}
    with pytest.raises(VanishedReleaseError):
        trusted.update_index(sim.make_index())


def test_release_manifest_hash_swapped_in_newer_index_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    sim.add_release("1.0.0")
    trusted.update_index(sim.make_index())
    sim.add_release("1.0.0", notes="evil twin")
    with pytest.raises(RollbackError):
        trusted.update_index(sim.make_index())


def test_release_withdrawn_from_newer_index_accepted(sim: RepoSim) -> None:
    trusted = state(sim)
    sim.add_release("1.0.0")
    sim.add_release("1.1.0")
    trusted.update_index(sim.make_index())
    sim.withdraw("1.0.0", "bad build")
    index = trusted.update_index(sim.make_index())
    assert index.all_withdrawn() == {"1.0.0": "bad build"}
    assert set(index.all_releases()) == {"1.1.0"}


def test_withdrawal_cannot_be_undone(sim: RepoSim) -> None:
    trusted = state(sim)
    manifest = sim.add_release("1.0.0")
    trusted.update_index(sim.make_index())
    sim.withdraw("1.0.0")
    trusted.update_index(sim.make_index())
    # Relisting the release, or just dropping the withdrawal entry, is refused.
    del sim.withdrawn["stable"]["1.0.0"]
    with pytest.raises(RollbackError):
        trusted.update_index(sim.make_index())
    sim.releases["stable"]["1.0.0"] = MetaFile.of(manifest)
    with pytest.raises(RollbackError):
        trusted.update_index(sim.make_index())
    assert "1.0.0" in trusted.require_index().all_withdrawn()


# -- release manifests ----------------------------------------------------------------------------


def indexed(sim: RepoSim, *versions: str) -> TrustedState:
    trusted = state(sim)
    for v in versions:
        sim.add_release(v)
    trusted.update_index(sim.make_index())
    return trusted


def test_manifest_listed_and_signed_accepted(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    manifest = trusted.update_manifest("1.0.0", sim.manifests["1.0.0"])
    assert manifest.version == "1.0.0"
    assert trusted.manifest_bytes("1.0.0") == sim.manifests["1.0.0"]


def test_manifest_before_any_index_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    with pytest.raises(RuntimeError):
        trusted.update_manifest("1.0.0", sim.make_manifest("1.0.0"))


def test_manifest_length_mismatch_against_index_refused(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    with pytest.raises(LengthOrHashMismatchError):
        trusted.update_manifest("1.0.0", sim.manifests["1.0.0"] + b" ")


def test_manifest_hash_mismatch_against_index_refused(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    data = sim.manifests["1.0.0"]
    swapped = data.replace(b"node-0.bin", b"node-9.bin")
    assert len(swapped) == len(data)
    with pytest.raises(LengthOrHashMismatchError):
        trusted.update_manifest("1.0.0", swapped)
    assert "1.0.0" not in trusted.manifests


def test_manifest_not_listed_in_index_refused(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    with pytest.raises(FormatError):
        trusted.update_manifest("2.0.0", sim.make_manifest("2.0.0"))


def test_manifest_below_release_threshold_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    data = sim.make_manifest("1.0.0", signers=sim.keys["release"][:1])
    sim.releases["stable"] = {"1.0.0": MetaFile.of(data)}
    trusted.update_index(sim.make_index())
    with pytest.raises(SignatureError):
        trusted.update_manifest("1.0.0", data)


def test_manifest_signed_by_index_key_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    data = sim.make_manifest("1.0.0", signers=sim.keys["index"] + sim.keys["root"])
    sim.releases["stable"] = {"1.0.0": MetaFile.of(data)}
    trusted.update_index(sim.make_index())
    with pytest.raises(SignatureError):
        trusted.update_manifest("1.0.0", data)


def test_manifest_listed_under_other_version_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    data = sim.make_manifest("1.0.0")
    sim.releases["stable"] = {"2.0.0": MetaFile.of(data)}
    trusted.update_index(sim.make_index())
    with pytest.raises(SecurityError):
        trusted.update_manifest("2.0.0", data)


def test_manifest_for_other_channel_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    data = sim.make_manifest("1.0.0", channel="beta")
    sim.releases["stable"] = {"1.0.0": MetaFile.of(data)}
    trusted.update_index(sim.make_index())
    with pytest.raises(SecurityError):
        trusted.update_manifest("1.0.0", data)


def test_manifest_for_withdrawn_release_refused(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    sim.withdraw("1.0.0", "CVE")
    trusted.update_index(sim.make_index())
    with pytest.raises(WithdrawnReleaseError, match="CVE"):
        trusted.update_manifest("1.0.0", sim.manifests["1.0.0"])


def test_manifests_dropped_after_release_key_rotation(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    trusted.update_manifest("1.0.0", sim.manifests["1.0.0"])
    trusted.update_root(sim.rotate("release", 3, threshold=2))
    assert trusted.manifests == {}
    with pytest.raises(SignatureError):  # the old release keys no longer count
        trusted.update_manifest("1.0.0", sim.manifests["1.0.0"])


def test_manifest_bad_signature_among_enough_good_ones_accepted(sim: RepoSim) -> None:
    trusted = state(sim)
    signed = sim.manifest_signed("1.0.0")
    keys = sim.keys["release"]
    body = canonical_bytes(signed)
    forged = keys[0].sign(b"something else")
    data = envelope_bytes(signed, [forged, keys[1].sign(body), keys[2].sign(body)])
    sim.releases["stable"] = {"1.0.0": MetaFile.of(data)}
    trusted.update_index(sim.make_index())
    assert trusted.update_manifest("1.0.0", data).version == "1.0.0"


def test_unknown_fields_are_signed_and_kept(sim: RepoSim) -> None:
    trusted = state(sim)
    signed = sim.index_signed(1, future_field={"nested": [1, "x"]})
    data = sign_bytes(signed, sim.keys["index"])
    index = trusted.update_index(data)
    assert index.extra == {"future_field": {"nested": [1, "x"]}}
    # Tampering with the unknown field breaks the signature: it is covered too.
    tampered = data.replace(b'"x"', b'"y"')
    trusted2 = state(sim)
    with pytest.raises(SignatureError):
        trusted2.update_index(tampered)


def test_unknown_hash_algorithm_in_index_refused(sim: RepoSim) -> None:
    trusted = state(sim)
    sim.add_release("1.0.0")
    signed = sim.index_signed(1)
    signed["channels"]["stable"]["releases"]["1.0.0"]["hashes"]["md5"] = "0" * 32
    with pytest.raises(FormatError, match="unknown hash algorithm"):
        trusted.update_index(sign_bytes(signed, sim.keys["index"]))


def test_index_with_reordered_whitespace_still_verifies(sim: RepoSim) -> None:
    """Signatures cover canonical bytes, so a pretty-printed copy verifies too."""
    trusted = state(sim)
    data = sim.make_index()
    pretty = json.dumps(json.loads(data), indent=2).encode()
    assert trusted.update_index(pretty).version == 1
    envelope = Envelope.from_bytes(pretty)
    assert envelope.signed_bytes == Envelope.from_bytes(data).signed_bytes


# -- signatures before models (python-tuf's order) -----------------------------------------------
#
# A document that the trusted keys did not sign is refused as unsigned whatever its body holds:
# its fields are never read into a model, so no model rule (and no bug in one) can be reached
# from unauthenticated bytes. Each body below would fail its model; the refusal must still be
# the signature's.


def forbid_models(monkeypatch: pytest.MonkeyPatch, *models: type) -> None:
    """Make building any of ``models`` fail the test."""

    def built(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a document model was built from unauthenticated bytes")

    for model in models:
        monkeypatch.setattr(model, "from_dict", built)


def foreign_keys(n: int = 2) -> list[PrivateKey]:
    return [PrivateKey.generate() for _ in range(n)]


def test_forged_index_with_a_malformed_body_is_refused_as_unsigned(
    sim: RepoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = state(sim)
    signed = sim.index_signed(1, channels={"Not A Channel": {"releases": "x"}})
    with pytest.raises(FormatError):
        Index.from_dict(signed)  # the body alone: the model refuses it
    forbid_models(monkeypatch, Index)
    with pytest.raises(SignatureError):
        trusted.update_index(sign_bytes(signed, foreign_keys()))
    assert trusted.index is None


def test_forged_index_claiming_the_highest_version_is_refused_before_its_version_is_read(
    sim: RepoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = state(sim)
    trusted.update_index(sim.make_index(version=5))
    forbid_models(monkeypatch, Index)
    for version in (2**63 - 1, 5, 1):  # newer (a floor raised for good), equal, older
        with pytest.raises(SignatureError):
            trusted.update_index(sign_bytes(sim.index_signed(version), foreign_keys()))
    assert trusted.require_index().version == 5


def test_stored_index_with_a_malformed_body_and_a_forged_signature_is_no_floor(
    sim: RepoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = state(sim)
    forbid_models(monkeypatch, Index)
    signed = sim.index_signed(7)
    signed["expires"] = "never"
    stored = sign_bytes(signed, foreign_keys())
    assert trusted.load_trusted_index(stored) is False
    assert trusted.index is None


def test_forged_root_rotation_with_a_malformed_body_is_refused_as_unsigned(
    sim: RepoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = state(sim)
    signed = sim.root_signed(2)
    signed["roles"]["mint"] = {"keyids": [], "threshold": 0}
    with pytest.raises(FormatError):
        Root.from_dict(signed)
    forbid_models(monkeypatch, Root)
    with pytest.raises(SignatureError):
        trusted.update_root(sign_bytes(signed, foreign_keys()))
    assert trusted.root.version == 1


def test_forged_root_skipping_versions_is_refused_as_unsigned_not_as_a_rollback(
    sim: RepoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = state(sim)
    forbid_models(monkeypatch, Root)
    with pytest.raises(SignatureError):
        trusted.update_root(sim.make_root(version=9, signers=foreign_keys()))
    assert trusted.root.version == 1


def test_manifest_with_an_escaping_artifact_path_signed_by_the_index_key_is_refused_as_unsigned(
    sim: RepoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = state(sim)
    signed = sim.manifest_signed("1.0.0")
    signed["artifacts"][0]["name"] = "../../etc/passwd"
    with pytest.raises(UnsafePathError):
        ReleaseManifest.from_dict(signed)  # what a model-first verifier would have raised
    data = sign_bytes(signed, sim.keys["index"])  # the online key, not the release keys
    sim.releases["stable"] = {"1.0.0": MetaFile.of(data)}  # and listed by the index key
    trusted.update_index(sim.make_index())
    forbid_models(monkeypatch, ReleaseManifest)
    with pytest.raises(SignatureError):
        trusted.update_manifest("1.0.0", data)
    assert "1.0.0" not in trusted.manifests


def test_manifest_differing_from_its_index_entry_is_refused_before_it_is_parsed(
    sim: RepoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = indexed(sim, "1.0.0")

    def parsed(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("bytes the index does not list were parsed")

    monkeypatch.setattr(Envelope, "from_bytes", parsed)
    with pytest.raises(LengthOrHashMismatchError):
        trusted.update_manifest("1.0.0", b"{" * len(sim.manifests["1.0.0"]))
    with pytest.raises(LengthOrHashMismatchError):
        trusted.update_manifest("1.0.0", b"{")


# -- what may be fetched: the index entry, or the refusal ------------------------------------------


def test_listed_manifest_is_the_index_entry_of_exactly_those_bytes(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    listed = trusted.listed_manifest("1.0.0")
    assert listed == MetaFile.of(sim.manifests["1.0.0"])
    assert listed.matches(sim.manifests["1.0.0"])


def test_listed_manifest_of_a_withdrawn_release_is_refused_with_its_reason(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    sim.withdraw("1.0.0", "CVE-2030-0001")
    trusted.update_index(sim.make_index())
    with pytest.raises(WithdrawnReleaseError, match="CVE-2030-0001"):
        trusted.listed_manifest("1.0.0")


def test_listed_manifest_of_an_unlisted_release_is_refused(sim: RepoSim) -> None:
    trusted = indexed(sim, "1.0.0")
    with pytest.raises(FormatError, match="not listed"):
        trusted.listed_manifest("9.9.9")


def test_listed_manifest_before_any_index_is_caller_misuse(sim: RepoSim) -> None:
    with pytest.raises(RuntimeError):
        state(sim).listed_manifest("1.0.0")


def test_stored_manifest_of_a_withdrawn_release_is_restored_on_its_signatures(
    sim: RepoSim,
) -> None:
    trusted = indexed(sim, "1.0.0")
    sim.withdraw("1.0.0")
    trusted.update_index(sim.make_index())
    stored = sim.manifests["1.0.0"]
    assert trusted.update_manifest("1.0.0", stored, allow_withdrawn=True).version == "1.0.0"
    forged = sign_bytes(sim.manifest_signed("1.0.0", notes="forged"), foreign_keys())
    again = indexed(sim)
    with pytest.raises(SignatureError):
        again.update_manifest("1.0.0", forged, allow_withdrawn=True)
