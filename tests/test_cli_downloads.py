"""``node update`` downloads as an operator sees them, through the real command and a real slow
HTTP source (``slow_http.py``, which counts every blob byte it sends):

- a download killed with SIGKILL resumes on the next run from what ``NODE/partial/`` kept,
  and a tampered partial file is discarded (issue 9, the node operator);
- progress with rate and time left on stderr when it is a terminal, quiet otherwise;
- ``--json`` times: ``duration_s`` for the whole command, ``download_s`` and ``install_s``;
- ``--debug`` names the transport that served each blob.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from cli_helpers import (
    BIN,
    ENV,
    bhs,
    bhs_json,
    init_node,
    init_repo,
    make_keys,
    release,
    wait_for,
    write_artifact,
)
from slow_http import slow_source

from blackhole_sync.testing import scaled

pytest.importorskip("blackhole_sync_http")

SIZE = 3 * 1024 * 1024
#: The slow source's rate: a whole download takes about 3 s.
RATE = 1024 * 1024


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, str]:
    """A repository with release 1.0.0: one incompressible artifact of SIZE bytes, one blob."""
    base = tmp_path_factory.mktemp("published")
    keys = make_keys(base / "keys")
    repo = base / "repo"
    init_repo(repo, keys)
    artifact = write_artifact(base / "v1" / "blackhole-node", SIZE, seed=9)
    release(repo, keys, "1.0.0", artifact)
    [blob] = os.listdir(repo / "blobs")
    assert (repo / "blobs" / blob).stat().st_size == SIZE  # fetched whole, as it is
    return repo, artifact.read_bytes(), blob


def update_killed_part_way(node: Path, blob: str) -> None:
    """Start ``node update`` and SIGKILL it once a quarter of the blob is on the node's disk."""
    partial = node / "partial" / blob

    def kept() -> int:
        try:
            return partial.stat().st_size
        except FileNotFoundError:
            return 0

    proc = subprocess.Popen(
        [BIN, "node", "update", str(node), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        wait_for(lambda: kept() >= SIZE // 4 or proc.poll() is not None, scaled(120))
        assert proc.poll() is None, "the update ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(scaled(30))


def test_an_update_killed_mid_download_resumes_from_the_kept_bytes(
    published: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    repo, artifact, blob = published
    node = tmp_path / "node"
    with slow_source(repo, rate=RATE) as source:
        init_node(node, repo / "root.json", source.url)
        update_killed_part_way(node, blob)
        partial = node / "partial" / blob
        kept = partial.stat().st_size
        assert 0 < kept < SIZE
        assert stat.S_IMODE((node / "partial").stat().st_mode) == 0o700
        assert partial.read_bytes() == artifact[:kept]
        assert not (node / "current").exists()  # never activated

        source.reset_counts()
        source.rate = None
        out = bhs_json("node", "update", node)
        assert out["updated"] is True and out["version"] == "1.0.0"
        # counted at the source: only the missing bytes crossed the network
        assert source.blob_requests == [(f"blobs/{blob}", kept)]
        assert source.blob_bytes_sent == SIZE - kept < SIZE
        assert out["bytes_fetched"] == SIZE - kept
    assert (node / "current" / "blackhole-node").read_bytes() == artifact
    assert os.listdir(node / "partial") == []
    bhs("node", "verify", node)


def test_a_tampered_partial_file_is_discarded_and_the_update_still_verifies(
    published: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    repo, artifact, blob = published
    node = tmp_path / "node"
    with slow_source(repo, rate=RATE) as source:
        init_node(node, repo / "root.json", source.url)
        update_killed_part_way(node, blob)
        partial = node / "partial" / blob
        kept = partial.stat().st_size
        assert kept > 0
        with open(partial, "r+b") as f:  # a disk fault, or someone with access to NODE/
            f.seek(kept // 2)
            byte = f.read(1)
            f.seek(kept // 2)
            f.write(bytes([byte[0] ^ 0xFF]))

        source.reset_counts()
        source.rate = None
        out = bhs_json("node", "update", node)
        assert out["version"] == "1.0.0"
        # it resumed, the whole did not verify, and it fetched the blob again from byte 0
        assert source.blob_requests == [(f"blobs/{blob}", kept), (f"blobs/{blob}", 0)]
        assert source.blob_bytes_sent == (SIZE - kept) + SIZE
    assert (node / "current" / "blackhole-node").read_bytes() == artifact
    assert os.listdir(node / "partial") == []
    bhs("node", "verify", node)


def run_on_a_terminal(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
    """Run ``blackhole-sync ARGS`` with stderr on a pseudo-terminal: (status, stdout, stderr)."""
    master, slave = pty.openpty()
    env = dict(ENV, TERM="xterm", COLUMNS="120")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [BIN, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.stdout.close()
    code = proc.wait(scaled(60))
    return code, out, b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_shows_the_rate_and_time_left_and_is_quiet_otherwise(
    published: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    repo, _artifact, blob = published
    with slow_source(repo, rate=RATE) as source:
        node = tmp_path / "tty"
        init_node(node, repo / "root.json", source.url)
        code, out, err = run_on_a_terminal("node", "update", node)
        assert code == 0, err
        assert "updated nothing -> 1.0.0" in out
        assert f"blob {blob[:12]}" in err
        assert "3.1/3.1 MB" in err  # bytes done / total
        assert re.search(r"\d+(\.\d+)? [kM]B/s", err), err  # the rate
        assert re.search(r"\d:\d\d:\d\d", err), err  # the time left

        source.rate = None
        for name, args in (("json", ("--json",)), ("pipe", ())):
            quiet = tmp_path / name
            init_node(quiet, repo / "root.json", source.url)
            if args:  # --json: quiet even on a terminal, one JSON object on stdout
                code, out, err = run_on_a_terminal("node", "update", quiet, *args)
                assert code == 0 and "B/s" not in err and f"blob {blob[:12]}" not in err
                assert out.count("\n") == 1
            else:  # stderr not a terminal: nothing on it
                assert bhs("node", "update", quiet).err == ""


def test_update_json_times_the_whole_command_with_download_and_install_beside_it(
    published: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    repo, _artifact, _blob = published
    node = tmp_path / "node"
    with slow_source(repo, rate=2 * RATE) as source:  # about 1.5 s of download
        init_node(node, repo / "root.json", source.url)
        out = bhs_json("node", "update", node)
        again = bhs_json("node", "update", node)
    assert out["updated"] is True
    assert out["download_s"] >= 1.0
    assert out["install_s"] > 0
    assert out["duration_s"] >= out["download_s"] + out["install_s"]
    assert again["updated"] is False
    assert again["download_s"] == 0 and again["install_s"] == 0 and again["duration_s"] > 0
    assert set(again) == set(out)


def test_debug_names_the_transport_locator_bytes_and_seconds_of_each_download(
    published: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    repo, _artifact, blob = published
    # a first source with every document but no blobs: the blob comes from the second
    mirror = tmp_path / "mirror"
    shutil.copytree(repo, mirror, ignore=shutil.ignore_patterns("blobs"))
    node = tmp_path / "node"
    with slow_source(repo, rate=None) as source:
        init_node(node, repo / "root.json", mirror, source.url)
        err = bhs("--debug", "node", "update", node).err
    lines = [line for line in err.splitlines() if f"blob {blob[:12]} ({SIZE} bytes):" in line]
    assert len(lines) == 1, err
    assert re.search(
        rf"{SIZE} bytes from http {re.escape(source.url)}blobs/{blob} in \d+\.\d+ s$", lines[0]
    ), lines[0]
