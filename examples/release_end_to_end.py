"""Build, sign, publish and install a release with the Python API -- no network needed.

A release engineer's side (Repository) and a node's side (UpdateManager) share a directory
repository here (the core's local-directory transport); swap the node's source for an
``http://`` URL served by ``blackhole-sync serve`` and nothing else changes.

    python examples/release_end_to_end.py            # asyncio
    python examples/release_end_to_end.py trio       # the same under trio
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import anyio

from blackhole_sync.documents.signing import PrivateKey
from blackhole_sync.manager import UpdateManager, init_node
from blackhole_sync.release import Repository


async def main(work: Path) -> None:
    # -- the release engineer: keys, a repository, a release signed by 2 of 3 holders ---------
    root_key, index_key = PrivateKey.generate(), PrivateKey.generate()
    release_keys = [PrivateKey.generate() for _ in range(3)]
    repo = Repository.init(
        work / "repo",
        root_keys=[root_key.public_key],
        root_threshold=1,
        release_keys=[k.public_key for k in release_keys],
        release_threshold=2,
        index_key=index_key.public_key,
        sign_with=[root_key],
    )
    artifact = work / "blackhole-node"
    artifact.write_bytes(b"#!/bin/sh\necho 1.0.0\n" + bytes(range(256)) * 4096)
    repo.build_release("1.0.0", [artifact])
    repo.sign_release("1.0.0", release_keys[0])
    repo.sign_release("1.0.0", release_keys[2])
    repo.publish_release("1.0.0", index_key)

    # -- a node: trusts root.json, follows the repository ---------------------------------------
    node = work / "node"
    init_node(
        node, root_bytes=(work / "repo" / "root.json").read_bytes(), sources=[str(work / "repo")]
    )

    async with UpdateManager(node) as manager:
        updates = await manager.check_for_updates()
        print("available:", [u.version for u in updates])
        package = await manager.download_update(updates[0])
        await manager.verify_update(package)  # True, or a typed SecurityError
        result = await manager.apply_update(package)
        print(f"installed {result.version} ({result.method}, {result.bytes_fetched} bytes)")

    # -- the next release, a small change: the node fetches a delta patch ----------------------
    artifact.write_bytes(b"#!/bin/sh\necho 1.1.0\n" + bytes(range(256)) * 4096)
    repo.build_release("1.1.0", [artifact], delta_from="auto")
    for key in release_keys[:2]:
        repo.sign_release("1.1.0", key)
    repo.publish_release("1.1.0", index_key)
    async with UpdateManager(node) as manager:
        result = await manager.update()
        assert result is not None
        print(f"installed {result.version} ({result.method}, {result.bytes_fetched} bytes)")
        status = manager.get_update_status()
        print("current:", status.current_version, "installed:", list(status.installed_versions))


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, Path(tmp), backend=backend)
