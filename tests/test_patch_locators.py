"""Delta patches travel like full artifacts: the builder signs their locators (and writes
their companion files) into the manifest, and a node asks a patch's locators -- a swarm --
before its own sources, every byte still checked against the patch's signed sha256.

A stand-in "swarm" transport here (locator kind ``swarm``, tried before the sources); the
BitTorrent plugin's own tests run the same path over real libtorrent sessions
(``blackhole_sync_plugins/bittorrent/tests/test_bt_delta.py``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from blackhole_sync import (
    TRANSPORT_API,
    PrivateKey,
    Repository,
    TransportSpec,
    hookimpl,
    make_plugin_manager,
)
from blackhole_sync.documents import DeltaRecord, MetaFile
from blackhole_sync.errors import DownloadError, FormatError
from blackhole_sync.fetch import CAP_FETCH, CAP_LOCATE, BaseTransport, Locator, Sink
from blackhole_sync.manager import UpdateManager, init_node

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the signed field ----------------------------------------------------------------------------


def _record(**extra: Any) -> dict[str, Any]:
    return {
        "artifact": "app",
        "from_version": "1.0.0",
        "source": MetaFile(10, {"sha256": "a" * 64}).to_dict(),
        "patch": MetaFile(5, {"sha256": "b" * 64}).to_dict(),
        "output_length": 12,
        "codec": "hdiffpatch",
        **extra,
    }


def test_a_delta_record_carries_locators_parsed_as_strictly_as_an_artifacts() -> None:
    plain = DeltaRecord.from_dict(_record())
    assert plain.locators == ()
    assert "locators" not in plain.to_dict()  # absent stays absent: old manifests round-trip

    locators = [{"kind": "btih", "value": "c" * 40}, {"kind": "btmh", "value": "d" * 64}]
    record = DeltaRecord.from_dict(_record(locators=locators))
    assert [dict(x) for x in record.locators] == locators
    assert record.extra == {}
    assert record.to_dict()["locators"] == locators
    assert DeltaRecord.from_dict(record.to_dict()) == record

    for bad in (
        None,  # null: omit the field
        {"kind": "btih", "value": "c" * 40},  # not a list
        [{"kind": "btih"}],  # no value
        [{"kind": "btih", "value": "c" * 40, "x": 1}],  # unknown locator field
        [{"kind": "b/tih", "value": "c"}],  # not a name
        [{"kind": "k" * 33, "value": "c"}],  # kind longer than 32
        [{"kind": "btih", "value": "v" * 4097}],  # value longer than 4096
        [{"kind": "btih", "value": 7}],
        [{"kind": "btih", "value": str(i)} for i in range(65)],  # more than 64
    ):
        with pytest.raises(FormatError):
            DeltaRecord.from_dict(_record(locators=bad))


# -- a swarm stand-in ------------------------------------------------------------------------------


class Swarm:
    """What the stand-in swarm holds (locator value -> bytes) and what it was asked."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.asked: list[str] = []
        self.lie: dict[str, bytes] = {}  # locator value -> other bytes it serves instead


class SwarmTransport(BaseTransport):
    name: ClassVar[str] = "swarm"
    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_FETCH, CAP_LOCATE})
    swarm: ClassVar[Swarm]

    def locate(self, path: Path) -> list[Locator]:
        data = Path(path).read_bytes()
        value = "s-" + sha(data)[:32]
        self.swarm.content[value] = data
        return [Locator("swarm", value)]

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        self.swarm.asked.append(locator.value)
        data = self.swarm.lie.get(locator.value, self.swarm.content.get(locator.value))
        if data is None:
            raise DownloadError(f"{locator}: no peer has it")
        await sink.write(data[start:max_length])


def companions(path: Path) -> Mapping[str, bytes]:
    return {f"swarm/{Path(path).name}.meta": b"companion of " + Path(path).name.encode()}


class SwarmPlugin:
    def __init__(self, swarm: Swarm) -> None:
        SwarmTransport.swarm = swarm

    @hookimpl
    def blackhole_sync_transports(self) -> list[TransportSpec]:
        return [
            TransportSpec(
                "swarm",
                SwarmTransport,
                api=TRANSPORT_API,
                backends={"asyncio", "trio"},
                locator_kinds={"swarm"},
                before_sources=True,
                companions=companions,
            )
        ]


