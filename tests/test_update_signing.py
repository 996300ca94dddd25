"""UpdateSigning: the release role's threshold, signing, rotation and revocation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.errors import SignatureError
from blackhole_sync.release import Repository, UpdateSigning


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Repository, PrivateKey, list[PrivateKey]]:
    root = PrivateKey.generate()
    release = [PrivateKey.generate() for _ in range(3)]
    repo = Repository.init(
        tmp_path / "repo", root_keys=[root.public_key], root_threshold=1,
        release_keys=[k.public_key for k in release], release_threshold=2,
        index_key=root, sign_with=[root],
    )  # fmt: skip
    (tmp_path / "app").write_bytes(b"app")
    repo.build_release("1.0.0", [tmp_path / "app"])
    return repo, root, release


def test_threshold_counts_distinct_holders(
    setup: tuple[Repository, PrivateKey, list[PrivateKey]],
) -> None:
    repo, _, release = setup
    signing = UpdateSigning(repo)
    assert signing.required_signatures == 2
    assert {k.keyid for k in signing.trusted_keys} == {k.keyid for k in release}
    assert signing.sign_update("1.0.0", release[0]) is True
    assert signing.sign_update("1.0.0", release[0]) is False  # the same holder twice
    check = signing.verify_signatures("1.0.0")
    assert check.signed_by == (release[0].keyid,) and not check.valid
    signing.sign_update("1.0.0", release[2])
    assert signing.verify_signatures("1.0.0").valid
    with pytest.raises(SignatureError):
        signing.sign_update("1.0.0", PrivateKey.generate())  # not a release key


def test_rotation_and_revocation_make_new_roots(
    setup: tuple[Repository, PrivateKey, list[PrivateKey]],
) -> None:
    repo, root, release = setup
    signing = UpdateSigning(repo)
    newcomer = PrivateKey.generate()
    rotated = signing.rotate_signing_keys(
        [release[0].public_key, release[1].public_key, newcomer.public_key], sign_with=[root]
    )
    assert rotated.version == 2 and newcomer.keyid in rotated.roles["release"].keyids
    revoked = signing.revoke_key(release[1].public_key, "laptop stolen", sign_with=[root])
    assert revoked.version == 3 and release[1].keyid not in revoked.keys
    log = json.loads((repo.path / ".bhsync" / "revocations.json").read_text())
    assert log[-1]["keyid"] == release[1].keyid and log[-1]["reason"] == "laptop stolen"
    assert repo.verify().root.version == 3  # the chain 1 -> 2 -> 3 verifies as a node walks it
