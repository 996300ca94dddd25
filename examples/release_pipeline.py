"""A release pipeline with separate signers: no one holds two keys, no key leaves its holder.

Each key holder is a directory standing for their own machine, holding their own key (the
root keys, used rarely, sealed with their holder's passphrase: ``key generate --encrypt``;
any key can be). What travels between them is a root draft (inside the
repository) and a release *bundle* (one JSON file) -- never a key:

* root holders alice and bob (2 of 2) sign the repository's first root, each on their own
  machine: ``repo init ... --sign-with alice`` writes a draft, ``repo sign --key bob`` adds
  bob's signature, ``repo publish-root`` publishes it once it verifies as a node will;
* the CI machine builds each release and exports a bundle (``release export``); release
  holders carol and dave (2 of the 3 release keys: carol, dave, erin) each look at it
  (``release show``) and sign their copy (``release sign BUNDLE``); CI merges the signatures
  (``release import``: each verified against the repository's root) and publishes with the
  online index key (``release publish``);
* a bundle signed by a key outside the release role is refused (exit 3), nothing written.

Every step is the ``blackhole-sync`` command a person would type; this script only moves
files between the "machines" and checks exit statuses. Run it once per release::

    python examples/release_pipeline.py WORKDIR --version 1.0.0 --artifact build/node
    python examples/release_pipeline.py WORKDIR --version 1.1.0 --artifact build/node

The first run also makes the keys and the repository (``WORKDIR/repo``, served as is by
``blackhole-sync serve WORKDIR/repo``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BHS = shutil.which("blackhole-sync", path=str(Path(sys.executable).parent)) or "blackhole-sync"
ROOT_HOLDERS = ["alice", "bob"]
RELEASE_HOLDERS = ["carol", "dave", "erin"]
SIGNING_NOW = ["carol", "dave"]  # who is available for this release: 2 of 3 is enough


def bhs(*args: str | Path, holder: str | None = None, expect: int = 0) -> str:
    """Run one command as ``holder`` (a root holder's passphrase in the environment, as their
    own shell would have it); fail loudly on an unexpected exit status."""
    env = dict(os.environ)
    if holder in ROOT_HOLDERS:
        env["BLACKHOLE_SYNC_KEY_PASSPHRASE"] = f"passphrase of {holder}"
    argv = [BHS, *map(str, args)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != expect:
        sys.exit(f"{' '.join(argv[1:3])} exited {proc.returncode} (expected {expect}):\n"
                 f"{proc.stdout}{proc.stderr}")  # fmt: skip
    return proc.stdout


def machine(work: Path, holder: str) -> Path:
    return work / "machines" / holder


def key(work: Path, holder: str) -> Path:
    return machine(work, holder) / "keys" / holder


def set_up(work: Path) -> None:
    """Each holder makes their own key; only the public halves are collected. Then the root
    is signed by both root holders, one after the other."""
    print("== keys: each holder on their own machine")
    for holder in [*ROOT_HOLDERS, *RELEASE_HOLDERS, "ci-index"]:
        key(work, holder).parent.mkdir(parents=True)
        sealed = ["--encrypt"] if holder in ROOT_HOLDERS else []
        keyid = bhs("key", "generate", key(work, holder), *sealed, holder=holder).strip()
        print(f"   {holder}: {keyid[:16]}...")
    pub = {h: f"{key(work, h)}.pub" for h in [*ROOT_HOLDERS, *RELEASE_HOLDERS, "ci-index"]}

    print("== root: alice starts it, bob completes it")
    repo = work / "repo"
    bhs(
        "repo", "init", repo,
        *[a for h in ROOT_HOLDERS for a in ("--root-key", pub[h])], "--root-threshold", "2",
        *[a for h in RELEASE_HOLDERS for a in ("--release-key", pub[h])],
        "--release-threshold", "2", "--index-key", pub["ci-index"],
        "--sign-with", key(work, "alice"), holder="alice",
    )  # fmt: skip
    assert not (repo / "root.json").exists()  # a draft until the threshold is met
    bhs("repo", "sign", repo, "--key", key(work, "bob"), holder="bob")
    bhs("repo", "publish-root", repo)
    shown = json.loads(bhs("repo", "show", repo, "--json"))
    print(f"   root version {shown['root']['version']} published")


def release(work: Path, version: str, artifact: Path) -> None:
    repo = work / "repo"
    ci = machine(work, "ci-index")
    print(f"== {version}: CI builds and exports a bundle")
    bhs("release", "build", repo, "--version", version, "--artifact", artifact)
    bundle = ci / f"{version}.json"
    bhs("release", "export", repo, "--version", version, bundle)

    signed = []
    for holder in SIGNING_NOW:
        copy = machine(work, holder) / bundle.name  # the bundle travels; the key stays
        shutil.copy(bundle, copy)
        shown = json.loads(bhs("release", "show", copy, "--json"))
        print(f"   {holder} reviews {shown['version']}: "
              f"{[a['name'] for a in shown['manifest']['artifacts']]}")  # fmt: skip
        bhs("release", "sign", copy, "--key", key(work, holder), holder=holder)
        signed.append(copy)

    # an outsider's signature is refused, and nothing is merged
    outsider = machine(work, "mallory")
    if not outsider.exists():
        (outsider / "keys").mkdir(parents=True)
        bhs("key", "generate", outsider / "keys" / "mallory")
    forged = outsider / bundle.name
    shutil.copy(bundle, forged)
    bhs("release", "sign", forged, "--key", outsider / "keys" / "mallory", expect=3)
    print("   mallory (no release key) cannot sign it: exit 3")

    print("== CI merges the signatures and publishes")
    bhs("release", "import", repo, *signed)
    bhs("release", "publish", repo, "--version", version,
        "--index-key", key(work, "ci-index"), holder="ci-index")  # fmt: skip
    listed = json.loads(bhs("release", "show", repo, "--version", version, "--json"))
    print(
        f"   published {listed['version']} ({listed['state']}), signed by "
        f"{listed['signatures']} of the release keys (threshold {listed['threshold']})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--version", required=True)
    parser.add_argument("--artifact", type=Path, required=True)
    args = parser.parse_args()
    if not (args.workdir / "repo" / "root.json").exists():
        set_up(args.workdir)
    release(args.workdir, args.version, args.artifact.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
