"""The process's embedded node, shared by every transport instance that needs it.

Kubo keeps its nodes in process-global state, so a process runs at most one embedded node.
Yet a process may hold several transport instances: ``node run`` has the agent's peer network
(announcements, pinning) and, each cycle, an update manager's transport pool (fetching by
CID). They share one node through a lease: the first to ask starts it, later ones wait for it,
the last to let go stops it. Asking for the node of another repository while one runs is an
error (the process would need two).

A transport given no ``state_dir`` gets a node on a temporary repository, removed when the
last lease ends (or, when a node already runs, that node).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import anyio

from blackhole_sync.errors import ConfigurationError, SourceUnavailableError

from ._config import EmbeddedConfig
from ._embedded import EmbeddedNode
from ._errors import ConfigError, IpfsError

__all__ = ["EmbeddedLease", "acquire_embedded"]

_lock = threading.Lock()
_active: _Shared | None = None


class EmbeddedLease:
    """One use of the process's embedded node; :meth:`release` it exactly once."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._released = False

    @property
    def node(self) -> EmbeddedNode:
        node = self._shared.node
        assert node is not None
        return node

    @property
    def repo(self) -> Path:
        return self._shared.repo

    async def release(self) -> None:
        """Give the node back; the last lease stops it (idempotent)."""
        if self._released:
            return
        self._released = True
        await self._shared.release()


class _Shared:
    def __init__(self, repo: Path, temporary: bool) -> None:
        self.repo = repo
        self.temporary = temporary
        self.node: EmbeddedNode | None = None
        self.users = 1
        self.ready = anyio.Event()
        self.error: BaseException | None = None

    async def release(self) -> None:
        global _active
        with _lock:
            self.users -= 1
            last = self.users == 0
            if last and _active is self:
                _active = None
        if last:
            with anyio.CancelScope(shield=True):
                if self.node is not None:
                    await self.node.aclose()
                if self.temporary:
                    await anyio.to_thread.run_sync(
                        lambda: shutil.rmtree(self.repo, ignore_errors=True)
                    )


async def acquire_embedded(
    repo: Path | None, make_config: Callable[[Path], EmbeddedConfig]
) -> EmbeddedLease:
    """A lease on the process's embedded node on ``repo`` (None: any running node, else one
    on a temporary repo), started with ``make_config(repo)`` if it is not running yet.

    Raises :class:`ConfigurationError` when a node on another repo runs, and
    :class:`SourceUnavailableError` when the node cannot start.
    """
    global _active
    with _lock:
        shared = _active
        if shared is not None:
            if repo is not None and shared.repo != repo:
                raise ConfigurationError(
                    f"an embedded IPFS node on {shared.repo} already runs in this process; "
                    f"one on {repo} cannot run beside it (one embedded node per process)"
                )
            shared.users += 1
            creator = False
        else:
            temporary = repo is None
            path = Path(tempfile.mkdtemp(prefix="bhs-ipfs-repo-")) if repo is None else repo
            shared = _active = _Shared(path, temporary)
            creator = True
    if not creator:
        await shared.ready.wait()
        if shared.error is not None or shared.node is None:
            await shared.release()
            raise SourceUnavailableError(f"the embedded IPFS node did not start: {shared.error}")
        return EmbeddedLease(shared)
    try:
        node = EmbeddedNode(make_config(shared.repo))
        await node.start()
    except BaseException as exc:
        shared.error = exc
        shared.ready.set()
        await shared.release()
        if isinstance(exc, ConfigError):
            raise ConfigurationError(f"[ipfs]: {exc}") from exc
        if isinstance(exc, IpfsError):
            raise SourceUnavailableError(f"the embedded IPFS node did not start: {exc}") from exc
        raise
    shared.node = node
    shared.ready.set()
    return EmbeddedLease(shared)
