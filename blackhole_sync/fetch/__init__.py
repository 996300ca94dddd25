"""Getting bytes: the versioned transport protocol, the plugin host and its hooks, the
transport pool and repository client, and the local-directory transport.

Names load lazily (PEP 562): importing the package costs nothing until a name
is used, so a command imports only the modules it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module of this package that provides it
_EXPORTS: dict[str, str] = {
    "BaseTransport": "transport",
    "CAPABILITIES": "transport",
    "CAP_ANNOUNCE": "transport",
    "CAP_FETCH": "transport",
    "CAP_LOCATE": "transport",
    "CAP_PUBLISH": "transport",
    "CAP_QUERY": "transport",
    "CAP_RANGE": "transport",
    "CAP_READ_RANGE": "transport",
    "CAP_SEED": "transport",
    "CAP_SUBSCRIBE": "transport",
    "ClientLimits": "client",
    "DEFAULT_PLUGINS": "plugins",
    "FetchStats": "client",
    "GuardedTransport": "transport",
    "HOOK_NAMES": "hookspecs",
    "HealthCheck": "hookspecs",
    "Hooks": "hookspecs",
    "LOCAL_TRANSPORT_SPEC": "local",
    "LocalTransport": "local",
    "Locator": "transport",
    "MessageValidator": "transport",
    "NotificationChannel": "hookspecs",
    "PROJECT": "hookspecs",
    "PatchCodecLike": "hookspecs",
    "RemoteSigner": "hookspecs",
    "SignerProvider": "hookspecs",
    "PeerMessage": "transport",
    "PluginFailure": "plugins",
    "PluginHost": "plugins",
    "ProgressEvent": "transport",
    "RepositoryClient": "client",
    "STANDARD_OPTIONS": "transport",
    "ServerFactory": "hookspecs",
    "Sink": "transport",
    "TRANSPORT_API": "transport",
    "Transport": "transport",
    "TransportPool": "client",
    "TransportSpec": "transport",
    "UpdateEvent": "hookspecs",
    "Verdict": "transport",
    "VerifyingSink": "transport",
    "fetch_with_fallback": "transport",
    "hookimpl": "hookspecs",
    "hookspec": "hookspecs",
    "join_url": "transport",
    "make_plugin_manager": "plugins",
    "normalize_source": "client",
    "path_to_url": "local",
    "read_range": "transport",
    "url_to_path": "local",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static names for type checkers
    from .client import (
        ClientLimits as ClientLimits,
        FetchStats as FetchStats,
        RepositoryClient as RepositoryClient,
        TransportPool as TransportPool,
        normalize_source as normalize_source,
    )
    from .hookspecs import (
        HOOK_NAMES as HOOK_NAMES,
        PROJECT as PROJECT,
        HealthCheck as HealthCheck,
        Hooks as Hooks,
        NotificationChannel as NotificationChannel,
        PatchCodecLike as PatchCodecLike,
        RemoteSigner as RemoteSigner,
        ServerFactory as ServerFactory,
        SignerProvider as SignerProvider,
        UpdateEvent as UpdateEvent,
        hookimpl as hookimpl,
        hookspec as hookspec,
    )
    from .local import (
        LOCAL_TRANSPORT_SPEC as LOCAL_TRANSPORT_SPEC,
        LocalTransport as LocalTransport,
        path_to_url as path_to_url,
        url_to_path as url_to_path,
    )
    from .plugins import (
        DEFAULT_PLUGINS as DEFAULT_PLUGINS,
        PluginFailure as PluginFailure,
        PluginHost as PluginHost,
        make_plugin_manager as make_plugin_manager,
    )
    from .transport import (
        CAP_ANNOUNCE as CAP_ANNOUNCE,
        CAP_FETCH as CAP_FETCH,
        CAP_LOCATE as CAP_LOCATE,
        CAP_PUBLISH as CAP_PUBLISH,
        CAP_QUERY as CAP_QUERY,
        CAP_RANGE as CAP_RANGE,
        CAP_READ_RANGE as CAP_READ_RANGE,
        CAP_SEED as CAP_SEED,
        CAP_SUBSCRIBE as CAP_SUBSCRIBE,
        CAPABILITIES as CAPABILITIES,
        STANDARD_OPTIONS as STANDARD_OPTIONS,
        TRANSPORT_API as TRANSPORT_API,
        BaseTransport as BaseTransport,
        GuardedTransport as GuardedTransport,
        Locator as Locator,
        MessageValidator as MessageValidator,
        PeerMessage as PeerMessage,
        ProgressEvent as ProgressEvent,
        Sink as Sink,
        Transport as Transport,
        TransportSpec as TransportSpec,
        Verdict as Verdict,
        VerifyingSink as VerifyingSink,
        fetch_with_fallback as fetch_with_fallback,
        join_url as join_url,
        read_range as read_range,
    )
