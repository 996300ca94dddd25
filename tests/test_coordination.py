"""Network coordination on real nodes, in one process over the in-memory transport: agents
(``node run``) vote, lock a protocol release in, activate it at a chain height, follow a
rollout plan and its halts, and a signed downgrade; the repository side drafts and publishes
the governance documents with separate holders. (The same runs across processes over the
gossip plugin in test_coordination_net.py, and at scale in the simulator in test_netsim.py.)
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from coord_world import CoordWorld, EventRecorder, HeightPlugin, HubPlugin, current, now

from blackhole_sync import (
    Downgrade,
    Envelope,
    HealthReport,
    PrivateKey,
    UpdateManager,
    hookimpl,
    make_plugin_manager,
)
from blackhole_sync.agent import run_agent
from blackhole_sync.errors import ConflictError, SignatureError
from blackhole_sync.network import node_position
from blackhole_sync.release import publish_coordination, write_coordination_draft
from blackhole_sync.testing import MemoryHub


async def manager_do(node: Path, work: Any, **kwargs: Any) -> Any:
    async with UpdateManager(node, lock_timeout=30, **kwargs) as manager:
        return await work(manager)


async def update(node: Path, version: str) -> None:
    await manager_do(node, lambda m: m.update(version))


async def wait_for(condition: Any, limit: float, what: str) -> None:
    """Poll ``condition`` (node directories and state databases: nothing to await on)."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - polling files other tasks write
            await anyio.sleep(0.1)


def _votes(node: Path) -> list[Any]:
    import sqlite3

    with sqlite3.connect(node / "state.db") as conn:
        return conn.execute("SELECT node_id, seq, support FROM votes").fetchall()


def tracker_meta(node: Path, pid: str) -> dict[str, Any]:
    import sqlite3

    with sqlite3.connect(node / "state.db") as conn:
        row = conn.execute(
            "SELECT value FROM meta WHERE key=?", (f"coordination:tracker:{pid}:1",)
        ).fetchone()
    return {} if row is None else dict(json.loads(row[0]))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the agent runs both; once is enough
async def test_a_protocol_release_locks_in_and_activates_at_one_height_on_every_node_also_a_late_one(
    tmp_path: Path,
) -> None:
    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    world.publish("2.0.0", update_type="protocol")
    validators = [world.node(f"v{i}", check_interval="3600") for i in range(3)]
    late = world.node("late", check_interval="3600")
    for node in [*validators, late]:
        await update(node, "1.0.0")
    world.validators(validators)
    t0 = time.time()
    activation = 14  # ~28 s ahead: after the window (12 s) and the certificate
    proposal = world.proposal("2.0.0", timeout=12, grace=30, height=activation)
    hub = MemoryHub()
    recorders: dict[Path, EventRecorder] = {}

    def plugins_for(node: Path) -> Any:
        plugins = make_plugin_manager()
        plugins.register(HubPlugin(hub))
        plugins.register(HeightPlugin(t0))
        recorders[node] = EventRecorder()
        plugins.register(recorders[node])
        return plugins

    async with anyio.create_task_group() as tg:
        for node in validators:
            tg.start_soon(lambda n=node: run_agent(n, plugins=plugins_for(n)))
        for node in validators[:2] + validators[2:]:  # all three vote yes (threshold 75 %)
            await manager_do(node, lambda m: _vote(m, proposal.id))
        # the window ends; the late node starts only after the votes and the lock-in
        try:
            await wait_for(
                lambda: all(tracker_meta(n, proposal.id).get("locked_in_by") for n in validators),
                40, "lock-in",
            )  # fmt: skip
        except TimeoutError:
            print({str(n): (tracker_meta(n, proposal.id), _votes(n)) for n in validators})
            raise
        assert all(current(n) == "1.0.0" for n in validators)  # locked in, not yet active
        tg.start_soon(lambda: run_agent(late, plugins=plugins_for(late)))
        await wait_for(lambda: all(current(n) == "2.0.0" for n in [*validators, late]), 60, "2.0")
        tg.cancel_scope.cancel()
    assert tracker_meta(late, proposal.id)["locked_in_by"] == "certificate"
    for node in [*validators, late]:
        meta = tracker_meta(node, proposal.id)
        assert meta["active_height"] == activation, node
        [event] = [e for e in recorders[node].events if e.kind == "protocol-activated"]
        assert event.version == "2.0.0" and event.detail["height"] == activation


