"""The release engineer's day, through the real command line: keys held by separate people.

Each holder is a directory of their own ("their machine") that holds only their key; what
travels between them is a copy of the repository (for a root draft) or a bundle file (for a
release). Nobody holds two keys and nobody edits JSON. The one-shot forms keep their contract
(below the threshold: nothing written, exit 3). Every refusal is checked to write nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import BIN, ENV, Result, bhs, bhs_json, init_node, write_artifact

from blackhole_sync.codecs import load_private_key
from blackhole_sync.documents import Envelope
from blackhole_sync.testing import run as run_process

PASSPHRASE_ENV = "BLACKHOLE_SYNC_KEY_PASSPHRASE"


def run(
    *args: str | os.PathLike[str], expect: int | None = 0, env: Mapping[str, str] | None = None
) -> Result:
    """``blackhole-sync ARGS`` with extra environment; the same checks as ``bhs``."""
    argv = tuple(str(a) for a in args)
    proc = run_process([BIN, *argv], env={**ENV, **(env or {})}, timeout=120)
    result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, str(result)
    if expect is not None:
        assert proc.returncode == expect, str(result)
    if proc.returncode != 0:
        assert proc.stderr.strip().splitlines()[-1].startswith("blackhole-sync:"), str(result)
    return result


def installs(node: Path, version: str) -> None:
    """``node update`` installs ``version`` (checked on disk: the ``current`` link)."""
    bhs("node", "update", node)
    assert (node / "current").resolve().name == version


def files(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (what a refusal must leave unchanged)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "lock" and p.name != "tmp.lock"
    }


class Holder:
    """A person with one key on their own machine (a directory nobody else writes)."""

    def __init__(self, base: Path, name: str, *, encrypt: str | None = None) -> None:
        self.home = base / name
        self.home.mkdir(parents=True)
        self.key = self.home / f"{name}.key"
        args: list[str | os.PathLike[str]] = ["key", "generate", self.key]
        env = None
        if encrypt is not None:
            args.append("--encrypt")
            env = {PASSPHRASE_ENV: encrypt}
        self.keyid = run(*args, env=env).out.strip()
        self.pub = self.key.with_name(self.key.name + ".pub")

    def receive(self, path: Path) -> Path:
        """A copy of ``path`` (a repository or a bundle) on this holder's machine."""
        dest = self.home / path.name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        if path.is_dir():
            shutil.copytree(path, dest, symlinks=True)
        else:
            shutil.copy2(path, dest)
        return dest


@pytest.fixture
def people(tmp_path: Path) -> dict[str, Holder]:
    names = ("alice", "bob", "carol", "dave", "rel1", "rel2", "rel3", "index")
    return {n: Holder(tmp_path / "people", n) for n in names}


def init_args(repo: Path, p: dict[str, Holder], *sign_with: str) -> list[Any]:
    args: list[Any] = [
        "repo", "init", repo,
        "--root-key", p["alice"].pub, "--root-key", p["bob"].pub, "--root-threshold", "2",
        "--release-key", p["rel1"].pub, "--release-key", p["rel2"].pub,
        "--release-key", p["rel3"].pub, "--release-threshold", "2",
        "--index-key", p["index"].pub,
    ]  # fmt: skip
    for name in sign_with:
        args += ["--sign-with", p[name].key]
    return args


def published_repo(tmp_path: Path, p: dict[str, Holder]) -> Path:
    """A repository created one-shot (both root holders at one table) with 1.0.0 published."""
    repo = tmp_path / "office" / "repo"
    bhs(*init_args(repo, p, "alice", "bob"))
    app = write_artifact(tmp_path / "v1" / "app", 50_000)
    bhs("release", "build", repo, "--version", "1.0.0", "--artifact", app, "--json")
    for holder in ("rel1", "rel2"):
        bhs("release", "sign", repo, "--version", "1.0.0", "--key", p[holder].key)
    bhs("release", "publish", repo, "--version", "1.0.0", "--index-key", p["index"].key)
    return repo


# -- root: separate holders ----------------------------------------------------------------------


