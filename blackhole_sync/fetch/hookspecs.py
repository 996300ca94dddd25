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
    "ServerFactory",
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


class PatchCodecLike(Protocol):
    name: str

    def diff(self, old: bytes, new: bytes) -> bytes: ...

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes: ...


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
        falls back to a full download.

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