async def _vote(manager: UpdateManager, pid: str) -> None:
    await manager.check_for_updates()  # as `node vote` does when it does not know the proposal
    manager.coordinator().vote(pid, support=True)


@pytest.mark.anyio
async def test_wait_for_network_consensus_now_loads_and_holds_a_proposal_s_release(
    tmp_path: Path,
) -> None:
    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    world.publish("2.0.0", update_type="protocol")
    world.publish("2.1.0")
    node = world.node("n", wait_for_network_consensus="true")
    world.validators([node])
    world.proposal("2.0.0", timeout=3600)

    async def sync(manager: UpdateManager) -> Any:
        return await manager.sync_with_network()

    result = await manager_do(node, sync)
    # 2.1.0 names no proposal: nothing to agree on, it installs; 2.0.0 waits for activation
    assert current(node) == "2.1.0" and result.installed.version == "2.1.0"

    async def status(manager: UpdateManager) -> dict[str, Any]:
        return manager.get_update_status().to_dict()

    coordination = (await manager_do(node, status))["coordination"]
    assert coordination["proposals"]["proto-2"]["state"] == "started"


@pytest.mark.anyio
async def test_a_release_under_a_plan_installs_only_in_the_node_s_phase_and_never_once_halted(
    tmp_path: Path,
) -> None:
    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    digest = world.publish("1.1.0")
    nodes = [world.node(f"n{i}") for i in range(4)]
    world.validators(nodes)
    for node in nodes:
        await update(node, "1.0.0")
    ids = {n: CoordWorld.node_id(n) for n in nodes}
    # the salt: the first "s<i>" that puts exactly two of the four nodes below 50 %
    salt = next(
        f"s{i}" for i in range(1000)
        if sum(node_position(x, digest, f"s{i}") < 5000 for x in ids.values()) == 2
    )  # fmt: skip
    world.plan("1.1.0", [("half", 5000, 3600), ("all", 10_000, 3600)], salt, 5000)
    first = {n for n in nodes if node_position(ids[n], digest, salt) < 5000}
    for node in nodes:
        await manager_do(node, lambda m: m.sync_with_network())
    assert {n for n in nodes if current(n) == "1.1.0"} == first
    # governance halts it: the nodes of the second phase never install it
    world.halt("1.1.0", "regression")
    world.repo.refresh(world.key)
    for node in nodes:
        result = await manager_do(node, lambda m: m.sync_with_network())
        assert result.installed is None
    assert {n for n in nodes if current(n) == "1.1.0"} == first


@pytest.mark.anyio
async def test_failing_health_reports_of_validators_halt_a_rollout_and_roll_back_those_configured_to(
    tmp_path: Path,
) -> None:
    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    digest = world.publish("1.1.0")
    nodes = [world.node(f"n{i}", rollback_on_halt="true") for i in range(3)]
    world.validators(nodes)
    world.plan("1.1.0", [("all", 10_000, 0)], "", 5000)  # half the validator weight halts
    for node in nodes:
        await update(node, "1.0.0")
        await manager_do(node, lambda m: m.sync_with_network())
        assert current(node) == "1.1.0"

    def report(node: Path, healthy: bool, key: PrivateKey | None = None) -> tuple[Any, Any]:
        from blackhole_sync.codecs import load_private_key

        key = key or load_private_key(node / "identity.key")
        doc = HealthReport(key.public_key.hex, "blackhole", 1, now() + dt.timedelta(hours=1),
                           "1.1.0", digest, healthy)  # fmt: skip
        env = Envelope.sign(doc.to_dict(), [key])
        return doc, env

    async def feed(manager: UpdateManager, docs: list[tuple[Any, Any]]) -> list[str]:
        out: list[str] = []
        for doc, env in docs:
            out += manager.coordinator().on_message("health", doc, env)
        return out

    # fifty failing reports from keys outside the validator set: nothing happens
    strangers = [report(nodes[0], False, PrivateKey.generate()) for _ in range(50)]
    assert await manager_do(nodes[0], lambda m: feed(m, strangers)) == []
    # two of the three validators report failure: over 50 % of the weight, halted
    failing = [report(nodes[1], False), report(nodes[2], False)]
    assert await manager_do(nodes[0], lambda m: feed(m, failing)) == ["halted:1.1.0"]
    await manager_do(nodes[0], lambda m: m.sync_with_network())
    assert current(nodes[0]) == "1.0.0"  # rollback_on_halt