def test_two_holders_initialise_a_root_each_on_their_own_machine(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = tmp_path / "office" / "repo"
    out = bhs_json(*init_args(repo, p, "alice"))
    assert out["published"] is False and out["root_version"] == 1
    draft = out["root_draft"]
    assert draft["kind"] == "init" and draft["old_threshold"] is None
    assert draft["new_threshold"]["signed_by"] == [p["alice"].keyid]
    assert not (repo / "root.json").exists() and not (repo / "1.root.json").exists()
    assert (repo / ".bhsync" / "drafts" / "root" / "root.json").is_file()
    # nothing can be built on a repository without a root; publishing now is below threshold
    err = bhs("release", "list", repo, expect=1).err
    assert "repo sign" in err
    before = files(repo)
    bhs("repo", "publish-root", repo, expect=3)
    bhs("repo", "sign", repo, "--key", p["rel1"].key, expect=3)  # not a root key
    bhs("repo", "sign", repo, "--key", p["alice"].pub, expect=2)  # a public key
    assert files(repo) == before
    # alice signing again is a no-op
    again = bhs_json("repo", "sign", repo, "--key", p["alice"].key)
    assert again["added"] is False
    assert files(repo) == before
    # the draft travels to bob, who signs and publishes on his machine
    at_bob = p["bob"].receive(repo)
    signed = bhs_json("repo", "sign", at_bob, "--key", p["bob"].key)
    assert signed["added"] is True and signed["root_draft"]["complete"] is True
    shown = bhs_json("repo", "show", at_bob)
    assert shown["root"] is None and shown["root_draft"]["complete"] is True
    published = bhs_json("repo", "publish-root", at_bob)
    assert published["root_version"] == 1
    assert (at_bob / "root.json").read_bytes() == (at_bob / "1.root.json").read_bytes()
    assert not (at_bob / ".bhsync" / "drafts" / "root").exists()
    signers = {s["keyid"] for s in json.loads((at_bob / "root.json").read_bytes())["signatures"]}
    assert signers == {p["alice"].keyid, p["bob"].keyid}
    # a release flows from it to a node
    app = write_artifact(tmp_path / "app", 20_000)
    bhs_json("release", "build", at_bob, "--version", "1.0.0", "--artifact", app)
    for holder in ("rel1", "rel3"):
        bhs("release", "sign", at_bob, "--version", "1.0.0", "--key", p[holder].key)
    bhs("release", "publish", at_bob, "--version", "1.0.0", "--index-key", p["index"].key)
    node = tmp_path / "node"
    init_node(node, at_bob / "root.json", at_bob)
    installs(node, "1.0.0")


def test_four_holders_rotate_the_root_to_new_keys_old_and_new_thresholds(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = published_repo(tmp_path, p)
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo)  # trusts root v1
    installs(node, "1.0.0")
    out = bhs_json(
        "repo", "rotate", repo, "--root-key", p["carol"].pub, "--root-key", p["dave"].pub,
        "--sign-with", p["alice"].key,
    )  # fmt: skip
    assert out["published"] is False and out["root_version"] == 2
    assert out["root_draft"]["old_threshold"]["signed_by"] == [p["alice"].keyid]
    assert json.loads((repo / "root.json").read_bytes())["signed"]["version"] == 1
    assert not (repo / "2.root.json").exists()
    # another rotation waits for this one
    bhs("repo", "rotate", repo, "--revoke", p["rel3"].keyid, "--sign-with", p["alice"].key,
        expect=1)  # fmt: skip
    # the draft travels bob -> carol -> dave; each signs on their own machine
    here = repo
    for name in ("bob", "carol"):
        here = p[name].receive(here)
        bhs("repo", "sign", here, "--key", p[name].key)
        before = files(here)
        bhs("repo", "publish-root", here, expect=3)  # not yet: the new threshold needs dave
        assert files(here) == before
    here = p["dave"].receive(here)
    status = bhs_json("repo", "sign", here, "--key", p["dave"].key)["root_draft"]
    assert status["new_threshold"]["met"] and status["old_threshold"]["met"]
    # dave sends the completed draft back to the office, which publishes it
    office = tmp_path / "office" / "repo"
    shutil.rmtree(office)
    shutil.copytree(here, office, symlinks=True)
    assert bhs_json("repo", "publish-root", office)["root_version"] == 2
    new = json.loads((office / "2.root.json").read_bytes())["signed"]
    assert set(new["roles"]["root"]["keyids"]) == {p["carol"].keyid, p["dave"].keyid}
    # the node that trusted root v1 walks to v2 and keeps updating
    assert bhs_json("node", "check", node)["root_version"] == 2
    # the old root holders are out: a new draft cannot be signed by them
    bhs("repo", "rotate", office, "--revoke", p["rel3"].keyid, "--sign-with", p["alice"].key,
        expect=3)  # fmt: skip
    assert not (office / ".bhsync" / "drafts" / "root").exists()


def test_one_shot_root_forms_are_unchanged(tmp_path: Path, people: dict[str, Holder]) -> None:
    p = people
    repo = published_repo(tmp_path, p)
    assert json.loads((repo / "root.json").read_bytes())["signed"]["version"] == 1
    before = files(repo)
    # as many keys as the thresholds need, but not the right ones: exit 3, nothing written
    bhs("repo", "rotate", repo, "--root-key", p["carol"].pub, "--root-key", p["dave"].pub,
        "--sign-with", p["carol"].key, "--sign-with", p["dave"].key, expect=3)  # fmt: skip
    bhs("repo", "rotate", repo, "--root-key", p["carol"].pub, "--root-key", p["dave"].pub,
        "--sign-with", p["alice"].key, "--sign-with", p["bob"].key, "--sign-with",
        p["carol"].key, expect=3)  # fmt: skip
    assert files(repo) == before
    # enough keys: published at once, no draft
    out = bhs_json("repo", "rotate", repo, "--revoke", p["rel3"].keyid,
                   "--sign-with", p["alice"].key, "--sign-with", p["bob"].key)  # fmt: skip
    assert out["published"] is True and out["root_draft"] is None and out["root_version"] == 2
    # --draft asks for a draft even with enough keys; discard-root drops it
    out = bhs_json("repo", "rotate", repo, "--root-threshold", "1", "--draft",
                   "--sign-with", p["alice"].key, "--sign-with", p["bob"].key)  # fmt: skip
    assert out["published"] is False and out["root_draft"]["complete"] is True
    assert bhs_json("repo", "discard-root", repo)["root_version"] == 3
    assert not (repo / "3.root.json").exists()
    bhs("repo", "discard-root", repo, expect=1)


def test_discarding_a_first_root_draft_lets_the_directory_be_initialised_again(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    repo = tmp_path / "repo"
    bhs(*init_args(repo, people, "alice"))
    bhs(*init_args(repo, people, "alice", "bob"), expect=1)  # a repository exists
    bhs("repo", "discard-root", repo)
    assert not (repo / ".bhsync").exists()
    bhs(*init_args(repo, people, "alice", "bob"))
    assert (repo / "root.json").is_file()


# -- releases: bundles -----------------------------------------------------------------------------


def test_two_holders_sign_a_release_through_bundles_on_separate_machines(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = published_repo(tmp_path, p)
    app = write_artifact(tmp_path / "v2" / "app", 60_000, seed=2)
    bhs_json("release", "build", repo, "--version", "1.1.0", "--artifact", app)
    bundle = tmp_path / "office" / "1.1.0.json"
    out = bhs_json("release", "export", repo, "--version", "1.1.0", bundle)
    assert out == {"version": "1.1.0", "bundle": str(bundle), "signatures": 0, "threshold": 2}
    at_rel1 = p["rel1"].receive(bundle)
    at_rel3 = p["rel3"].receive(bundle)
    # each holder sees what they sign, then signs their copy
    shown = bhs_json("release", "show", at_rel1)
    assert shown["manifest"]["version"] == "1.1.0" and shown["state"] == "bundle"
    signed = bhs_json("release", "sign", at_rel1, "--key", p["rel1"].key)
    assert signed == {"version": "1.1.0", "added": True, "bundle": str(at_rel1),
                      "signatures": 1, "threshold": 2}  # fmt: skip
    assert bhs_json("release", "sign", at_rel1, "--key", p["rel1"].key)["added"] is False
    bhs("release", "sign", at_rel3, "--key", p["rel3"].key)
    # back at the office: one import of both bundles, each signature verified and merged
    before = files(repo)
    bhs("release", "publish", repo, "--version", "1.1.0", "--index-key", p["index"].key,
        expect=3)  # fmt: skip
    assert files(repo) == before
    merged = bhs_json("release", "import", repo, at_rel1, at_rel3)
    assert sorted(merged["added"]["1.1.0"]) == sorted([p["rel1"].keyid, p["rel3"].keyid])
    assert merged["signatures"] == {"1.1.0": 2} and merged["threshold"] == 2
    # importing again adds nothing
    assert bhs_json("release", "import", repo, at_rel1)["added"] == {"1.1.0": []}
    bhs("release", "publish", repo, "--version", "1.1.0", "--index-key", p["index"].key)
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo)
    installs(node, "1.1.0")


def test_bundle_signed_in_turn_by_two_holders_is_imported_once(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = published_repo(tmp_path, p)
    app = write_artifact(tmp_path / "v2" / "app", 30_000, seed=3)
    bhs_json("release", "build", repo, "--version", "1.1.0", "--artifact", app)
    bundle = tmp_path / "office" / "b.json"
    bhs("release", "export", repo, "--version", "1.1.0", bundle)
    here = p["rel2"].receive(bundle)
    bhs("release", "sign", here, "--key", p["rel2"].key)
    here = p["rel3"].receive(here)
    assert bhs_json("release", "sign", here, "--key", p["rel3"].key)["signatures"] == 2
    assert bhs_json("release", "import", repo, here)["signatures"] == {"1.1.0": 2}
    bhs("release", "publish", repo, "--version", "1.1.0", "--index-key", p["index"].key)


def _forge(bundle: Path, change: Any) -> None:
    """An attacker's edit of a bundle (an honest holder never edits one)."""
    obj = json.loads(bundle.read_bytes())
    change(obj)
    bundle.write_text(json.dumps(obj))


def test_bad_bundles_refuse_the_whole_import_and_write_nothing(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = published_repo(tmp_path, p)
    app = write_artifact(tmp_path / "v2" / "app", 30_000, seed=4)
    bhs_json("release", "build", repo, "--version", "1.1.0", "--artifact", app)
    bundle = tmp_path / "office" / "b.json"
    bhs("release", "export", repo, "--version", "1.1.0", bundle)
    good = p["rel1"].receive(bundle)
    bhs("release", "sign", good, "--key", p["rel1"].key)
    index_key = load_private_key(p["index"].key)
    before = files(repo)

    # a signature that does not verify
    bad_sig = tmp_path / "bad-sig.json"
    shutil.copy(good, bad_sig)

    def flip(obj: dict[str, Any]) -> None:
        sig = obj["release"]["signatures"][0]
        sig["sig"] = ("0" if sig["sig"][0] != "0" else "1") + sig["sig"][1:]

    _forge(bad_sig, flip)
    # a valid signature by a key outside the release role (the index key)
    outsider = tmp_path / "outsider.json"
    shutil.copy(bundle, outsider)

    def outsider_sig(obj: dict[str, Any]) -> None:
        env = Envelope.from_bytes(json.dumps(obj["release"]).encode(), expected_type="release")
        obj["release"]["signatures"].append(index_key.sign(env.signed_bytes).to_dict())

    _forge(outsider, outsider_sig)
    # a bundle of another build of 1.1.0 (the manifest differs), honestly signed
    other_repo = tmp_path / "other" / "repo"
    shutil.copytree(repo, other_repo, symlinks=True)
    shutil.rmtree(other_repo / ".bhsync" / "drafts" / "1.1.0")
    other_app = write_artifact(tmp_path / "v2b" / "app", 30_000, seed=5)
    bhs_json("release", "build", other_repo, "--version", "1.1.0", "--artifact", other_app)
    other = tmp_path / "other.json"
    bhs("release", "export", other_repo, "--version", "1.1.0", other)
    bhs("release", "sign", other, "--key", p["rel2"].key)

    for forged in (bad_sig, outsider, other):
        bhs("release", "import", repo, good, forged, expect=3)
        assert files(repo) == before, forged.name
    # not a bundle at all: a usage-level refusal of the file's format
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    bhs("release", "import", repo, junk, expect=3)
    assert files(repo) == before
    # a holder cannot sign with a key outside the role, and the bundle is left as it was
    kept = good.read_bytes()
    bhs("release", "sign", good, "--key", p["index"].key, expect=3)
    bhs("release", "sign", good, "--key", p["rel2"].pub, expect=2)
    assert good.read_bytes() == kept
    # one holder's signature in two bundles counts once
    twin = tmp_path / "twin.json"
    shutil.copy(good, twin)
    bhs_json("release", "import", repo, good, twin)
    bhs("release", "publish", repo, "--version", "1.1.0", "--index-key", p["index"].key,
        expect=3)  # fmt: skip


def test_export_refuses_existing_outputs_and_published_or_unknown_versions(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = published_repo(tmp_path, p)
    out = tmp_path / "b.json"
    bhs("release", "export", repo, "--version", "1.0.0", out, expect=1)  # published
    bhs("release", "export", repo, "--version", "9.0.0", out, expect=1)  # no such draft
    assert not out.exists()
    app = write_artifact(tmp_path / "v2" / "app", 10_000, seed=6)
    bhs_json("release", "build", repo, "--version", "1.1.0", "--artifact", app)
    bhs("release", "export", repo, "--version", "1.1.0", out)
    bhs("release", "sign", out, "--key", p["rel1"].key)
    signed = out.read_bytes()
    bhs("release", "export", repo, "--version", "1.1.0", out, expect=1)  # never overwritten
    assert out.read_bytes() == signed
    bhs("release", "sign", out, "--version", "2.0.0", "--key", p["rel2"].key, expect=2)
    bhs("release", "sign", repo, "--key", p["rel2"].key, expect=2)  # REPO needs --version
    # bundles of a published release cannot be imported
    bhs("release", "import", repo, out)
    bhs("release", "sign", out, "--key", p["rel2"].key)
    bhs("release", "import", repo, out)
    bhs("release", "publish", repo, "--version", "1.1.0", "--index-key", p["index"].key)
    bhs("release", "import", repo, out, expect=1)


# -- passphrase-protected keys and key file permissions ----------------------------------------------


def test_encrypted_keys_sign_with_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    base = tmp_path / "people"
    alice = Holder(base, "alice", encrypt="alice's long passphrase")
    rel = Holder(base, "rel", encrypt="rel passphrase")
    index = Holder(base, "index")
    text = alice.key.read_text()
    assert "encrypted" in text and "private" not in json.loads(text)
    assert stat.S_IMODE(alice.key.stat().st_mode) == 0o600
    # key show needs no passphrase
    shown = bhs_json("key", "show", alice.key)
    assert shown == {"path": str(alice.key), "kind": "private", "keyid": alice.keyid,
                     "public_key": shown["public_key"], "encrypted": True}  # fmt: skip
    repo = tmp_path / "repo"
    init = ["repo", "init", repo, "--root-key", alice.pub, "--root-threshold", "1",
            "--release-key", rel.pub, "--release-threshold", "1", "--index-key", index.pub,
            "--sign-with", alice.key]  # fmt: skip
    # no passphrase and no terminal: exit 1, nothing written
    err = run(*init, expect=1).err
    assert PASSPHRASE_ENV in err
    assert not repo.exists()
    run(*init, expect=1, env={PASSPHRASE_ENV: "wrong"})
    assert not repo.exists()
    run(*init, env={PASSPHRASE_ENV: "alice's long passphrase"})
    assert (repo / "root.json").is_file()
    app = write_artifact(tmp_path / "app", 10_000)
    bhs_json("release", "build", repo, "--version", "1.0.0", "--artifact", app)
    run("release", "sign", repo, "--version", "1.0.0", "--key", rel.key, expect=1,
        env={PASSPHRASE_ENV: "alice's long passphrase"})  # fmt: skip
    run("release", "sign", repo, "--version", "1.0.0", "--key", rel.key,
        env={PASSPHRASE_ENV: "rel passphrase"})  # fmt: skip
    bhs("release", "publish", repo, "--version", "1.0.0", "--index-key", index.key)
    # an encrypted key may be readable by others: the passphrase protects it
    rel.key.chmod(0o644)
    run("key", "show", rel.key)


def test_private_key_readable_by_others_is_refused_with_a_chmod_hint(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = published_repo(tmp_path, p)
    app = write_artifact(tmp_path / "v2" / "app", 10_000, seed=7)
    bhs_json("release", "build", repo, "--version", "1.1.0", "--artifact", app)
    before = files(repo)
    for mode in (0o644, 0o640, 0o604):
        p["rel1"].key.chmod(mode)
        err = bhs("release", "sign", repo, "--version", "1.1.0", "--key", p["rel1"].key,
                  expect=1).err  # fmt: skip
        assert f"chmod 600 {p['rel1'].key}" in err
        assert files(repo) == before
    p["index"].key.chmod(0o644)
    bhs("repo", "refresh", repo, "--index-key", p["index"].key, expect=1)
    bhs("key", "show", p["index"].key, expect=1)
    assert files(repo) == before
    p["rel1"].key.chmod(0o600)
    bhs("release", "sign", repo, "--version", "1.1.0", "--key", p["rel1"].key)


# -- conventions ----------------------------------------------------------------------------------


def test_key_and_threshold_conventions(tmp_path: Path, people: dict[str, Holder]) -> None:
    p = people
    # key generate refuses an existing PATH (exit 1); key show of a non-key is a usage error
    bhs("key", "generate", p["alice"].key, expect=1)
    junk = tmp_path / "junk"
    junk.write_text("not a key")
    bhs("key", "show", junk, expect=2)
    bhs("key", "show", tmp_path / "absent", expect=1)  # a missing file is 1
    pub = bhs_json("key", "show", p["alice"].pub)
    assert pub["kind"] == "public" and pub["keyid"] == p["alice"].keyid
    assert pub["encrypted"] is False
    assert bhs_json("key", "show", p["alice"].key)["public_key"] == pub["public_key"]
    # an impossible threshold is a usage error, and nothing is written
    repo = tmp_path / "repo"
    args = init_args(repo, p, "alice", "bob")
    args[args.index("--root-threshold") + 1] = "3"
    bhs(*args, expect=2)
    assert not repo.exists()
    bhs(*init_args(repo, p, "alice", "bob"))
    before = files(repo)
    bhs("repo", "rotate", repo, "--release-threshold", "4", "--sign-with", p["alice"].key,
        "--sign-with", p["bob"].key, expect=2)  # fmt: skip
    # PUB where KEY belongs and back: exit 2
    bhs("repo", "sign", repo, "--key", p["alice"].pub, expect=2)
    bhs("repo", "rotate", repo, "--root-key", p["alice"].key, "--sign-with", p["alice"].key,
        expect=2)  # fmt: skip
    # a public key given as --trust: exit 2 with a hint
    err = bhs("node", "init", tmp_path / "node", "--trust", p["alice"].pub, "--source", repo,
              expect=2).err  # fmt: skip
    assert "root.json" in err
    # a signer plugin that is not installed is a usage error
    bhs("repo", "sign", repo, "--key", "plugin:nosuch:key", expect=2)
    bhs("repo", "sign", repo, "--key", "plugin:malformed", expect=2)
    assert files(repo) == before


def test_repo_show_lists_roles_keys_thresholds_expiries_and_releases(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = published_repo(tmp_path, p)
    shown = bhs_json("repo", "show", repo)
    assert set(shown) == {"repo", "network_id", "root", "index", "config", "releases",
                          "root_draft"}  # fmt: skip
    root = shown["root"]
    assert root["version"] == 1 and root["expires"].endswith("Z")
    assert root["roles"]["root"] == {
        "keyids": [p["alice"].keyid, p["bob"].keyid], "threshold": 2
    }  # fmt: skip
    assert root["roles"]["release"]["threshold"] == 2
    assert set(root["keys"]) >= {p["alice"].keyid, p["rel1"].keyid, p["index"].keyid}
    assert shown["index"]["version"] == 1 and shown["index"]["channels"] == ["stable"]
    assert shown["config"] == {"root_expires_days": 365, "index_expires_seconds": 86400}
    assert [r["version"] for r in shown["releases"]] == ["1.0.0"]
    assert shown["releases"][0]["state"] == "published"
    assert shown["root_draft"] is None
    text = bhs("repo", "show", repo).out
    assert "root v1" in text and p["alice"].keyid in text and "1.0.0" in text
    # with a pending rotation the same keys, the draft filled in
    bhs("repo", "rotate", repo, "--root-threshold", "1", "--sign-with", p["alice"].key)
    shown = bhs_json("repo", "show", repo)
    assert shown["root"]["version"] == 1
    assert shown["root_draft"]["version"] == 2
    assert shown["root_draft"]["old_threshold"]["signatures"] == 1


def test_json_errors_of_these_commands_are_one_object(
    tmp_path: Path, people: dict[str, Holder]
) -> None:
    p = people
    repo = tmp_path / "repo"
    bhs(*init_args(repo, p, "alice"))
    result = bhs("repo", "publish-root", repo, "--json", expect=3)
    error = result.json()["error"]
    assert error["exit"] == 3 and error["kind"] == "signature" and error["message"]
    result = bhs("repo", "sign", repo, "--key", p["alice"].pub, "--json", expect=2)
    assert result.json()["error"]["exit"] == 2
