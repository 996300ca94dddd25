"""The publisher: repository life cycle, threshold signing, refusals, rotation, deltas, encryption.

Every refusal test snapshots the repository directory before and after: nothing is written.
Every flow ends with :func:`assert_node_accepts`, a fresh node's view of the served files.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from blackhole_sync.codecs.crypto import decrypt_file
from blackhole_sync.documents import Command, Envelope, ReleaseManifest
from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.documents.trust import TrustedState
from blackhole_sync.errors import (
    ConfigurationError,
    ConflictError,
    DecryptionError,
    FormatError,
    NoSuchVersionError,
    SandboxError,
    SignatureError,
    UnsafePathError,
)
from blackhole_sync.release import Repository, UpdateServer

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class Keys:
    def __init__(self) -> None:
        self.root = [PrivateKey.generate() for _ in range(2)]
        self.release = [PrivateKey.generate() for _ in range(3)]
        self.index = PrivateKey.generate()


@pytest.fixture
def keys() -> Keys:
    return Keys()


def make_repo(path: Path, keys: Keys, **more: Any) -> Repository:
    options: dict[str, Any] = {
        "root_keys": [k.public_key for k in keys.root],
        "root_threshold": 2,
        "release_keys": [k.public_key for k in keys.release],
        "release_threshold": 2,
        "index_key": keys.index.public_key,
        "sign_with": keys.root,
        "now": NOW,
        **more,
    }
    return Repository.init(path, **options)


@pytest.fixture
def repo(tmp_path: Path, keys: Keys) -> Repository:
    return make_repo(tmp_path / "repo", keys)


def snapshot(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not path.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            p = Path(dirpath, d)
            out[str(p.relative_to(path)) + "/"] = p.stat().st_mode
        for f in filenames:
            p = Path(dirpath, f)
            out[str(p.relative_to(path))] = (
                p.stat().st_mode,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    return out


def refused(
    repo_path: Path, exc: type[BaseException], fn: Callable[[], Any], match: str | None = None
) -> None:
    before = snapshot(repo_path)
    with pytest.raises(exc, match=match):
        fn()
    assert snapshot(repo_path) == before, "a refused operation wrote something"


def assert_node_accepts(repo_path: Path, at: dt.datetime = NOW) -> TrustedState:
    """A fresh node: trust 1.root.json, walk N.root.json, then the index and every manifest."""
    state = TrustedState((repo_path / "1.root.json").read_bytes(), reference_time=at)
    n = 2
    while (repo_path / f"{n}.root.json").exists():
        state.update_root((repo_path / f"{n}.root.json").read_bytes())
        n += 1
    assert state.root_bytes == (repo_path / "root.json").read_bytes()
    state.check_root_fresh()
    if not (repo_path / "index.json").exists():
        return state
    index = state.update_index((repo_path / "index.json").read_bytes())
    for version in index.all_releases():
        manifest = state.update_manifest(
            version, (repo_path / "manifests" / f"{version}.json").read_bytes()
        )
        for art in manifest.artifacts:
            blob = (repo_path / "blobs" / art.blob.sha256).read_bytes()
            assert art.blob.matches(blob)
        for d in manifest.deltas:
            assert d.patch.matches((repo_path / "blobs" / d.patch.sha256).read_bytes())
    return state


def release(
    repo: Repository, keys: Keys, version: str, files: list[Path], **options: Any
) -> ReleaseManifest:
    manifest = repo.build_release(version, files, now=NOW, **options)
    repo.sign_release(version, keys.release[0])
    repo.sign_release(version, keys.release[2])
    repo.publish_release(version, keys.index, now=NOW)
    return manifest


def write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


# -- init / open ------------------------------------------------------------------------------


def test_init_writes_the_served_layout_and_private_config(tmp_path: Path, keys: Keys) -> None:
    repo = make_repo(tmp_path / "repo", keys, index_key=keys.index)
    names = sorted(os.listdir(repo.path))
    assert names == [".bhsync", "1.root.json", "blobs", "index.json", "manifests", "root.json"]
    assert (repo.path / "1.root.json").read_bytes() == (repo.path / "root.json").read_bytes()
    assert (repo.private_dir / "config.json").stat().st_mode & 0o777 == 0o600
    state = assert_node_accepts(repo.path)
    assert state.index is not None and state.index.version == 1
    assert dict(state.index.channels["stable"].releases) == {}
    again = Repository.open(repo.path)
    assert again.config.index_expires_seconds == 86_400 and again.config.root_expires_days == 365


def test_init_without_the_index_private_key_defers_the_index(repo: Repository, keys: Keys) -> None:
    assert not repo.index_path.exists()
    index = repo.refresh(keys.index, now=NOW)
    assert index.version == 1
    assert_node_accepts(repo.path)


def test_init_below_the_root_threshold_writes_nothing(tmp_path: Path, keys: Keys) -> None:
    target = tmp_path / "repo"
    refused(target, SignatureError, lambda: make_repo(target, keys, sign_with=keys.root[:1]))
    assert not target.exists()


def test_init_refuses_an_existing_repository(repo: Repository, keys: Keys) -> None:
    refused(repo.path, ConflictError, lambda: make_repo(repo.path, keys))


def test_init_refuses_impossible_thresholds(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(ValueError, match="threshold"):
        make_repo(tmp_path / "r", keys, release_threshold=4)
    assert not (tmp_path / "r").exists()


def test_open_refuses_a_plain_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Repository.open(tmp_path)


# -- the 2-of-3 release flow --------------------------------------------------------------------


def test_full_flow_two_of_three_release_keys(repo: Repository, keys: Keys, tmp_path: Path) -> None:
    app = write(tmp_path / "src" / "app", os.urandom(50_000), 0o755)
    conf = write(tmp_path / "src" / "app.conf", b"port = 1\n", 0o600)
    manifest = repo.build_release("1.0.0", [app, conf], now=NOW)
    assert [(a.name, a.mode) for a in manifest.artifacts] == [("app", 0o755), ("app.conf", 0o600)]
    draft = Envelope.from_bytes((repo.draft_dir("1.0.0") / "manifest.json").read_bytes())
    assert draft.signatures == ()
    assert repo.list_releases()[0]["state"] == "draft"

    assert repo.sign_release("1.0.0", keys.release[0]) is True
    assert repo.sign_release("1.0.0", keys.release[0]) is False  # signing twice: no-op
    # Below the threshold: refused, nothing written.
    refused(
        repo.path,
        SignatureError,
        lambda: repo.publish_release("1.0.0", keys.index, now=NOW),
        "1 of the required 2",
    )
    assert repo.sign_release("1.0.0", keys.release[1]) is True
    info = repo.show_release("1.0.0")
    assert info["signatures"] == 2 and info["threshold"] == 2 and info["state"] == "draft"

    index = repo.publish_release("1.0.0", keys.index, now=NOW)
    assert index.version == 1 and "1.0.0" in index.releases("stable")
    assert not repo.draft_dir("1.0.0").exists()
    for art in manifest.artifacts:
        assert (repo.blobs_dir / art.sha256).is_file()
    state = assert_node_accepts(repo.path)
    assert state.manifest("1.0.0") == manifest

    listed = repo.list_releases()
    assert listed == [
        {
            "version": "1.0.0",
            "channel": "stable",
            "type": "binary",
            "critical": False,
            "state": "published",
            "signatures": 2,
            "threshold": 2,
        }
    ]
    shown = repo.show_release("1.0.0")
    assert shown["manifest_sha256"] == index.releases("stable")["1.0.0"].sha256

    refused(repo.path, ConflictError, lambda: repo.publish_release("1.0.0", keys.index, now=NOW))
    refused(repo.path, ConflictError, lambda: repo.sign_release("1.0.0", keys.release[2]))
    refused(repo.path, ConflictError, lambda: repo.build_release("1.0.0", [app], now=NOW))

    second = release(repo, keys, "1.1.0", [app], channel="beta")
    assert second.channel == "beta"
    state = assert_node_accepts(repo.path)
    assert state.index is not None and state.index.version == 2
    assert "1.1.0" in state.index.releases("beta")


def test_a_key_outside_the_release_role_cannot_sign(
    repo: Repository, keys: Keys, tmp_path: Path
) -> None:
    app = write(tmp_path / "app", b"v1")
    repo.build_release("1.0.0", [app], now=NOW)
    for stranger in (PrivateKey.generate(), keys.root[0], keys.index):
        refused(repo.path, SignatureError, functools.partial(repo.sign_release, "1.0.0", stranger))


def test_signatures_from_outside_the_role_do_not_count(
    repo: Repository, keys: Keys, tmp_path: Path
) -> None:
    """A draft edited to carry a stranger's signature still falls short of the threshold."""
    app = write(tmp_path / "app", b"v1")
    repo.build_release("1.0.0", [app], now=NOW)
    repo.sign_release("1.0.0", keys.release[0])
    path = repo.draft_dir("1.0.0") / "manifest.json"
    env = Envelope.from_bytes(path.read_bytes())
    path.write_bytes(env.add_signature(PrivateKey.generate()).raw)
    refused(repo.path, SignatureError, lambda: repo.publish_release("1.0.0", keys.index, now=NOW))


