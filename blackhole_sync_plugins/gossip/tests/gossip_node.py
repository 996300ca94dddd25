"""A gossip node for the tests: one GossipHost in this process, driven by JSON lines.

Run as ``python gossip_node.py '<json settings>'``. It prints one
``{"event": "ready", ...}`` line, then answers each command read on stdin
(``{"id": n, "cmd": ...}``) with one line ``{"id": n, ...}``. EOF on stdin or
the ``stop`` command shuts the host down.

The validator is the test one from the brief: a payload is a PyNaCl signed
message (64-byte signature + 8-byte big-endian seq + text) by the known
publisher key. ACCEPT a valid one with a new seq (and raise the floor),
REJECT a bad signature, IGNORE a seq at or below the floor. ``answer(kind)``
returns the newest accepted payload of that kind.

``inject`` and ``flood`` play the attacker or the careless relay: they write
libp2p-signed messages straight onto every pubsub stream, skipping our own
validation and the mesh, so every neighbour receives them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import trio
from blackhole_sync_gossip import GossipConfig, GossipHost, PublishRefusedError, Verdict
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey


class TestValidator:
    """Publisher-signed payloads with a per-kind seq floor."""

    def __init__(self, publisher_key: bytes, *, foreign: Verdict = Verdict.REJECT) -> None:
        self._key = VerifyKey(publisher_key)
        self._foreign = foreign
        self.floors: dict[str, int] = {}
        self.newest: dict[str, bytes] = {}

    def __call__(self, kind: str, payload: bytes, from_peer: str) -> Verdict:
        try:
            body = self._key.verify(payload)
        except (BadSignatureError, ValueError):
            return self._foreign
        if len(body) < 8:
            return Verdict.REJECT
        seq = int.from_bytes(body[:8], "big")
        if seq <= self.floors.get(kind, 0):
            return Verdict.IGNORE
        self.floors[kind] = seq
        self.newest[kind] = payload
        return Verdict.ACCEPT

    def answer(self, kind: str) -> list[bytes]:
        newest = self.newest.get(kind)
        return [newest] if newest is not None else []


class Node:
    def __init__(self, settings: dict[str, Any]) -> None:
        # "foreign": "ignore" -- an engine node among real nodes (whose signed documents it
        # cannot judge) ignores what it cannot verify instead of penalising honest forwarders.
        foreign = Verdict.IGNORE if settings.get("foreign") == "ignore" else Verdict.REJECT
        self.validator = TestValidator(bytes.fromhex(settings["publisher"]), foreign=foreign)
        self.hello = bytes.fromhex(settings.get("hello", ""))
        admit_hello = bytes.fromhex(settings.get("admit_hello", settings.get("hello", "")))
        config = GossipConfig(
            network=settings.get("network", "testnet"),
            identity_seed=bytes.fromhex(settings["seed"]),
            loopback_only=True,
            listen_port=int(settings.get("port", 0)),
            bootstrap=tuple(settings.get("bootstrap", ())),
            hello=self.hello,
            dial_backoff_initial=float(settings.get("backoff", 0.5)),
            dial_backoff_max=float(settings.get("backoff_max", 4.0)),
            peer_exchange_interval=float(settings.get("px_interval", 5.0)),
            target_outbound_peers=int(settings.get("target_outbound", 4)),
            hello_timeout=3.0,
        )
        self.host = GossipHost(
            config,
            validate=self.validator,
            answer=self.validator.answer,
            admit=lambda peer, hello: hello == admit_hello,
        )
        self.received: list[dict[str, Any]] = []

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.host.run)
            nursery.start_soon(self.collect)
            emit({"event": "ready", "peer_id": self.host.peer_id, "addrs": self.host.listen_addrs})
            await self.serve_commands()
            self.host.stop()

    async def collect(self) -> None:
        async for msg in self.host.messages:
            self.received.append(
                {
                    "kind": msg.kind,
                    "payload": msg.payload.hex(),
                    "from_peer": msg.from_peer,
                    "origin": msg.origin,
                    "t": time.time(),
                }
            )

    async def serve_commands(self) -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buf = b""
        async with stdin:
            while True:
                chunk = await stdin.receive_some(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    request = json.loads(line)
                    if request["cmd"] == "stop":
                        emit({"id": request["id"], "ok": True})
                        return
                    try:
                        reply = await self.handle(request)
                    except PublishRefusedError as exc:
                        reply = {"error": str(exc)}
                    reply["id"] = request["id"]
                    emit(reply)

    async def handle(self, r: dict[str, Any]) -> dict[str, Any]:
        cmd = r["cmd"]
        h = self.host
        if cmd == "info":
            return {"peer_id": h.peer_id, "addrs": h.listen_addrs}
        if cmd == "publish":
            await h.publish(r["kind"], bytes.fromhex(r["payload"]))
            return {"ok": True, "t": time.time()}
        if cmd == "inject":
            to = await self.inject(r["kind"], [bytes.fromhex(p) for p in r["payloads"]])
            return {"sent": len(to), "to": to, "t": time.time()}
        if cmd == "flood":
            payloads = [b"forged-%d-" % i + b"x" * 64 for i in range(int(r["count"]))]
            to = await self.inject(r["kind"], payloads, batch=50)
            return {"sent": len(to), "to": to}
        if cmd == "received":
            return {"messages": self.received}
        if cmd == "counters":
            return {"counters": h.counters()}
        if cmd == "score":
            return {"score": h.peer_score(r["peer"])}
        if cmd == "peers":
            return {
                "peers": h.connected_peers(),
                "mesh": h.mesh_peers(r.get("kind", "announcement")),
            }
        if cmd == "wait_mesh":
            ok = await h.wait_for_mesh(
                r["kind"], min_peers=int(r.get("min", 1)), timeout=float(r.get("within", 10.0))
            )
            return {"ok": ok}
        if cmd == "wait_peers":
            with trio.move_on_after(float(r.get("within", 10.0))):
                while len(h.connected_peers()) < int(r["min"]):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            return {"peers": h.connected_peers()}
        if cmd == "query":
            answers = await h.query(r["kind"])
            return {
                "answers": [
                    {"peer": a.peer_id, "payloads": [p.hex() for p in a.payloads]} for a in answers
                ]
            }
        if cmd == "settings":
            return {"settings": h.effective_settings()}
        raise ValueError(f"unknown command {cmd!r}")

    async def inject(self, kind: str, payloads: list[bytes], batch: int = 1) -> list[str]:
        """Write libp2p-signed messages straight to every pubsub peer; the ones written to."""
        pubsub = self.host._pubsub
        assert pubsub is not None
        topic = self.host.config.topics[kind]
        key = pubsub.host.get_private_key()
        messages = []
        for data in payloads:
            msg = rpc_pb2.Message(
                data=data,
                topicIDs=[topic],
                from_id=pubsub.my_id.to_bytes(),
                seqno=pubsub._next_seqno(),
            )
            msg.signature = key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
            msg.key = pubsub.host.get_public_key().serialize()
            messages.append(msg)
        peers: list[ID] = list(pubsub.peers)
        written: set[str] = set()
        for i in range(0, len(messages), batch):
            rpc = rpc_pb2.RPC(publish=messages[i : i + batch])
            for peer in peers:
                stream = pubsub.peers.get(peer)
                if stream is not None:
                    await pubsub.write_msg(stream, rpc)
                    written.add(str(peer))
        return sorted(written)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    trio.run(Node(json.loads(sys.argv[1])).main)
