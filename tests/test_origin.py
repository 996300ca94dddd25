"""The origin (``serve REPO``) in one process over the in-memory transport: it publishes each
published release's blobs to the publishing peer transports and announces each new index it
finds on disk -- only with the index key, and only what a node's gate accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from blackhole_sync import (
    TRANSPORT_API,
    Announcement,
    Envelope,
    PeerMessage,
    PrivateKey,
    Repository,
    TransportSpec,
    Verdict,
    hookimpl,
    make_plugin_manager,
)
from blackhole_sync.origin import run_origin
from blackhole_sync.testing import MemoryHub, MemoryTransport

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the HTTP server is aiohttp


class HubPlugin:
    def __init__(self, hub: MemoryHub, store: dict[str, bytes]) -> None:
        self.hub, self.store = hub, store

    @hookimpl
    def blackhole_sync_transports(self) -> list[TransportSpec]:
        def factory(**options: Any) -> MemoryTransport:
            return MemoryTransport(hub=self.hub, store=self.store, peer_id="origin", **options)

        spec = TransportSpec(
            "memory", factory, api=TRANSPORT_API, backends={"asyncio"}, schemes={"memory"}
        )
        return [spec]


def publish(repo: Repository, key: PrivateKey, tmp: Path, version: str) -> bytes:
    src = tmp / version / "service"
    src.parent.mkdir()
    data = f"service {version}\n".encode() * 100
    src.write_bytes(data)
    repo.build_release(version, [src], delta_from=[])
    repo.sign_release(version, key)
    repo.publish_release(version, key)
    return data


async def serve(repo: Path, hub: MemoryHub, store: dict[str, bytes], **kwargs: Any) -> Any:
    from blackhole_sync_http import plugin as http_plugin

    plugins = make_plugin_manager()
    plugins.register(http_plugin, name="http")
    plugins.register(HubPlugin(hub, store))
    lines: list[str] = []
    return lines, lambda: run_origin(
        repo, plugins=plugins, host="127.0.0.1", port=0, ready=lines.append, poll=0.05, **kwargs
    )


@pytest.mark.anyio
async def test_the_origin_seeds_each_release_and_announces_each_new_index(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    repo = Repository.init(
        tmp_path / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key.public_key,
        sign_with=[key],
    )  # fmt: skip
    first = publish(repo, key, tmp_path, "1.0.0")
    hub, store = MemoryHub(), {}
    heard: list[PeerMessage] = []

    def listen(message: PeerMessage) -> Verdict:
        heard.append(message)
        return Verdict.ACCEPT

    lines, origin = await serve(repo.path, hub, store, index_key=key)
    async with (
        anyio.create_task_group() as tg,
        MemoryTransport(hub=hub, peer_id="node", message_validator=listen),
    ):
        tg.start_soon(origin)
        with anyio.fail_after(20):
            while not any(m.kind == "announcement" for m in heard):  # noqa: ASYNC110 - a test polls what another task does
                await anyio.sleep(0.05)
        assert lines[0].startswith("http://127.0.0.1:")
        assert first in store.values()  # the published blob went to the publishing transport
        publish(repo, key, tmp_path, "1.1.0")  # another process publishes
        with anyio.fail_after(20):
            while len([m for m in heard if m.kind == "announcement"]) < 2:  # noqa: ASYNC110 - a test polls what another task does
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    versions = [
        Envelope.from_bytes(m.payload).parse(Announcement.from_dict).index_version
        for m in heard
        if m.kind == "announcement"
    ]
    assert versions == [2, 3]


@pytest.mark.anyio
async def test_without_the_index_key_the_origin_announces_nothing(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    repo = Repository.init(
        tmp_path / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key.public_key,
        sign_with=[key],
    )  # fmt: skip
    data = publish(repo, key, tmp_path, "1.0.0")
    hub, store = MemoryHub(), {}
    heard: list[PeerMessage] = []
    _lines, origin = await serve(repo.path, hub, store)
    async with (
        anyio.create_task_group() as tg,
        MemoryTransport(
            hub=hub, peer_id="node", message_validator=lambda m: heard.append(m) or Verdict.ACCEPT
        ),
    ):
        tg.start_soon(origin)
        with anyio.fail_after(20):
            while data not in store.values():  # noqa: ASYNC110 - a test polls what another task does
                await anyio.sleep(0.05)
        await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    assert heard == []