@pytest.mark.anyio
async def test_a_signed_downgrade_is_followed_and_an_unsigned_one_is_refused(
    tmp_path: Path,
) -> None:
    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    world.publish("1.1.0")
    node = world.node("n")
    await update(node, "1.1.0")
    # an unsigned (wrong key) downgrade: the repository refuses to draft it ...
    forged = Downgrade("blackhole", "1.0.0", 0, 1, now() + dt.timedelta(days=1))
    with pytest.raises(SignatureError):
        write_coordination_draft(world.repo, forged, world.stranger)
    # ... and a node refuses one an attacker lists in the index with the index key alone
    _list_unsigned_downgrade(world, forged)
    result, refused = await manager_do(node, _sync_and_refused)
    assert current(node) == "1.1.0" and result.installed is None
    assert any("downgrade" in k and "signatures" in v for k, v in refused.items()), refused
    # the release threshold's downgrade is followed, data kept, the version left held
    world.downgrade("1.0.0")
    result = await manager_do(node, lambda m: m.sync_with_network())
    assert current(node) == "1.0.0" and result.installed.version == "1.0.0"
    result = await manager_do(node, lambda m: m.sync_with_network())
    assert current(node) == "1.0.0"  # followed once; 1.1.0 is not reinstalled by itself


async def _sync_and_refused(manager: UpdateManager) -> tuple[Any, dict[str, str]]:
    result = await manager.sync_with_network()
    return result, dict(manager.coordinator().docs.refused)


