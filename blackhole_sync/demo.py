"""``blackhole-sync demo``: a small Blackhole network on this machine, end to end.

It plays both sides, in one process, on 127.0.0.1 only:

1. Release engineering: keys for a 2-of-2 root, 2-of-3 release keys and an index key; a
   repository; release 1.0.0 built, signed by two key holders, published.
2. An HTTP origin serving the repository (the HTTP plugin; a ``file://`` source without it).
3. Three nodes: ``alpha`` updates from the origin; ``beta`` updates from alpha's edge cache
   (alpha's verified holdings served as a mirror), ``gamma`` from a mirror that was tampered
   with -- it refuses the bad bytes and falls back to the origin.
4. Release 1.1.0 with a small change: every node updates by delta patch.
5. A rollback on one node, then the status of every node.

Every step prints what happened, with byte counts; the exit status is 0 only when every
check held.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from .documents import Command, PrivateKey, write_key_pair
from .fetch import make_plugin_manager
from .manager import UpdateManager, init_node
from .mirror import export_mirror
from .release import Repository

__all__ = ["run_demo"]

APP = """#!/bin/sh
# A stand-in for the Blackhole node binary.
echo "blackhole node {version}"
"""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _app(version: str, size: int = 2_000_000) -> bytes:
    """A deterministic 'binary': a script header and a large payload that changes a little."""
    seed = b"blackhole-demo-payload"
    body = bytearray()
    while len(body) < size:
        seed = __import__("hashlib").sha256(seed).digest()
        body += seed
    body[size // 2 : size // 2 + 16] = version.encode().ljust(16, b".")
    return (
        APP.format(version=version).encode()
        + b"\nexit 0\n# "
        + bytes(body[:size]).hex().encode()[:size]
    )


@contextlib.asynccontextmanager
async def _serve(directory: Path) -> AsyncIterator[str | None]:
    """Serve ``directory`` over HTTP through the plugin hook; None when no plugin serves."""
    server = make_plugin_manager(load_entrypoints=True).hook.blackhole_sync_server()
    if server is None:
        yield None
        return
    ready = anyio.Event()
    url: list[str] = []

    def on_ready(value: str) -> None:
        url.append(value)
        ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(directory, "127.0.0.1", 0, ready=on_ready))
        with anyio.fail_after(10):
            await ready.wait()
        try:
            yield url[0]
        finally:
            tg.cancel_scope.cancel()


def _init_node(path: Path, root: Path, sources: list[str]) -> None:
    init_node(path, root_bytes=root.read_bytes(), sources=sources)


async def _update(name: str, node: Path) -> dict[str, Any]:
    async with UpdateManager(node) as manager:
        result = await manager.update()
        status = manager.get_update_status()
        failures = manager.metrics.source_failures
    if result is None:
        _say(f"  {name:6} already up to date at {status.current_version}")
        return {"version": status.current_version, "method": None, "bytes": 0, "failures": []}
    _say(
        f"  {name:6} {result.previous or '(none)'} -> {result.version}: {result.method}, "
        f"{result.bytes_fetched:,} bytes fetched"
        + (f", {len(failures)} source(s) skipped" if failures else "")
    )
    return {
        "version": result.version,
        "method": result.method,
        "bytes": result.bytes_fetched,
        "failures": failures,
    }


async def _demo(work: Path) -> bool:
    ok = True

    def check(condition: bool, what: str) -> None:
        nonlocal ok
        _say(f"  [{'ok' if condition else 'FAILED'}] {what}")
        ok = ok and condition

    _say("== release engineering")
    (work / "keys").mkdir(mode=0o700)
    keys: dict[str, PrivateKey] = {
        name: write_key_pair(work / "keys" / name)
        for name in ("root-a", "root-b", "release-1", "release-2", "release-3", "index")
    }
    repo_dir = work / "repo"
    repo = Repository.init(
        repo_dir,
        root_keys=[keys["root-a"].public_key, keys["root-b"].public_key],
        root_threshold=2,
        release_keys=[keys[f"release-{i}"].public_key for i in (1, 2, 3)],
        release_threshold=2,
        index_key=keys["index"].public_key,
        sign_with=[keys["root-a"], keys["root-b"]],
    )
    _say("  repository with a 2-of-2 root, 2-of-3 release keys and an index key")
    artifacts = work / "build"
    artifacts.mkdir()
    app = artifacts / "blackhole-node"

    def release(version: str) -> None:
        app.write_bytes(_app(version))
        os.chmod(app, 0o755)  # noqa: S103 - the artifact is an executable
        manifest = repo.build_release(
            version, [app], delta_from="auto", health=Command(("./blackhole-node",), timeout=10)
        )
        repo.sign_release(version, keys["release-1"])
        repo.sign_release(version, keys["release-3"])
        repo.publish_release(version, keys["index"])
        deltas = ", ".join(
            f"delta from {d.from_version}: {d.patch.length:,} B" for d in manifest.deltas
        )
        _say(
            f"  release {version}: {manifest.artifacts[0].length:,} B artifact"
            + (f"; {deltas}" if deltas else "")
            + "; signed by 2 of 3 release keys; published"
        )

    release("1.0.0")
    _say("== an HTTP origin on 127.0.0.1")
    async with _serve(repo_dir) as origin_url:
        origin = origin_url or str(repo_dir)
        _say(f"  origin: {origin}")
        nodes = {name: work / "nodes" / name for name in ("alpha", "beta", "gamma")}
        (work / "nodes").mkdir()
        mirror_dir = work / "alpha-mirror"
        tampered_dir = work / "tampered-mirror"
        _init_node(nodes["alpha"], repo_dir / "root.json", [origin])
        _say("== first install")
        first = await _update("alpha", nodes["alpha"])
        check(
            first["method"] == "full" and first["version"] == "1.0.0",
            "alpha installed 1.0.0 from the origin",
        )
        export_mirror(nodes["alpha"], mirror_dir)
        shutil.copytree(mirror_dir, tampered_dir)
        for blob in (tampered_dir / "blobs").iterdir():
            data = bytearray(blob.read_bytes())
            data[100] ^= 0xFF
            blob.unlink()
            blob.write_bytes(bytes(data))
        async with _serve(mirror_dir) as mirror_url, _serve(tampered_dir) as bad_url:
            mirror = mirror_url or str(mirror_dir)
            bad = bad_url or str(tampered_dir)
            _say(f"  alpha's edge cache: {mirror}; a tampered copy: {bad}")
            _init_node(nodes["beta"], repo_dir / "root.json", [mirror, origin])
            _init_node(nodes["gamma"], repo_dir / "root.json", [bad, origin])
            beta = await _update("beta", nodes["beta"])
            check(beta["version"] == "1.0.0", "beta installed 1.0.0 from alpha's edge cache")
            gamma = await _update("gamma", nodes["gamma"])
            check(
                gamma["version"] == "1.0.0" and len(gamma["failures"]) >= 1,
                "gamma refused the tampered blob and fell back to the origin",
            )
            _say("== release 1.1.0, a small change")
            release("1.1.0")
            for name, node in nodes.items():
                result = await _update(name, node)
                check(
                    result["version"] == "1.1.0" and result["method"] == "delta",
                    f"{name} updated to 1.1.0 by delta",
                )
                if name == "alpha":
                    export_mirror(nodes["alpha"], mirror_dir)
        _say("== rollback")
        async with UpdateManager(nodes["gamma"]) as manager:
            target = await manager.rollback()
        check(target == "1.0.0", "gamma rolled back to 1.0.0")
        _say("== status")
        for name, node in nodes.items():
            async with UpdateManager(node) as manager:
                status = manager.get_update_status()
                problems = manager.store.verify_installed(None)
            _say(
                f"  {name:6} current {status.current_version}, installed "
                f"{', '.join(status.installed_versions)}; tree "
                f"{'verified' if not problems else 'PROBLEMS: ' + '; '.join(problems)}"
            )
            ok = ok and not problems
    return ok


def run_demo(*, workdir: Path | None = None, keep: bool = False) -> int:
    """Run the demonstration; returns the process exit status."""
    base = Path(tempfile.mkdtemp(prefix="blackhole-demo-")) if workdir is None else workdir
    base.mkdir(parents=True, exist_ok=True)
    if any(base.iterdir()):
        _say(f"demo: {base} is not empty")
        return 1
    try:
        ok = anyio.run(_demo, base)
    finally:
        if keep or workdir is not None:
            _say(f"(files kept in {base})")
        else:
            shutil.rmtree(base, ignore_errors=True)
    _say("demo finished: every check held" if ok else "demo FAILED")
    return 0 if ok else 1
