"""Throwaway TLS material for the HTTP plugin tests, made at test time with ``openssl``.

Two independent CAs (the trusted one and a stranger), server certificates for
``IP:127.0.0.1`` and for another name, and client certificates from each CA. Keys are
ECDSA P-256 (fast to generate), certificates carry the extensions strict X.509 verification
expects (basicConstraints, keyUsage, extendedKeyUsage, subject/authority key identifiers).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from attrs import frozen

_LEAF = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
{san}
"""


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def _openssl(*args: str | Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return path


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: ``(cert.pem, key.pem)``."""
    key = _key(directory / f"{name}.key")
    cert = directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-subj",
        f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return cert, key


def make_self_signed(directory: Path, name: str, *, san: str) -> tuple[Path, Path]:
    """A self-signed server certificate (its own issuer, no CA): ``(cert.pem, key.pem)``."""
    key = _key(directory / f"{name}.key")
    cert = directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-subj",
        f"/CN={name}", "-addext", f"subjectAltName={san}",
        "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip
    return cert, key


def make_leaf(
    directory: Path, name: str, ca: tuple[Path, Path], *, usage: str, san: str | None
) -> tuple[Path, Path]:
    """A certificate signed by ``ca``: ``(cert.pem, key.pem)``."""
    key = _key(directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    cert = directory / f"{name}.pem"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        _LEAF.format(usage=usage, san=f"subjectAltName = {san}" if san else ""), encoding="ascii"
    )
    _openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-sha256", "-extfile", extensions,
    )  # fmt: skip
    return cert, key


@frozen
class Pki:
    """Everything a TLS test needs, as PEM files."""

    ca: Path  # the CA the clients are told to trust
    other_ca: Path  # a CA nobody was told to trust
    server_cert: Path  # IP:127.0.0.1, signed by ``ca``
    server_key: Path
    other_name_cert: Path  # DNS:mirror.example and IP:127.0.0.2 only, signed by ``ca``
    other_name_key: Path
    self_signed_cert: Path  # IP:127.0.0.1, its own issuer (nobody trusts it)
    self_signed_key: Path
    client_cert: Path  # clientAuth, signed by ``ca``
    client_key: Path
    stranger_cert: Path  # clientAuth, signed by ``other_ca``
    stranger_key: Path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "test-ca")
    other = make_ca(directory, "stranger-ca")
    server = make_leaf(directory, "server", ca, usage="serverAuth", san="IP:127.0.0.1")
    other_name = make_leaf(
        directory, "other-name", ca, usage="serverAuth", san="DNS:mirror.example,IP:127.0.0.2"
    )
    self_signed = make_self_signed(directory, "self-signed", san="IP:127.0.0.1")
    client = make_leaf(directory, "client", ca, usage="clientAuth", san=None)
    stranger = make_leaf(directory, "stranger", other, usage="clientAuth", san=None)
    return Pki(
        ca=ca[0],
        other_ca=other[0],
        server_cert=server[0],
        server_key=server[1],
        other_name_cert=other_name[0],
        other_name_key=other_name[1],
        self_signed_cert=self_signed[0],
        self_signed_key=self_signed[1],
        client_cert=client[0],
        client_key=client[1],
        stranger_cert=stranger[0],
        stranger_key=stranger[1],
    )
