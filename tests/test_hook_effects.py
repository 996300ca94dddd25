"""Every hook has a call site and its result changes what happens.

``EFFECTS`` maps each hook in ``HOOK_NAMES`` to a check that registers a plugin implementing
it, drives the real code path that calls it, and asserts on the outcome (a refused install, a
rollback, a migrated database, a transport used...). A hook added later without a check fails
``test_every_hook_has_an_effect_check`` until one is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from blackhole_sync import (
    HOOK_NAMES,
    TRANSPORT_API,
    BaseTransport,
    Envelope,
    HealthCheckError,
    LocalTransport,
    Locator,
    Migration,
    NodeStatusDoc,
    PrivateKey,
    Repository,
    SandboxError,
    Sink,
    TransportSpec,
    UpdateManager,
    hookimpl,
    init_node,
    make_plugin_manager,
)


class World:
    """A repository with releases 1.0.0 and 1.1.0 and a fresh node per check."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = PrivateKey.generate()
        self.repo = Repository.init(
            tmp / "repo", root_keys=[self.key.public_key], root_threshold=1,
            release_keys=[self.key.public_key], release_threshold=1,
            index_key=self.key.public_key, sign_with=[self.key],
        )  # fmt: skip
        for version in ("1.0.0", "1.1.0"):
            src = tmp / version / "service"
            src.parent.mkdir()
            src.write_bytes(f"service {version}\n".encode() * 500)
            self.repo.build_release(version, [src], delta_from=[])
            self.repo.sign_release(version, self.key)
            self.repo.publish_release(version, self.key)

    def node(self, name: str, source: str | None = None) -> Path:
        node = self.tmp / name
        init_node(
            node,
            root_bytes=(self.repo.path / "root.json").read_bytes(),
            sources=[source or str(self.repo.path)],
        )
        return node

    def update(self, node: Path, plugin: object, version: str | None = None) -> Any:
        plugins = make_plugin_manager()
        plugins.register(plugin)

        async def run() -> Any:
            async with UpdateManager(node, plugins=plugins) as manager:
                return await manager.update(version)

        return anyio.run(run)


def current(node: Path) -> str | None:
    link = node / "current"
    return link.resolve().name if link.is_symlink() else None


# -- one check per hook ------------------------------------------------------------------------


def effect_transports(world: World) -> None:
    calls: list[str] = []

    class Mirror(BaseTransport):
        """A third-party scheme ``mirror+file://`` over the local transport."""

        name: ClassVar[str] = "mirror"

        async def fetch(
            self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0
        ) -> None:
            calls.append(locator.value)
            inner = Locator.url("file://" + locator.value[len("mirror+file://") :])
            async with LocalTransport() as local:
                await local.fetch(inner, sink, max_length=max_length, start=start)

    class Plugin:
        @hookimpl
        def blackhole_sync_transports(self) -> Sequence[TransportSpec]:
            spec = TransportSpec(
                "mirror", Mirror, api=TRANSPORT_API, backends={"asyncio", "trio"},
                schemes={"mirror+file"},
            )  # fmt: skip
            return [spec]

    node = world.node("transports", "mirror+file://" + str(world.repo.path))
    world.update(node, Plugin(), "1.0.0")
    assert current(node) == "1.0.0"
    assert any(c.endswith("index.json") for c in calls) and any("/blobs/" in c for c in calls)


def effect_server(world: World) -> None:
    from blackhole_sync.origin import find_server

    served: list[Path] = []

    class Server:
        async def serve(self, root: Path, host: str, port: int, **kwargs: Any) -> None:
            served.append(root)

    class Plugin:
        @hookimpl
        def blackhole_sync_server(self) -> Server:
            return Server()

    plugins = make_plugin_manager()
    plugins.register(Plugin())
    server = find_server(plugins)
    anyio.run(lambda: server.serve(world.repo.path, "127.0.0.1", 0, ready=print))
    assert served == [world.repo.path]