def _list_unsigned_downgrade(world: CoordWorld, doc: Downgrade) -> None:
    """What an attacker holding only the online index key could do: list a downgrade signed
    by a key outside the release role."""
    from blackhole_sync.documents import MetaFile, coordination_relpath

    env = Envelope.sign(doc.to_dict(), [world.stranger])
    path = world.repo.coordination_path(coordination_relpath("downgrade", "1.0.0"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(env.raw)

    import attrs

    def change(index: Any) -> Any:
        return attrs.evolve(index, downgrades={"1.0.0": MetaFile.of(env.raw)})

    with world.repo.locked():
        _i, data, _s = world.repo._next_index(world.key, now(), lambda c: c, coordination=change)
        (world.repo.path / "index.json").write_bytes(data)


def test_governance_drafts_need_the_threshold_of_distinct_holders(tmp_path: Path) -> None:
    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    doc = world.deprecate("legacy-sync", "2.0.0")  # signed by two holders: published
    index = world.repo.index()
    assert index is not None and "legacy-sync" in index.deprecations
    again = type(doc)("legacy-sync", "3.0.0", 2, now() + dt.timedelta(days=1))
    write_coordination_draft(world.repo, again, world.gov[0])
    write_coordination_draft(world.repo, again, world.gov[0])  # the same holder twice
    assert publish_coordination(world.repo, world.key) == []  # still one of two
    with pytest.raises(SignatureError):
        write_coordination_draft(world.repo, again, world.stranger)
    other = type(doc)("legacy-sync", "4.0.0", 2, now() + dt.timedelta(days=1))
    with pytest.raises(ConflictError):
        write_coordination_draft(world.repo, other, world.gov[1])
    write_coordination_draft(world.repo, again, world.gov[2])
    assert publish_coordination(world.repo, world.key) == ["deprecation-legacy-sync"]


class Translators:
    class V1toV2:
        from_version, to_version = 1, 2

        def translate(self, message: Any) -> Any:
            return {"kind": message["type"], "body": message["payload"], "v": 2}

    class V2toV3:
        from_version, to_version = 2, 3

        def translate(self, message: Any) -> Any:
            return {**message, "v": 3, "fields": sorted(message)}

    @hookimpl
    def blackhole_sync_protocol_translators(self) -> list[Any]:
        return [self.V1toV2(), self.V2toV3()]


@pytest.mark.anyio
async def test_an_old_protocol_message_is_translated_through_the_registered_chain(
    tmp_path: Path,
) -> None:
    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    node = world.node("n")
    plugins = make_plugin_manager()
    plugins.register(Translators())

    async def translate(manager: UpdateManager) -> Any:
        compat = manager.compatibility_manager()
        old = {"type": "block", "payload": "abc"}
        return compat.translate_protocol_message(old, 1, 3), compat.check_protocol_compatibility(1, 3)

    message, both_ways = await manager_do(node, translate, plugins=plugins)
    assert message == {"kind": "block", "body": "abc", "v": 3, "fields": ["body", "kind", "v"]}
    assert both_ways is False  # 3 -> 1 has no translator: they cannot talk both ways


def test_fork_ids_admit_the_same_chain_and_refuse_a_fork_at_the_handshake() -> None:
    from blackhole_sync.network import admit, fork_id, hello_bytes

    ours = fork_id("blackhole", [1, 2], [(2, "h100")])
    behind = fork_id("blackhole", [1, 2], [])
    ahead = fork_id("blackhole", [2, 3], [(2, "h100"), (3, "h900")])
    forked = fork_id("blackhole", [1, 2], [(2, "h101")])  # activated at another height
    stranger = fork_id("blackhole", [7], [])  # no protocol in common
    testnet = fork_id("testnet", [1, 2], [(2, "h100")])
    assert admit(ours, "p", hello_bytes(ours), "blackhole")
    assert admit(ours, "p", hello_bytes(behind), "blackhole")
    assert admit(ours, "p", hello_bytes(ahead), "blackhole")
    assert not admit(ours, "p", hello_bytes(forked), "blackhole")
    assert not admit(ours, "p", hello_bytes(stranger), "blackhole")
    assert not admit(ours, "p", hello_bytes(testnet), "blackhole")
    assert not admit(ours, "p", b"\xff garbage", "blackhole")
    assert admit(ours, "p", b"blackhole", "blackhole")  # an origin: relays signed documents only


@pytest.mark.anyio
async def test_node_status_warns_of_deprecations_and_network_status_counts_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blackhole_sync import NodeStatusDoc

    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    node = world.node("n")
    world.validators([node])
    world.deprecate("legacy-sync", "1.0.0")
    await update(node, "1.0.0")

    async def feed(manager: UpdateManager) -> dict[str, Any]:
        coordinator = manager.coordinator()
        for i, version in enumerate(["1.0.0", "1.0.0", "0.9.0"]):
            key = PrivateKey.generate()
            doc = NodeStatusDoc(key.public_key.hex, "blackhole", 1, now() + dt.timedelta(hours=1),
                                version, "idle", now() - dt.timedelta(seconds=i))  # fmt: skip
            coordinator.on_message("status", doc, Envelope.sign(doc.to_dict(), [key]))
        return manager.get_update_status().to_dict()

    status = await manager_do(node, feed)
    [warning] = status["coordination"]["deprecations"]
    assert warning["feature"] == "legacy-sync" and warning["imminent"] is True
    from blackhole_sync.cli import main

    capsys.readouterr()
    code = await anyio.to_thread.run_sync(main, ["network", "status", str(node), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["network"]["versions"] == {"0.9.0": 1, "1.0.0": 2}
    assert out["network"]["authenticated"] is False
    assert out["network"]["coverage_bp"] == 6666


pytestmark = pytest.mark.timeout(180)


@pytest.mark.anyio
async def test_a_listed_plan_that_does_not_verify_holds_its_release_back_until_it_does(
    tmp_path: Path,
) -> None:
    """Fail closed: a source serving other bytes for the release's rollout plan (or none) must
    not turn a phased release into an everyone-now release."""
    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    digest = world.publish("1.1.0")
    nodes = [world.node(f"n{i}") for i in range(2)]
    world.validators(nodes)
    for node in nodes:
        await update(node, "1.0.0")
    ids = {n: CoordWorld.node_id(n) for n in nodes}
    salt = next(
        f"s{i}" for i in range(1000)
        if [node_position(ids[n], digest, f"s{i}") < 5000 for n in nodes] == [True, False]
    )  # fmt: skip
    world.plan("1.1.0", [("half", 5000, 3600), ("all", 10_000, 3600)], salt, 5000)
    plan_file = world.repo.path / "governance" / "rollouts" / "1.1.0.json"
    good = plan_file.read_bytes()
    for lie in (b"", good.replace(b'"half"', b'"hal"'), b"{}"):
        plan_file.write_bytes(lie)
        for node in nodes:
            result = await manager_do(node, lambda m: m.sync_with_network())
            assert result.installed is None
            assert current(node) == "1.0.0"

            async def status(m: UpdateManager) -> Any:
                return m.coordination_status()

            refused = (await manager_do(node, status))["coordination"]["refused"]
            assert "governance/rollouts/1.1.0.json" in refused
    # the real plan back: the first phase's node installs, the other still waits its phase
    plan_file.write_bytes(good)
    for node in nodes:
        await manager_do(node, lambda m: m.sync_with_network())
    assert [current(n) for n in nodes] == ["1.1.0", "1.0.0"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_state_database_locked_by_another_command_drops_a_message_not_the_agent(
    tmp_path: Path,
) -> None:
    """The agent's coordination listener writes what peers report into the state database; a
    command holding its write lock past the timeout (``node vote`` under load did) costs that
    one message, logged, and the listener goes on -- it used to end the agent."""
    import sqlite3

    from blackhole_sync.documents import NodeStatusDoc
    from blackhole_sync.network.messages import Decided, Verdict
    from blackhole_sync.network.service import CoordinationService
    from blackhole_sync.node import StateDB

    world = CoordWorld(tmp_path)
    world.publish("1.0.0")
    nodes = [world.node(f"n{i}") for i in range(2)]
    world.validators(nodes)
    await update(nodes[0], "1.0.0")

    def status(seq: int) -> Decided:
        from blackhole_sync.codecs import load_private_key

        key = load_private_key(nodes[1] / "identity.key")
        doc = NodeStatusDoc(key.public_key.hex, "blackhole", seq, now() + dt.timedelta(hours=1),
                            "1.0.0", "active")  # fmt: skip
        env = Envelope.sign(doc.to_dict(), [key])
        return Decided(Verdict.ACCEPT, "", "status", doc, key.public_key.hex, seq, env)

    class Peers:  # what the listener asks of the peer network
        def __init__(self, items: list[Decided]) -> None:
            self.items = items

        async def catch_up(self, kind: str) -> list[Decided]:
            return []

        async def messages(self, kinds: Any) -> Any:
            for item in self.items:
                yield item

    store = StateDB.open(nodes[0] / "state.db")
    store.conn.execute("PRAGMA busy_timeout = 100")
    service = CoordinationService(nodes[0], make_plugin_manager(), store)
    woken: list[str] = []
    other = sqlite3.connect(nodes[0] / "state.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another command's write transaction
        await service.listen(Peers([status(1)]), woken.append)  # type: ignore[arg-type]
        other.execute("ROLLBACK")
        before = service.coordinator.store.get_meta("coordination:view")
        assert before is None or CoordWorld.node_id(nodes[1]) not in before  # not taken
        await service.listen(Peers([status(2)]), woken.append)  # type: ignore[arg-type]
        view = service.coordinator.store.get_meta("coordination:view")
        assert view is not None and CoordWorld.node_id(nodes[1]) in view
    finally:
        other.close()
        store.close()