def test_publish_with_a_key_outside_the_index_role_writes_nothing(
    repo: Repository, keys: Keys, tmp_path: Path
) -> None:
    app = write(tmp_path / "app", b"v1")
    repo.build_release("1.0.0", [app], now=NOW)
    repo.sign_release("1.0.0", keys.release[0])
    repo.sign_release("1.0.0", keys.release[1])
    refused(
        repo.path,
        SignatureError,
        lambda: repo.publish_release("1.0.0", keys.release[0], now=NOW),
        "index key",
    )
    refused(repo.path, SignatureError, lambda: repo.refresh(PrivateKey.generate(), now=NOW))


def test_unknown_versions(repo: Repository, keys: Keys) -> None:
    refused(repo.path, NoSuchVersionError, lambda: repo.sign_release("9.9.9", keys.release[0]))
    refused(repo.path, NoSuchVersionError, lambda: repo.publish_release("9.9.9", keys.index))
    refused(repo.path, NoSuchVersionError, lambda: repo.show_release("9.9.9"))
    refused(repo.path, NoSuchVersionError, lambda: repo.yank("9.9.9", keys.index))


# -- build refusals ---------------------------------------------------------------------------------


def test_build_refusals_write_nothing(repo: Repository, keys: Keys, tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "app", b"one")
    b = write(tmp_path / "b" / "app", b"two")
    refused(repo.path, ValueError, lambda: repo.build_release("1.0.0", [a, b]), "two artifacts")
    for bad in ("v1.0.0", "1.0", "1.0.0+build", "01.0.0"):
        refused(repo.path, FormatError, functools.partial(repo.build_release, bad, [a]))
    suid = write(tmp_path / "suid", b"x", 0o4755)
    refused(repo.path, UnsafePathError, lambda: repo.build_release("1.0.0", [suid]), "setuid")
    refused(repo.path, ValueError, lambda: repo.build_release("1.0.0", [tmp_path / "missing"]))
    refused(repo.path, ValueError, lambda: repo.build_release("1.0.0", [a], update_type="firmware"))
    refused(repo.path, ValueError, lambda: repo.build_release("1.0.0", [a], channel="Bad Name"))
    refused(repo.path, ValueError, lambda: repo.build_release("1.0.0", [a], unpack=[b]))
    refused(repo.path, ValueError, lambda: repo.build_release("1.0.0", [a], unpack=[a]), "archive")
    refused(
        repo.path,
        NoSuchVersionError,
        lambda: repo.build_release("1.0.0", [a], delta_from=["0.9.0"]),
    )
    repo.build_release("1.0.0", [a], now=NOW)
    refused(repo.path, ConflictError, lambda: repo.build_release("1.0.0", [b]))