class SubstituteCodec:
    """A toy plugin codec: the patch names one word that changed everywhere (``a`` -> ``b``).

    Module level so the node's apply worker can unpickle it (it imports this module).
    """

    name = "substitute"

    def diff(self, old: bytes, new: bytes) -> bytes:
        pairs = {(a, b) for a, b in zip(old.split(), new.split(), strict=False) if a != b}
        if len(pairs) == 1:
            a, b = pairs.pop()
            if old.replace(a, b) == new:
                return b"S" + a + b"\0" + b
        return b"F" + new

    def apply(self, old: bytes, patch: bytes, *, max_output: int) -> bytes:
        from blackhole_sync.errors import PatchFormatError, PatchOutputError

        if patch[:1] == b"F":
            out_len = len(patch) - 1
        elif patch[:1] == b"S" and b"\0" in patch:
            a, b = patch[1:].split(b"\0", 1)
            if not a:
                raise PatchFormatError("empty word")
            out_len = len(old) + old.count(a) * (len(b) - len(a))
        else:
            raise PatchFormatError("not a substitute patch")
        if out_len > max_output:
            raise PatchOutputError("the patch makes more than the allowed output")
        return patch[1:] if patch[:1] == b"F" else old.replace(a, b)


def effect_patch_codecs(world: World) -> None:
    from blackhole_sync.errors import PatchOutputError

    class Plugin:
        @hookimpl
        def blackhole_sync_patch_codecs(self) -> Sequence[SubstituteCodec]:
            return [SubstituteCodec()]

    plugins = make_plugin_manager()
    plugins.register(Plugin())
    (world.tmp / "codecs").mkdir()
    own = World(world.tmp / "codecs")  # a repository of its own: 1.0.0 and 1.1.0
    src = own.tmp / "1.2.0" / "service"
    src.parent.mkdir()
    src.write_bytes(b"service 1.2.0\n" * 500)
    # built: the plugin codec is offered to the selection and wins (12 bytes vs HDiffPatch's)
    manifest = own.repo.build_release("1.2.0", [src], delta_from=["1.1.0"], plugins=plugins)
    [record] = manifest.deltas
    assert (record.codec, record.patch.length) == ("substitute", 12)
    own.repo.sign_release("1.2.0", own.key)
    own.repo.publish_release("1.2.0", own.key)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(Path(__file__).parent))  # the worker unpickles the codec
        node = own.node("with-codec")
        own.update(node, Plugin(), "1.1.0")
        result = own.update(node, Plugin(), "1.2.0")
    # applied: on the node, by the plugin codec, in the bounded apply worker
    assert (result.method, result.bytes_fetched) == ("delta", 12)
    assert (node / "current" / "service").read_bytes() == src.read_bytes()
    with pytest.raises(PatchOutputError):
        SubstituteCodec().apply(b"a b", b"Sa\0bbbb", max_output=3)

    class Nothing:
        @hookimpl
        def blackhole_sync_update_event(self, event: Any) -> None:
            pass

    # a node without the codec falls back to the full download, and says why
    bare = own.node("without-codec")
    own.update(bare, Nothing(), "1.1.0")
    result = own.update(bare, Nothing(), "1.2.0")
    assert result.method == "full" and "substitute" in result.method_reason
    assert (bare / "current" / "service").read_bytes() == src.read_bytes()


def effect_health_checks(world: World) -> None:
    class Failing:
        name = "always-unhealthy"

        async def check(self, node_dir: Path, version: str) -> str | None:
            return "the service does not answer" if version == "1.1.0" else None

    class Plugin:
        @hookimpl
        def blackhole_sync_health_checks(self, node_dir: Path) -> Sequence[Failing]:
            return [Failing()]

    node = world.node("health")
    world.update(node, Plugin(), "1.0.0")
    with pytest.raises(HealthCheckError, match="does not answer"):
        world.update(node, Plugin(), "1.1.0")
    assert current(node) == "1.0.0"  # rolled back


