"""Signers held by plugins: ``plugin:NAME:ID`` names a key an HSM or a KMS keeps.

A release engineer whose key lives in a PKCS#11 token or a cloud KMS passes
``--key plugin:NAME:ID`` wherever a private key file is accepted. The plugin that registered a
:class:`~blackhole_sync.fetch.hookspecs.SignerProvider` called NAME (hook
``blackhole_sync_signers``) is asked for the key ID; blackhole-sync sees its public key and the
signatures it makes, never the private key.

:class:`PluginSigner` is a :class:`~blackhole_sync.documents.Signer` like a
:class:`~blackhole_sync.documents.PrivateKey`: the repository signs with either. Every signature
the plugin returns is checked against the key's public half before it is used, and every
exception a plugin raises becomes a :class:`~blackhole_sync.errors.PluginError` (python-tuf's
fetcher does the same with transport errors): a broken token fails the command, it never
produces a document nodes would refuse.
"""

from __future__ import annotations

from ..documents import PublicKey, Signature
from ..errors import FormatError, MissingPluginError, PluginError
from ..fetch import PluginHost
from ..fetch.hookspecs import RemoteSigner, SignerProvider

__all__ = [
    "PLUGIN_KEY_PREFIX",
    "PluginSigner",
    "is_plugin_key",
    "plugin_signer",
    "signer_providers",
]

#: How a key held by a signer plugin is written on the command line: ``plugin:NAME:ID``.
PLUGIN_KEY_PREFIX = "plugin:"


def is_plugin_key(spec: str) -> bool:
    """Whether a ``--key`` value names a plugin's key rather than a key file."""
    return spec.startswith(PLUGIN_KEY_PREFIX)


def _parse(spec: str) -> tuple[str, str]:
    name, sep, key_id = spec[len(PLUGIN_KEY_PREFIX) :].partition(":")
    if not is_plugin_key(spec) or not sep or not name or not key_id:
        raise ValueError(f"{spec!r}: a plugin key is written plugin:NAME:ID")
    return name, key_id


class PluginSigner:
    """A key a signer plugin holds; signs like a :class:`~blackhole_sync.documents.PrivateKey`."""

    def __init__(self, provider: str, key_id: str, remote: RemoteSigner) -> None:
        self.provider = provider
        self.key_id = key_id
        self._remote = remote
        try:
            raw = bytes(remote.public_key)
            self._public = PublicKey(raw)
        except (FormatError, TypeError, ValueError) as exc:
            raise PluginError(
                f"signer plugin {provider!r}: key {key_id!r} has no ed25519 public key: {exc}"
            ) from exc
        except Exception as exc:  # the plugin's own failure, reported as one
            raise PluginError(f"signer plugin {provider!r}: key {key_id!r}: {exc}") from exc

    @property
    def spec(self) -> str:
        return f"{PLUGIN_KEY_PREFIX}{self.provider}:{self.key_id}"

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def keyid(self) -> str:
        return self._public.keyid

    def sign(self, message: bytes) -> Signature:
        """The plugin's signature over ``message``, checked with the public key first."""
        try:
            sig = self._remote.sign(message)
        except Exception as exc:  # the plugin's own failure, reported as one
            raise PluginError(
                f"signer plugin {self.provider!r} could not sign with {self.key_id!r}: {exc}"
            ) from exc
        if not isinstance(sig, bytes | bytearray) or not self._public.verify(message, bytes(sig)):
            raise PluginError(
                f"signer plugin {self.provider!r}: key {self.key_id!r} returned a signature "
                f"that does not verify with its public key {self.keyid[:16]}..."
            )
        return Signature(self.keyid, bytes(sig).hex())

    def __repr__(self) -> str:
        return f"PluginSigner({self.spec!r}, keyid={self.keyid[:16]}...)"


def signer_providers(plugins: PluginHost) -> dict[str, SignerProvider]:
    """Every registered signer provider by name (the first registered wins a name)."""
    out: dict[str, SignerProvider] = {}
    for result in reversed(plugins.hook.blackhole_sync_signers()):
        for provider in result:
            out.setdefault(provider.name, provider)
    return out


def plugin_signer(spec: str, plugins: PluginHost) -> PluginSigner:
    """The signer ``plugin:NAME:ID`` names.

    ``ValueError`` for a malformed spec; :class:`~blackhole_sync.errors.MissingPluginError`
    when no provider is called NAME; :class:`~blackhole_sync.errors.PluginError` when the
    provider has no such key or fails.
    """
    name, key_id = _parse(spec)
    providers = signer_providers(plugins)
    provider = providers.get(name)
    if provider is None:
        known = ", ".join(sorted(providers)) or "none"
        raise MissingPluginError(
            f"no signer plugin named {name!r} is installed (installed: {known}); a signer "
            "plugin implements the blackhole_sync_signers hook in the 'blackhole_sync' "
            "entry-point group"
        )
    try:
        remote = provider.signer(key_id)
    except LookupError as exc:
        raise PluginError(f"signer plugin {name!r} has no key {key_id!r}: {exc}") from exc
    except Exception as exc:  # the plugin's own failure, reported as one
        raise PluginError(f"signer plugin {name!r}: key {key_id!r}: {exc}") from exc
    return PluginSigner(name, key_id, remote)
