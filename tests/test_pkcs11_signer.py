"""A key blackhole-sync never reads: Ed25519 in a PKCS#11 token (SoftHSM2), through a plugin.

The signer plugin (``tests/pkcs11_plugin/bhs_pkcs11_signer.py``) is written as a third party
would write it: a module that registers the ``blackhole_sync_signers`` hook and talks PKCS#11
through python-pkcs11. It is staged as a real distribution (a ``*.dist-info`` with its entry
point) on the ``PYTHONPATH`` of the command line's subprocesses. The token makes the keys
sensitive and non-extractable; blackhole-sync gets their public halves and signatures only.

Needs SoftHSM2 (``apt-get install softhsm2``; ``.ci/run`` installs it) and python-pkcs11 (a
test dependency); skipped without them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from cli_helpers import BIN, ENV, Result, init_node

from blackhole_sync.testing import run as run_process

pytest.importorskip("pkcs11")

PLUGIN = Path(__file__).parent / "pkcs11_plugin" / "bhs_pkcs11_signer.py"
LIBRARIES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
SOFTHSM = next((lib for lib in LIBRARIES if os.path.exists(lib)), None)
pytestmark = pytest.mark.skipif(
    SOFTHSM is None or shutil.which("softhsm2-util") is None,
    reason="SoftHSM2 is not installed (apt-get install softhsm2)",
)

PIN = "4321"

_KEYGEN = """
import sys
import pkcs11
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_named_curve_parameters

lib = pkcs11.lib(sys.argv[1])
token = lib.get_token(token_label=sys.argv[2])
with token.open(rw=True, user_pin=sys.argv[3]) as session:
    for label in sys.argv[4:]:
        session.generate_keypair(
            KeyType.EC_EDWARDS,
            public_template={
                Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112"),  # Ed25519
                Attribute.LABEL: label,
            },
            private_template={
                Attribute.LABEL: label,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
            store=True,
        )
"""

_PROBE = """
import json, sys
import pkcs11
from pkcs11 import Attribute, ObjectClass

lib = pkcs11.lib(sys.argv[1])
token = lib.get_token(token_label=sys.argv[2])
with token.open(user_pin=sys.argv[3]) as session:
    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=sys.argv[4])
    try:
        key[Attribute.VALUE]
        readable = True
    except pkcs11.exceptions.AttributeSensitive:
        readable = False
    print(json.dumps({"sensitive": key[Attribute.SENSITIVE],
                      "extractable": key[Attribute.EXTRACTABLE], "readable": readable}))