def plugins(swarm: Swarm) -> Any:
    pm = make_plugin_manager()  # the built-in local transport serves the repository directory
    pm.register(SwarmPlugin(swarm))
    return pm


def build(tmp: Path, swarm: Swarm) -> tuple[Repository, bytes, bytes, Any]:
    key = PrivateKey.generate()
    repo = Repository.init(
        tmp / "repo", root_keys=[key.public_key], root_threshold=1,
        release_keys=[key.public_key], release_threshold=1, index_key=key, sign_with=[key],
    )  # fmt: skip
    rnd = random.Random(7)
    v1 = rnd.randbytes(2 * MiB)
    v2 = bytearray(v1)
    for at in range(0, len(v2), 256 * 1024):
        v2[at : at + 4096] = rnd.randbytes(4096)
    manifests = []
    for version, data, delta in (("1.0.0", v1, []), ("1.1.0", bytes(v2), ["1.0.0"])):
        app = tmp / version / "app"
        app.parent.mkdir()
        app.write_bytes(data)
        manifests.append(
            repo.build_release(version, [app], delta_from=delta, plugins=plugins(swarm))
        )
        repo.sign_release(version, key)
        repo.publish_release(version, key)
    return repo, v1, bytes(v2), manifests[1]


def update(node: Path, swarm: Swarm, version: str) -> Any:
    async def run() -> Any:
        async with UpdateManager(node, plugins=plugins(swarm)) as manager:
            return await manager.update(version)

    return anyio.run(run)


def test_the_builder_signs_each_patchs_locators_and_publishes_its_companions(
    tmp_path: Path,
) -> None:
    swarm = Swarm()
    repo, _v1, _v2, manifest = build(tmp_path, swarm)
    [artifact] = manifest.artifacts
    [record] = manifest.deltas
    assert record.patch.length < artifact.blob.length // 2
    assert [dict(x) for x in record.locators] == [
        {"kind": "swarm", "value": "s-" + record.patch.sha256[:32]}
    ]
    assert [dict(x) for x in artifact.locators] == [
        {"kind": "swarm", "value": "s-" + artifact.blob.sha256[:32]}
    ]
    # signed: the published manifest (as nodes read it) carries them
    envelope, _state = repo.release_envelope("1.1.0")
    assert envelope.signed["deltas"][0]["locators"] == [dict(x) for x in record.locators]
    # the companions of the patch and of the artifact are served next to the blobs
    for blob in (record.patch.sha256, artifact.blob.sha256):
        assert (
            repo.path / "swarm" / f"{blob}.meta"
        ).read_bytes() == b"companion of " + blob.encode()


def test_a_node_fetches_a_patch_from_its_locators_before_its_sources(tmp_path: Path) -> None:
    swarm = Swarm()
    repo, _v1, v2, manifest = build(tmp_path, swarm)
    [record] = manifest.deltas
    node = tmp_path / "node"
    init_node(node, root_bytes=(repo.path / "root.json").read_bytes(), sources=[str(repo.path)])
    assert update(node, swarm, "1.0.0").method == "full"
    swarm.asked.clear()
    result = update(node, swarm, "1.1.0")
    assert (result.method, result.bytes_fetched) == ("delta", record.patch.length)
    assert swarm.asked == [record.locators[0]["value"]]  # the patch, from the swarm
    assert (node / "current" / "app").read_bytes() == v2
    assert (node / "blobs" / record.patch.sha256).is_file()  # kept for its peers


def test_a_patch_locator_that_lies_is_refused_and_the_sources_serve_the_patch(
    tmp_path: Path,
) -> None:
    swarm = Swarm()
    repo, _v1, v2, manifest = build(tmp_path, swarm)
    [record] = manifest.deltas
    value = record.locators[0]["value"]
    real = swarm.content[value]
    swarm.lie[value] = bytes(b ^ 0xFF for b in real[:1000]) + real[1000:]  # same length
    node = tmp_path / "node"
    init_node(node, root_bytes=(repo.path / "root.json").read_bytes(), sources=[str(repo.path)])
    update(node, swarm, "1.0.0")
    swarm.asked.clear()
    result = update(node, swarm, "1.1.0")
    assert swarm.asked == [value]  # asked first, its bytes refused (sha256), then the source
    assert result.method == "delta"
    assert (node / "current" / "app").read_bytes() == v2
    assert sha((node / "blobs" / record.patch.sha256).read_bytes()) == record.patch.sha256