def effect_self_tests(world: World) -> None:
    seen: list[tuple[Path, str]] = []

    class Refuses:
        name = "plugin-self-test"

        async def check(self, node_dir: Path, version: str) -> str | None:
            return "refuses 1.1.0" if version == "1.1.0" else None

    class Plugin:
        @hookimpl
        def blackhole_sync_self_tests(
            self, node_dir: Path, staged: Path, version: str
        ) -> Sequence[Refuses]:
            seen.append((staged, version))
            assert (staged / "service").is_file()  # the staged tree, before the switch
            return [Refuses()]

    node = world.node("selftest")
    world.update(node, Plugin(), "1.0.0")
    with pytest.raises(SandboxError, match=r"refuses 1\.1\.0"):
        world.update(node, Plugin(), "1.1.0")
    assert current(node) == "1.0.0"  # never switched
    assert [v for _, v in seen] == ["1.0.0", "1.1.0"]


def effect_migrations(world: World) -> None:
    class Plugin:
        @hookimpl
        def blackhole_sync_migrations(
            self, from_version: str | None, to_version: str
        ) -> Sequence[Migration]:
            if to_version != "1.1.0":
                return []
            return [Migration("plugin-table", 0, 1, "CREATE TABLE from_plugin (id INTEGER)")]

    node = world.node("migrations")
    world.update(node, Plugin(), "1.0.0")
    with sqlite3.connect(node / "data" / "node.db") as conn:
        conn.execute("CREATE TABLE peers (id TEXT)")
    conn.close()
    world.update(node, Plugin(), "1.1.0")
    conn = sqlite3.connect(node / "data" / "node.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert "from_plugin" in tables


def effect_notification_channels(world: World) -> None:
    events: list[tuple[str, str | None]] = []

    class Pager:
        name = "pager"

        async def notify(self, event: Any) -> None:
            events.append((event.kind, event.version))

    class Plugin:
        @hookimpl
        def blackhole_sync_notification_channels(self, node_config: Any) -> Sequence[Pager]:
            return [Pager()]

    node = world.node("notify")
    config = (node / "config.toml").read_text()
    config = config.replace('mode = "automatic"', 'mode = "manual"')
    config = config.replace('notification_channels = ["log"]', 'notification_channels = ["pager"]')
    (node / "config.toml").write_text(config)
    plugins = make_plugin_manager()
    plugins.register(Plugin())

    async def run() -> None:
        async with UpdateManager(node, plugins=plugins) as manager:
            await manager.sync_with_network()

    anyio.run(run)
    assert ("available", "1.1.0") in events


def effect_restart_service(world: World) -> None:
    restarted: list[str] = []

    class Plugin:
        @hookimpl
        def blackhole_sync_restart_service(self, node_dir: Path, version: str) -> bool | None:
            restarted.append(version)
            if version == "1.1.0":
                raise RuntimeError("the service manager refused")
            return True

    node = world.node("restart")
    world.update(node, Plugin(), "1.0.0")
    with pytest.raises(HealthCheckError, match="refused"):
        world.update(node, Plugin(), "1.1.0")
    assert restarted == ["1.0.0", "1.1.0"] and current(node) == "1.0.0"


def effect_broadcast_status(world: World) -> None:
    received: list[bytes] = []

    class Plugin:
        @hookimpl
        def blackhole_sync_broadcast_status(self, status: Any, signed: bytes) -> None:
            received.append(signed)

    node = world.node("status")
    world.update(node, Plugin(), "1.0.0")
    plugins = make_plugin_manager()
    plugins.register(Plugin())

    async def run() -> None:
        async with UpdateManager(node, plugins=plugins) as manager:
            await manager.broadcast_update_status()

    anyio.run(run)
    [signed] = received
    doc = Envelope.from_bytes(signed).parse(NodeStatusDoc.from_dict)
    assert doc.current_version == "1.0.0"


def effect_protocol_versions(world: World) -> None:
    from blackhole_sync.documents import Compatibility
    from blackhole_sync.errors import IncompatibleReleaseError

    class Runs:
        def __init__(self, *protocols: int) -> None:
            self.protocols = list(protocols)

        @hookimpl
        def blackhole_sync_protocol_versions(self, node_dir: Path) -> Sequence[int]:
            return self.protocols

    (world.tmp / "protocols").mkdir()
    own = World(world.tmp / "protocols")
    src = own.tmp / "2.0.0" / "service"
    src.parent.mkdir()
    src.write_bytes(b"service 2.0.0\n" * 500)
    own.repo.build_release(
        "2.0.0", [src], delta_from=[], compatibility=Compatibility(protocol_versions=(5,))
    )
    own.repo.sign_release("2.0.0", own.key)
    own.repo.publish_release("2.0.0", own.key)
    node = own.node("protocols")
    own.update(node, Runs(3), "1.1.0")
    with pytest.raises(IncompatibleReleaseError, match="speaks protocols 5, this node runs 3"):
        own.update(node, Runs(3), "2.0.0")  # the host runs protocol 3 only: refused
    assert current(node) == "1.1.0"
    own.update(node, Runs(4, 5), "2.0.0")  # the host runs 5 too
    assert current(node) == "2.0.0"


def effect_metrics(world: World) -> None:
    class Measures:
        @hookimpl
        def blackhole_sync_metrics(self, node_dir: Path, version: str) -> dict[str, float]:
            return {"latency_ms": 10.0 if version == "1.0.0" else 95.0}

    node = world.node("metrics")
    text = (node / "config.toml").read_text()
    for default, value in (
        ("samples = 5", "samples = 2"),
        ("watch_seconds = 60", "watch_seconds = 0"),
    ):
        text = text.replace(default, value)
    text = text.replace("[regression.thresholds]\n", "[regression.thresholds]\nlatency_ms = 5000\n")
    (node / "config.toml").write_text(text)
    world.update(node, Measures(), "1.0.0")
    with pytest.raises(HealthCheckError, match="latency_ms: 10 -> 95"):
        world.update(node, Measures(), "1.1.0")  # the plugin's numbers show a regression
    assert current(node) == "1.0.0"  # rolled back


def effect_update_event(world: World) -> None:
    kinds: list[str] = []

    class Plugin:
        @hookimpl
        def blackhole_sync_update_event(self, event: Any) -> None:
            kinds.append(event.kind)

    world.update(world.node("events"), Plugin(), "1.0.0")
    assert {"checking", "downloading", "installed"} <= set(kinds)


def effect_signers(world: World) -> None:
    """A release signed by a key a plugin holds (an HSM stand-in) installs on a node."""
    import shutil

    from blackhole_sync import plugin_signer

    signed: list[bytes] = []

    class HeldKey:
        """The plugin's key: blackhole-sync sees its public half and its signatures only."""

        def __init__(self, key: PrivateKey) -> None:
            self._key = key
            self.public_key = key.public_key.raw

        def sign(self, message: bytes) -> bytes:
            signed.append(message)
            return bytes.fromhex(self._key.sign(message).sig)

    class Provider:
        name = "vault"

        def signer(self, key_id: str) -> HeldKey:
            if key_id != "release-1":
                raise LookupError(key_id)
            return HeldKey(world.key)

    class Plugin:
        @hookimpl
        def blackhole_sync_signers(self) -> Sequence[Provider]:
            return [Provider()]

    plugins = make_plugin_manager()
    plugins.register(Plugin())
    signer = plugin_signer("plugin:vault:release-1", plugins)
    assert signer.keyid == world.key.keyid
    repo_dir = world.tmp / "signer-repo"
    shutil.copytree(world.repo.path, repo_dir, symlinks=True)
    repo = Repository.open(repo_dir)
    src = world.tmp / "1.2.0" / "service"
    src.parent.mkdir()
    src.write_bytes(b"service 1.2.0\n" * 500)
    repo.build_release("1.2.0", [src], delta_from=[])
    assert repo.sign_release("1.2.0", signer)
    repo.publish_release("1.2.0", world.key)
    assert signed, "the plugin's key did not sign"
    node = world.tmp / "signers"
    init_node(node, root_bytes=repo.root_path().read_bytes(), sources=[str(repo_dir)])
    world.update(node, object(), "1.2.0")
    assert current(node) == "1.2.0"


def effect_chain_height(world: World) -> None:
    """A locked-in protocol release waits below the activation height and installs at it."""
    import datetime as dt

    from coord_world import CoordWorld, current

    from blackhole_sync import Proposal

    cw = CoordWorld(world.tmp / "chain-height")
    cw.publish("1.0.0")
    cw.publish("2.0.0", update_type="protocol")
    node = cw.node("node")
    cw.validators([node])
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=60)
    cw.govern(Proposal("p", "2.0.0", 2, 7500, start, start + dt.timedelta(seconds=30),
                       start + dt.timedelta(days=1), 0, cw.digest("2.0.0"), 600, 100))  # fmt: skip
    height = {"now": 99}

    class Chain:
        @hookimpl
        def blackhole_sync_chain_height(self, node_dir: Path) -> int:
            return height["now"]

    plugins = make_plugin_manager()
    plugins.register(Chain())

    async def cycle() -> Any:
        async with UpdateManager(node, plugins=plugins) as manager:
            await manager.check_for_updates()
            coordinator = manager.coordinator()
            if not coordinator.trackers["p"].votes:
                coordinator.vote("p")
            await coordinator.tick(None, None)  # the agent's tick: evaluate, activate
            return await manager.sync_with_network()

    anyio.run(cycle)
    assert current(node) == "1.0.0"  # locked in at height 99: waiting for 100
    height["now"] = 100
    anyio.run(cycle)
    assert current(node) == "2.0.0"