def test_directory_artifact_is_packed_deterministically_and_unpacked(
    repo: Repository, tmp_path: Path
) -> None:
    tree = tmp_path / "app"
    write(tree / "bin" / "run", b"#!/bin/sh\necho ok\n", 0o755)
    write(tree / "share" / "data.txt", b"data")
    manifest = repo.build_release("1.0.0", [tree], now=NOW)
    (art,) = manifest.artifacts
    assert art.name == "app.tar" and art.unpack is not None and art.unpack.format == "tar"
    members = {m.path: m for m in art.unpack.members}
    assert members["bin/run"].mode == 0o755 and members["bin/run"].type == "file"
    assert members["bin"].type == "dir"
    assert members["share/data.txt"].sha256 == hashlib.sha256(b"data").hexdigest()
    # Same tree, same bytes: deltas between directory releases stay small.
    other = Repository.open(repo.path)
    again = other.build_release("1.0.1", [tree], now=NOW)
    assert again.artifacts[0].sha256 == art.sha256


def test_directory_with_a_symlink_is_refused(repo: Repository, tmp_path: Path) -> None:
    tree = tmp_path / "app"
    write(tree / "a", b"x")
    (tree / "link").symlink_to("a")
    refused(repo.path, UnsafePathError, lambda: repo.build_release("1.0.0", [tree]))


