"""Hook specifications: every place a plugin can extend blackhole-sync.

Plugins register through the entry-point group ``blackhole_sync`` (pluggy project name
``blackhole_sync``) and implement any of these hooks with ``blackhole_sync.hookimpl``.
Hooks are synchronous; objects they return have async methods where work is asynchronous.
Hooks that register things return lists; ``firstresult`` is used only where one answer is
wanted. The core's own features (the local-directory transport, the built-in patch codecs,
the log and webhook notification channels) register through these same hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from .transport import TransportSpec

__all__ = [
    "HOOK_NAMES",
    "PROJECT",
    "HealthCheck",
    "Hooks",
    "NotificationChannel",
    "PatchCodecLike",
    "ProtocolTranslatorLike",
    "RemoteSigner",
    "ServerFactory",
    "SignerProvider",
    "UpdateEvent",
    "hookimpl",
    "hookspec",
]

PROJECT = "blackhole_sync"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class ServerFactory(Protocol):
    """What ``blackhole_sync_server`` returns: runs an HTTP origin for a repository directory."""

    async def serve(
        self,
        root: Path,
        host: str,
        port: int,
        *,
        ready: Callable[[str], None],
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,
    ) -> None:
        """Serve ``root`` until cancelled; call ``ready(url)`` once listening.

        With ``tls_cert``/``tls_key`` (PEM files) it serves https; ``tls_client_ca`` also
        requires client certificates signed by that CA. The command line passes these only
        when the operator gives them.
        """
        ...


class ProtocolTranslatorLike(Protocol):
    """Turns a host-protocol message of ``from_version`` into one of ``to_version``."""

    from_version: int
    to_version: int

    def translate(self, message: Mapping[str, Any]) -> Mapping[str, Any]: ...


class PatchCodecLike(Protocol):
    name: str

    def diff(self, old: bytes, new: bytes) -> bytes: ...

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes: ...


class RemoteSigner(Protocol):
    """One ed25519 key held by an HSM or a KMS: blackhole-sync sees only its public key and
    the signatures it makes, never the private key."""

    #: the raw 32-byte ed25519 public key
    public_key: bytes

    def sign(self, message: bytes) -> bytes:
        """The 64-byte ed25519 signature over exactly ``message`` (the canonical bytes of a
        document). May block (a token, a network call); raise on failure."""
        ...


class SignerProvider(Protocol):
    """What ``blackhole_sync_signers`` returns: a named source of keys (``--key
    plugin:NAME:ID`` asks the provider called NAME for the key ID)."""

    name: str

    def signer(self, key_id: str) -> RemoteSigner:
        """The key ``key_id`` (the provider's own naming: a label, a KMS key name...); raise
        ``LookupError`` when there is none."""
        ...


class HealthCheck(Protocol):
    """A named check run after a switch; returns None when healthy, else raises or returns a reason."""

    name: str

    async def check(self, node_dir: Path, version: str) -> str | None: ...


class NotificationChannel(Protocol):
    """Tells an operator about updates (manual policy, critical installs)."""

    name: str

    async def notify(self, event: UpdateEvent) -> None: ...


class UpdateEvent(Protocol):
    kind: str  # "available", "downloaded", "installed", "rolled-back", "failed", ...
    version: str | None
    detail: Mapping[str, Any]


class Hooks:
    """The hook specifications (a namespace; pluggy reads its methods)."""

    @hookspec
    def blackhole_sync_transports(self) -> Sequence[TransportSpec]:
        """Register distribution transports.

        Called once when a host builds its transport table. Return a list of
        :class:`~blackhole_sync.fetch.transport.TransportSpec`; each names the URL schemes and
        locator kinds it handles. The core picks a transport by a source URL's scheme or a
        locator's kind; the first registered spec that handles it wins.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def blackhole_sync_server(self) -> ServerFactory | None:
        """Provide the HTTP origin behind ``blackhole-sync serve``.

        Return an object with ``async serve(root, host, port, *, ready)``, or None to let
        another plugin answer. The first non-None answer is used.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_patch_codecs(self) -> Sequence[PatchCodecLike]:
        """Register delta patch codecs (name, diff, bounded apply).

        A codec name appears in signed manifests' delta records; a node without the codec
        falls back to a full download. The release builder offers registered codecs to its
        delta selection beside the built-ins (the smallest patch wins); a codec may declare
        ``diff_memory(old_len, new_len)`` to be skipped over the memory budget, and
        ``apply_to(old, patch, *, max_output, sink)`` to stream its output (see
        :mod:`blackhole_sync.codecs.delta.base`). Codecs must be picklable: nodes apply them
        in a bounded child process.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_health_checks(self, node_dir: Path) -> Sequence[HealthCheck]:
        """Register health checks run after a switch, beside the release's own command.

        ``node_dir`` is the node's store. A failing or hanging check rolls the node back.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_self_tests(
        self, node_dir: Path, staged: Path, version: str
    ) -> Sequence[HealthCheck]:
        """Register self-tests run in the sandbox on a staged tree before the switch.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_migrations(self, from_version: str | None, to_version: str) -> Sequence[Any]:
        """Provide schema migrations (:class:`~blackhole_sync.documents.release.Migration`) for a
        version change, run after the manifest's own ones, in ``from_schema`` order.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_notification_channels(
        self, node_config: Mapping[str, Any]
    ) -> Sequence[NotificationChannel]:
        """Register notification channels (``log`` is built in; the HTTP plugin adds ``webhook``).

        Called each time the manager notifies (manual policy, critical installs).
        ``node_config`` is the node's ``config.toml`` as plain tables, so a channel can read
        its own settings (the webhook channel reads ``[webhook]``). Return the channels this
        plugin offers; the manual policy's ``notification_channels`` picks among them by name.

        .. versionadded:: 0.1
        .. versionchanged:: 0.2 takes ``node_config``
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def blackhole_sync_restart_service(self, node_dir: Path, version: str) -> bool | None:
        """Restart the node's service after a switch.

        Return True when this plugin restarted it, None to let another plugin (or the
        configured restart command) do it. Raise to report failure (triggers rollback).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_broadcast_status(self, status: Mapping[str, Any], signed: bytes) -> None:
        """Carry a node's signed status document to the network (e.g. over gossip).

        ``status`` is the parsed document, ``signed`` its signed bytes. Called by
        ``UpdateManager.broadcast_update_status``. Must not block; schedule work instead.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def blackhole_sync_protocol_versions(self, node_dir: Path) -> Sequence[int] | None:
        """The peer-to-peer protocol versions the host runs on this node.

        Called whenever the node judges whether a release may install (its compatibility's
        ``protocol_versions`` must share one with the answer). Return a list of integers, or
        None to let another plugin answer; with no answer the node's ``[node]
        protocol_versions`` setting is used (empty: protocols are not checked).

        .. versionadded:: 0.3
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def blackhole_sync_chain_height(self, node_dir: Path) -> int | None:
        """The host's current chain height (block number), for protocol activation.

        Called by the node agent about once a second while an activation proposal is locked
        in, and by ``node status``/``network status``. A proposal with an
        ``activation_height`` activates (``current`` switches to its release, the
        ``protocol-activated`` event fires) once the answer reaches that height. Return an
        integer, or None to let another plugin answer; with no answer the node has no height
        and only proposals that activate at a time can activate.

        .. versionadded:: 0.3
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_protocol_translators(self) -> Sequence[ProtocolTranslatorLike]:
        """Register translators of the host's protocol messages between protocol versions.

        Called when a node builds its :class:`~blackhole_sync.network.CompatibilityManager`.
        Return objects with ``from_version`` and ``to_version`` (integers) and
        ``translate(message) -> message`` (mappings); ``translate_protocol_message`` chains
        them along the shortest path, so a node on protocol 3 can read a message of protocol 1
        through translators 1->2 and 2->3.

        .. versionadded:: 0.3
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_metrics(self, node_dir: Path, version: str) -> Mapping[str, float] | None:
        """Measure the running version for regression detection.

        Called to sample the baseline on the last good version and, after a switch, every
        ``[regression] interval`` seconds for ``watch_seconds``. Return a mapping of metric
        names to numbers (merged with the other plugins' answers and ``[commands] metrics``;
        the first answer for a name wins), or None. ``[regression.thresholds]`` says which
        metrics count and by how much they may move.

        .. versionadded:: 0.3
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_signers(self) -> Sequence[SignerProvider]:
        """Register signers: keys held by an HSM or a cloud KMS, never read by blackhole-sync.

        Called when a command is given a key written ``plugin:NAME:ID`` (``--key``,
        ``--sign-with``, ``--index-key``; also where a public key is expected, for its public
        half). Return the providers this plugin offers; the one whose ``name`` is NAME is asked
        for ``signer(ID)``. Every signature a signer returns is verified with its public key
        before it is used; a signer that raises or returns a bad signature fails the command
        (exit 1) and nothing is written.

        .. versionadded:: 0.2
        """
        raise NotImplementedError

    @hookspec
    def blackhole_sync_update_event(self, event: UpdateEvent) -> None:
        """Observe update lifecycle events (checked, downloading, installed, rolled back...).

        Observers cannot change or veto anything; exceptions they raise are logged and ignored.

        .. versionadded:: 0.1
        """
        raise NotImplementedError


HOOK_NAMES: tuple[str, ...] = tuple(
    name for name in vars(Hooks) if name.startswith("blackhole_sync_")
)