def effect_protocol_translators(world: World) -> None:
    """A protocol-1 message reaches a node on protocol 2 through the plugin's translator."""

    class Rename:
        from_version, to_version = 1, 2

        def translate(self, message: Any) -> Any:
            return {"height": message["block"]}

    class Plugin:
        @hookimpl
        def blackhole_sync_protocol_translators(self) -> list[Any]:
            return [Rename()]

    node = world.node("translators")

    async def translate(plugin: object | None) -> Any:
        plugins = make_plugin_manager()
        if plugin is not None:
            plugins.register(plugin)
        async with UpdateManager(node, plugins=plugins) as manager:
            return manager.compatibility_manager().translate_protocol_message({"block": 7}, 1, 2)

    assert anyio.run(translate, Plugin()) == {"height": 7}
    with pytest.raises(ValueError, match="no translator chain"):
        anyio.run(translate, None)


EFFECTS: dict[str, Callable[[World], None]] = {
    "blackhole_sync_transports": effect_transports,
    "blackhole_sync_server": effect_server,
    "blackhole_sync_patch_codecs": effect_patch_codecs,
    "blackhole_sync_health_checks": effect_health_checks,
    "blackhole_sync_self_tests": effect_self_tests,
    "blackhole_sync_migrations": effect_migrations,
    "blackhole_sync_notification_channels": effect_notification_channels,
    "blackhole_sync_restart_service": effect_restart_service,
    "blackhole_sync_broadcast_status": effect_broadcast_status,
    "blackhole_sync_update_event": effect_update_event,
    "blackhole_sync_protocol_versions": effect_protocol_versions,
    "blackhole_sync_metrics": effect_metrics,
    "blackhole_sync_signers": effect_signers,
    "blackhole_sync_chain_height": effect_chain_height,
    "blackhole_sync_protocol_translators": effect_protocol_translators,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("hooks"))


def test_every_hook_has_an_effect_check() -> None:
    assert set(EFFECTS) == set(HOOK_NAMES)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_the_hook_s_result_has_an_effect(hook: str, world: World) -> None:
    EFFECTS[hook](world)