def _tar(path: Path, members: dict[str, bytes], *, symlink: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo("evil")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
    return path


def test_unpack_archive_lists_members_and_refuses_links(repo: Repository, tmp_path: Path) -> None:
    good = _tar(tmp_path / "bundle.tar.gz", {"lib/a.so": b"a" * 10, "./b": b"b"})
    manifest = repo.build_release("1.0.0", [good], unpack=[good], now=NOW)
    unpack = manifest.artifacts[0].unpack
    assert unpack is not None and unpack.format == "tar.gz"
    assert sorted(m.path for m in unpack.members) == ["b", "lib/a.so"]
    bad = _tar(tmp_path / "bad" / "evil.tar.gz", {"x": b"x"}, symlink=True)
    refused(repo.path, UnsafePathError, lambda: repo.build_release("2.0.0", [bad], unpack=[bad]))
    escape = _tar(tmp_path / "esc" / "esc.tar.gz", {"../up": b"x"})
    refused(
        repo.path, UnsafePathError, lambda: repo.build_release("2.0.0", [escape], unpack=[escape])
    )


# -- deltas ---------------------------------------------------------------------------------------


def _mutate(data: bytes, seed: int) -> bytes:
    out = bytearray(data)
    for i in range(5):
        out[(seed * 7919 + i * 104_729) % len(out)] ^= 0xFF
    return bytes(out)


def test_delta_from_auto_picks_the_three_most_recent(
    repo: Repository, keys: Keys, tmp_path: Path
) -> None:
    base = os.urandom(120_000)
    app = tmp_path / "app"
    unchanged = write(tmp_path / "static.dat", os.urandom(4000))
    for n, version in enumerate(["1.0.0", "1.1.0", "1.2.0", "1.3.0"]):
        write(app, _mutate(base, n))
        release(repo, keys, version, [app, unchanged], delta_from="auto" if n else None)
    # A release in another channel, and a withdrawn one, are not delta sources.
    write(app, _mutate(base, 9))
    release(repo, keys, "1.3.5", [app, unchanged], channel="beta")
    repo.yank("1.3.0", keys.index, "broken", now=NOW)

    write(app, _mutate(base, 10))
    manifest = release(repo, keys, "1.4.0", [app, unchanged], delta_from="auto")
    froms = sorted(d.from_version for d in manifest.deltas)
    assert froms == ["1.0.0", "1.1.0", "1.2.0"]
    for d in manifest.deltas:
        assert d.artifact == "app" and d.member is None  # the unchanged file needs none
        assert d.patch.length < 0.8 * manifest.artifact("app").length
        assert d.output_length == manifest.artifact("app").length
        old = repo.show_release(d.from_version)["manifest"]
        assert (
            d.source.sha256
            == next(a for a in old["artifacts"] if a["name"] == "app")["hashes"]["sha256"]
        )
    assert_node_accepts(repo.path)


def test_explicit_delta_from_and_no_delta_when_it_does_not_pay(
    repo: Repository, keys: Keys, tmp_path: Path
) -> None:
    app = write(tmp_path / "app", os.urandom(60_000))
    release(repo, keys, "1.0.0", [app])
    write(app, os.urandom(60_000))  # unrelated bytes: a patch would not be smaller
    manifest = release(repo, keys, "1.1.0", [app], delta_from=["1.0.0"])
    assert manifest.deltas == ()
    with pytest.raises(ValueError, match="not below"):
        repo.build_release("0.9.0", [app], delta_from=["1.0.0"])


def test_member_deltas_for_unpacked_archives(repo: Repository, keys: Keys, tmp_path: Path) -> None:
    big = os.urandom(80_000)
    same = os.urandom(5000)
    tree = tmp_path / "app"
    write(tree / "bin" / "node", big, 0o755)
    write(tree / "etc" / "same", same)
    release(repo, keys, "1.0.0", [tree])
    write(tree / "bin" / "node", _mutate(big, 3), 0o755)
    write(tree / "etc" / "new", b"fresh")
    manifest = release(repo, keys, "1.1.0", [tree], delta_from="auto")
    assert [(d.artifact, d.member, d.from_version, d.codec) for d in manifest.deltas] == [
        ("app.tar", "bin/node", "1.0.0", manifest.deltas[0].codec),
        ("app.tar", "etc/new", "1.0.0", "identity"),  # a new member ships whole
    ]
    assert manifest.deltas[0].codec != "identity"
    d, new = manifest.deltas
    assert new.patch.sha256 == hashlib.sha256(b"fresh").hexdigest()
    unpack = manifest.artifacts[0].unpack
    assert unpack is not None
    node_member = next(m for m in unpack.members if m.path == "bin/node")
    assert d.output_length == node_member.length
    assert d.source.sha256 == hashlib.sha256(big).hexdigest()
    assert_node_accepts(repo.path)


# -- encryption -------------------------------------------------------------------------------------


def test_encrypted_release_round_trip(repo: Repository, keys: Keys, tmp_path: Path) -> None:
    node, outsider = PrivateKey.generate(), PrivateKey.generate()
    data = os.urandom(100_000)
    app = write(tmp_path / "app", data, 0o755)
    release(repo, keys, "1.0.0", [write(tmp_path / "old" / "app", _mutate(data, 1))])
    manifest = release(repo, keys, "1.1.0", [app], encrypt_to=[node.public_key], delta_from="auto")
    (art,) = manifest.artifacts
    assert manifest.deltas == ()  # no deltas for encrypted artifacts
    assert art.encryption is not None and art.sha256 == hashlib.sha256(data).hexdigest()
    blob = repo.blobs_dir / art.encryption.ciphertext.sha256
    assert blob.is_file() and not (repo.blobs_dir / art.sha256).exists()
    assert data[:64] not in blob.read_bytes()
    assert_node_accepts(repo.path)
    decrypt_file(blob, tmp_path / "plain", art, node)
    assert (tmp_path / "plain").read_bytes() == data
    with pytest.raises(DecryptionError, match="not one of them"):
        decrypt_file(blob, tmp_path / "nope", art, outsider)
    assert not (tmp_path / "nope").exists()


# -- rotation -------------------------------------------------------------------------------------


def test_rotate_keeps_unchanged_roles(repo: Repository, keys: Keys) -> None:
    old = repo.root()
    new_release = [PrivateKey.generate() for _ in range(2)]
    root = repo.rotate(
        sign_with=keys.root,
        release_keys=[k.public_key for k in new_release],
        release_threshold=1,
        now=NOW,
    )
    assert root.version == 2
    assert root.roles["root"] == old.roles["root"] and root.roles["index"] == old.roles["index"]
    assert set(root.roles["release"].keyids) == {k.keyid for k in new_release}
    assert root.roles["release"].threshold == 1
    assert not any(k.keyid in root.keys for k in keys.release)  # unused keys are dropped
    assert (repo.path / "2.root.json").read_bytes() == (repo.path / "root.json").read_bytes()
    assert_node_accepts(repo.path)


def test_rotate_needs_old_and_new_thresholds(repo: Repository, keys: Keys) -> None:
    new_root = [PrivateKey.generate() for _ in range(2)]
    publics = [k.public_key for k in new_root]
    # The new keys alone (old threshold not met): nothing written.
    refused(
        repo.path,
        SignatureError,
        lambda: repo.rotate(sign_with=new_root, root_keys=publics, root_threshold=2, now=NOW),
    )
    # The old keys alone (new threshold not met): nothing written.
    refused(
        repo.path,
        SignatureError,
        lambda: repo.rotate(sign_with=keys.root, root_keys=publics, root_threshold=2, now=NOW),
    )
    refused(repo.path, SignatureError, lambda: repo.rotate(sign_with=keys.root[:1], now=NOW))
    repo.rotate(sign_with=[*keys.root, *new_root], root_keys=publics, root_threshold=2, now=NOW)
    state = assert_node_accepts(repo.path)
    assert set(state.root.roles["root"].keyids) == {k.keyid for k in new_root}
    # The next rotation is signed by the new root keys only.
    repo.rotate(sign_with=new_root, now=NOW)
    assert assert_node_accepts(repo.path).root.version == 3


def test_revocation(repo: Repository, keys: Keys, tmp_path: Path) -> None:
    app = write(tmp_path / "app", b"v1")
    repo.build_release("1.0.0", [app], now=NOW)
    repo.sign_release("1.0.0", keys.release[0])
    repo.sign_release("1.0.0", keys.release[1])
    stolen = keys.release[1].keyid
    root = repo.rotate(sign_with=keys.root, revoke=[stolen[:12]], now=NOW)
    assert stolen not in root.keys and stolen not in root.roles["release"].keyids
    assert root.roles["release"].threshold == 2
    # The revoked key's signature no longer counts, and it cannot sign again.
    refused(repo.path, SignatureError, lambda: repo.publish_release("1.0.0", keys.index, now=NOW))
    refused(repo.path, SignatureError, lambda: repo.sign_release("1.0.0", keys.release[1]))
    repo.sign_release("1.0.0", keys.release[2])
    repo.publish_release("1.0.0", keys.index, now=NOW)
    assert_node_accepts(repo.path)
    # Revoking another release key would leave 1 key for threshold 2: refused.
    refused(
        repo.path,
        SignatureError,
        lambda: repo.rotate(sign_with=keys.root, revoke=[keys.release[0].keyid], now=NOW),
        "threshold",
    )
    refused(repo.path, ValueError, lambda: repo.rotate(sign_with=keys.root, revoke=["00" * 32]))


def test_index_key_rotation_and_refresh(repo: Repository, keys: Keys, tmp_path: Path) -> None:
    release(repo, keys, "1.0.0", [write(tmp_path / "app", b"v1")])
    new_index = PrivateKey.generate()
    repo.rotate(sign_with=keys.root, index_key=new_index.public_key, now=NOW)
    # The served index is still signed by the old key: a node refuses it until refreshed.
    with pytest.raises(SignatureError):
        assert_node_accepts(repo.path)
    refused(repo.path, SignatureError, lambda: repo.refresh(keys.index, now=NOW))
    index = repo.refresh(new_index, now=NOW)
    assert index.version == 2 and "1.0.0" in index.releases("stable")
    assert_node_accepts(repo.path)
    # With the new index key in sign_with, rotation re-signs the index at once.
    newest = PrivateKey.generate()
    repo.rotate(sign_with=[*keys.root, newest], index_key=newest.public_key, now=NOW)
    assert assert_node_accepts(repo.path).root.version == 3


def test_refresh_and_expiry(repo: Repository, keys: Keys, tmp_path: Path) -> None:
    release(repo, keys, "1.0.0", [write(tmp_path / "app", b"v1")])
    later = NOW + dt.timedelta(days=3)
    with pytest.raises(Exception, match="expired"):
        assert_node_accepts(repo.path, at=later)
    index = repo.refresh(keys.index, now=later)
    assert index.version == 2 and index.expires == later + dt.timedelta(days=1)
    assert_node_accepts(repo.path, at=later)


def test_yank(repo: Repository, keys: Keys, tmp_path: Path) -> None:
    manifest = release(repo, keys, "1.0.0", [write(tmp_path / "app", b"v1")])
    node = assert_node_accepts(repo.path)
    index = repo.yank("1.0.0", keys.index, "regression", now=NOW)
    assert "1.0.0" not in index.releases("stable")
    assert index.channels["stable"].withdrawn == {"1.0.0": "regression"}
    assert (repo.blobs_dir / manifest.artifacts[0].sha256).is_file()  # files stay
    node.update_index(repo.index_path.read_bytes())  # the node that saw it accepts the withdrawal
    assert repo.list_releases()[0]["state"] == "withdrawn"
    refused(repo.path, ConflictError, lambda: repo.yank("1.0.0", keys.index, now=NOW))
    refused(repo.path, ConflictError, lambda: repo.sign_release("1.0.0", keys.release[1]))
    assert_node_accepts(repo.path)


# -- sandbox step and the UpdateServer facade ----------------------------------------------------------


def test_sandbox_runs_on_a_scratch_tree(repo: Repository, tmp_path: Path) -> None:
    app = write(tmp_path / "app", b"#!/bin/sh\n", 0o755)
    seen: list[tuple[list[str], str]] = []

    def sandbox(tree: Path, command: Command) -> None:
        seen.append((sorted(os.listdir(tree)), command.argv[0]))
        assert (tree / "app").stat().st_mode & 0o777 == 0o755

    repo.build_release(
        "1.0.0",
        [app],
        self_test=Command(("self-test",)),
        health=Command(("health",)),
        sandbox=sandbox,
        now=NOW,
    )
    assert seen == [(["app"], "self-test"), (["app"], "health")]

    def failing(tree: Path, command: Command) -> None:
        raise SandboxError("self-test exited 1")

    refused(
        repo.path,
        SandboxError,
        lambda: repo.build_release("1.1.0", [app], self_test=Command(("t",)), sandbox=failing),
    )


@pytest.mark.anyio
async def test_update_server_async_build_and_publish(
    repo: Repository, keys: Keys, tmp_path: Path
) -> None:
    tree = tmp_path / "app"
    write(tree / "bin" / "run", b"run", 0o755)
    calls: list[Path] = []

    async def sandbox(scratch: Path, command: Command) -> None:
        calls.append(scratch)
        assert (scratch / "bin" / "run").read_bytes() == b"run"

    class Recorder:
        name = "recorder"
        capabilities = frozenset({"publish", "announce"})

        def __init__(self) -> None:
            self.published: list[str] = []
            self.announced: list[bytes] = []

        async def publish(self, path: Path, *, sha256: str) -> list[Any]:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
            self.published.append(sha256)
            return []

        async def announce(self, kind: str, payload: bytes) -> None:
            assert kind == "index"
            self.announced.append(payload)

    transport = Recorder()
    server = UpdateServer(repo, transports=[transport], sandbox=sandbox)
    manifest = await server.build_release("1.0.0", [tree], health=Command(("h",)), now=NOW)
    assert len(calls) == 1 and not calls[0].exists()  # the scratch tree is gone
    assert server.sign_update("1.0.0", keys.release[0])
    with pytest.raises(SignatureError):
        await server.publish_update("1.0.0", keys.index, now=NOW)
    server.sign_update("1.0.0", keys.release[1])
    assert server.verify_signatures("1.0.0")["signatures"] == 2
    assert await server.validate_update("1.0.0")
    await server.publish_update("1.0.0", keys.index, now=NOW)
    assert transport.published == [manifest.artifacts[0].sha256]
    assert transport.announced == [repo.index_path.read_bytes()]
    assert server.blob_store.verify(manifest.artifacts[0].blob)
    assert_node_accepts(repo.path)