"""


class Token:
    """A fresh SoftHSM2 token with Ed25519 keys, and the plugin installed beside it."""

    def __init__(self, base: Path) -> None:
        assert SOFTHSM is not None
        tokens = base / "tokens"
        tokens.mkdir(parents=True)
        conf = base / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        self.label = "bhs-test"
        site = base / "site"
        site.mkdir()
        shutil.copy(PLUGIN, site / PLUGIN.name)
        info = site / "bhs_pkcs11_signer-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: bhs-pkcs11-signer\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text("[blackhole_sync]\npkcs11 = bhs_pkcs11_signer\n")
        self.env = {
            "SOFTHSM2_CONF": str(conf),
            "BHS_PKCS11_MODULE": SOFTHSM,
            "BHS_PKCS11_TOKEN": self.label,
            "BHS_PKCS11_PIN": PIN,
            "PYTHONPATH": str(site),
        }
        self._run(["softhsm2-util", "--init-token", "--free", "--label", self.label,
                   "--pin", PIN, "--so-pin", "87654321"])  # fmt: skip

    def _run(self, argv: list[str]) -> str:
        proc = run_process(argv, env={**ENV, **self.env}, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def generate(self, *labels: str) -> None:
        assert SOFTHSM is not None
        self._run([sys.executable, "-c", _KEYGEN, SOFTHSM, self.label, PIN, *labels])

    def private_key_attributes(self, label: str) -> dict[str, bool]:
        assert SOFTHSM is not None
        out = self._run([sys.executable, "-c", _PROBE, SOFTHSM, self.label, PIN, label])
        result: dict[str, bool] = json.loads(out)
        return result


def run(
    *args: str | os.PathLike[str], expect: int = 0, env: Mapping[str, str] | None = None
) -> Result:
    argv = tuple(str(a) for a in args)
    proc = run_process([BIN, *argv], env={**ENV, **(env or {})}, timeout=180)
    result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, str(result)
    assert proc.returncode == expect, str(result)
    return result


@pytest.fixture
def token(tmp_path: Path) -> Token:
    token = Token(tmp_path / "hsm")
    token.generate("root-hsm", "release-hsm")
    return token


def test_release_signed_in_a_softhsm_token_installs_on_a_node(token: Token, tmp_path: Path) -> None:
    hsm = token.env
    # the token's keys cannot be read, by anyone
    attributes = token.private_key_attributes("release-hsm")
    assert attributes == {"sensitive": True, "extractable": False, "readable": False}
    shown = json.loads(run("key", "show", "plugin:pkcs11:release-hsm", "--json", env=hsm).out)
    assert shown["kind"] == "plugin" and len(shown["public_key"]) == 64
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("rel2", "index"):
        run("key", "generate", keys / name)
    repo = tmp_path / "repo"
    # the root key and one of the two release keys live in the token
    run("repo", "init", repo, "--root-key", "plugin:pkcs11:root-hsm", "--root-threshold", "1",
        "--release-key", "plugin:pkcs11:release-hsm", "--release-key", keys / "rel2.pub",
        "--release-threshold", "2", "--index-key", keys / "index.pub",
        "--sign-with", "plugin:pkcs11:root-hsm", env=hsm)  # fmt: skip
    root = json.loads((repo / "root.json").read_bytes())
    assert shown["keyid"] in root["signed"]["roles"]["release"]["keyids"]
    app = tmp_path / "app"
    app.write_bytes(b"signed in a token\n" * 1000)
    run("release", "build", repo, "--version", "1.0.0", "--artifact", app)
    signed = json.loads(run("release", "sign", repo, "--version", "1.0.0", "--key",
                            "plugin:pkcs11:release-hsm", "--json", env=hsm).out)  # fmt: skip
    assert signed["added"] is True and signed["signatures"] == 1
    run("release", "publish", repo, "--version", "1.0.0", "--index-key", keys / "index",
        expect=3)  # one of two  # fmt: skip
    run("release", "sign", repo, "--version", "1.0.0", "--key", keys / "rel2")
    run("release", "publish", repo, "--version", "1.0.0", "--index-key", keys / "index")
    manifest = json.loads((repo / "manifests" / "1.0.0.json").read_bytes())
    assert shown["keyid"] in {s["keyid"] for s in manifest["signatures"]}
    # a node (no plugin, no token) verifies and installs it
    node = tmp_path / "node"
    init_node(node, repo / "root.json", repo)
    run("node", "update", node)
    assert (node / "current").resolve().name == "1.0.0"
    assert (node / "current" / "app").read_bytes() == app.read_bytes()

    # the token's holder signs a bundle on their own machine
    app.write_bytes(b"signed in a token, again\n" * 1000)
    run("release", "build", repo, "--version", "1.1.0", "--artifact", app)
    bundle = tmp_path / "holder" / "1.1.0.json"
    bundle.parent.mkdir()
    run("release", "export", repo, "--version", "1.1.0", bundle)
    run("release", "sign", bundle, "--key", "plugin:pkcs11:release-hsm", env=hsm)
    run("release", "import", repo, bundle)
    run("release", "sign", repo, "--version", "1.1.0", "--key", keys / "rel2")
    run("release", "publish", repo, "--version", "1.1.0", "--index-key", keys / "index")
    run("node", "update", node)
    assert (node / "current").resolve().name == "1.1.0"


def test_a_key_the_token_lacks_or_a_token_that_refuses_fails_cleanly(
    token: Token, tmp_path: Path
) -> None:
    err = run("key", "show", "plugin:pkcs11:no-such-label", expect=1, env=token.env).err
    assert "no-such-label" in err
    wrong_pin = {**token.env, "BHS_PKCS11_PIN": "0000"}
    run("key", "show", "plugin:pkcs11:release-hsm", expect=1, env=wrong_pin)
    # without the plugin installed the name is unknown: a usage error naming the hook
    err = run("key", "show", "plugin:pkcs11:release-hsm", expect=2).err
    assert "blackhole_sync_signers" in err
