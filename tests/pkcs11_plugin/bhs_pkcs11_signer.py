"""A blackhole-sync signer plugin for PKCS#11 tokens, written as a third party would write it.

It signs with an Ed25519 key that lives in a PKCS#11 token (SoftHSM2 in the tests; a YubiHSM,
a network HSM or a cloud HSM's PKCS#11 library in production). blackhole-sync only ever sees
the key's public half and the signatures the token makes: the private key is created
non-extractable and sensitive, and nothing here asks for its value.

Install it as a distribution with an entry point in the ``blackhole_sync`` group::

    [project.entry-points.blackhole_sync]
    pkcs11 = "bhs_pkcs11_signer"

and configure it through the environment:

``BHS_PKCS11_MODULE``  the PKCS#11 library (e.g. ``/usr/lib/softhsm/libsofthsm2.so``)
``BHS_PKCS11_TOKEN``   the token's label
``BHS_PKCS11_PIN``     the user PIN

A key is named by its ``CKA_LABEL``: ``--key plugin:pkcs11:LABEL``.
"""

from __future__ import annotations

import os
from typing import Any

import pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass

from blackhole_sync import hookimpl

__all__ = ["Pkcs11Key", "Pkcs11Provider", "blackhole_sync_signers"]


def _raw_point(ec_point: bytes) -> bytes:
    """The 32-byte Ed25519 public key from CKA_EC_POINT (a DER OCTET STRING, or raw)."""
    if len(ec_point) == 34 and ec_point[0] == 0x04 and ec_point[1] == 32:
        return ec_point[2:]
    if len(ec_point) == 32:
        return ec_point
    raise ValueError(f"unexpected CKA_EC_POINT of {len(ec_point)} bytes")


class Pkcs11Key:
    """One Ed25519 key in the token, found by label."""

    def __init__(self, token: Any, pin: str, label: str) -> None:
        self._token = token
        self._pin = pin
        self.label = label
        with token.open(user_pin=pin) as session:
            try:
                public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            except pkcs11.NoSuchKey as exc:
                raise LookupError(f"no key labelled {label!r} in the token") from exc
            self.public_key = _raw_point(bytes(public[Attribute.EC_POINT]))

    def sign(self, message: bytes) -> bytes:
        with self._token.open(user_pin=self._pin) as session:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=self.label)
            return bytes(private.sign(message, mechanism=Mechanism.EDDSA))


class Pkcs11Provider:
    name = "pkcs11"

    def __init__(self) -> None:
        self._token: Any = None

    def _open(self) -> Any:
        if self._token is None:
            lib = pkcs11.lib(os.environ["BHS_PKCS11_MODULE"])
            self._token = lib.get_token(token_label=os.environ["BHS_PKCS11_TOKEN"])
        return self._token

    def signer(self, key_id: str) -> Pkcs11Key:
        return Pkcs11Key(self._open(), os.environ["BHS_PKCS11_PIN"], key_id)


@hookimpl
def blackhole_sync_signers() -> list[Pkcs11Provider]:
    return [Pkcs11Provider()]
