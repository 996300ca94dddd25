"""Faults: ENOSPC and EIO during writes and at the `current` switch, a read-only node, a full
disk before the install, and leftovers planted in staging.

ENOSPC from a real small tmpfs; EIO/ENOSPC at chosen syscalls from an LD_PRELOAD shim compiled
with gcc here (it fails write/pwrite/fsync/rename/symlink on paths containing a substring).
Mounting needs root: those tests skip (and say so) when not root."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from crashlib import check_node, copy_node, init_node, run_driver, v2_release

from blackhole_sync.errors import InstallError, InsufficientSpaceError
from blackhole_sync.node import SignedManifest
from blackhole_sync.node.store import NodeStore
from blackhole_sync.testing import run

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root")

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>

static int active(const char *op) {
    const char *ops = getenv("FAULT_OPS");
    return ops && strstr(ops, op);
}
static int err(void) { const char *e = getenv("FAULT_ERRNO"); return e ? atoi(e) : EIO; }
static int path_hit(const char *p) {
    const char *want = getenv("FAULT_PATH");
    if (!want || !p) return 0;
    return getenv("FAULT_EXACT") ? strcmp(p, want) == 0 : strstr(p, want) != NULL;
}
static int fd_hit(int fd) {
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return path_hit(target);
}
#define REAL(name, ret, ...) \
    static ret (*real)(__VA_ARGS__); if (!real) real = dlsym(RTLD_NEXT, name);

ssize_t write(int fd, const void *b, size_t n) {
    REAL("write", ssize_t, int, const void *, size_t)
    if (active("write") && fd_hit(fd)) { errno = err(); return -1; }
    return real(fd, b, n);
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) {
    REAL("pwrite64", ssize_t, int, const void *, size_t, off_t)
    if (active("write") && fd_hit(fd)) { errno = err(); return -1; }
    return real(fd, b, n, o);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
    REAL("pwrite", ssize_t, int, const void *, size_t, off_t)
    if (active("write") && fd_hit(fd)) { errno = err(); return -1; }
    return real(fd, b, n, o);
}
int fsync(int fd) {
    REAL("fsync", int, int)
    if (active("fsync") && fd_hit(fd)) { errno = err(); return -1; }
    return real(fd);
}
int rename(const char *a, const char *b) {
    REAL("rename", int, const char *, const char *)
    if (active("rename") && (path_hit(b))) { errno = err(); return -1; }
    return real(a, b);
}
int symlink(const char *t, const char *l) {
    REAL("symlink", int, const char *, const char *)
    if (active("symlink") && path_hit(l)) { errno = err(); return -1; }
    return real(t, l);
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fault-injection shim")
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    out = d / "shim.so"
    run(
        ["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(d / "shim.c"), "-ldl"],
        check=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def base_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("base") / "node"
    init_node(path)
    return path


def fault_env(shim: Path, ops: str, path: str, code: int) -> dict[str, str]:
    return {
        "LD_PRELOAD": str(shim),
        "FAULT_OPS": ops,
        "FAULT_PATH": path,
        "FAULT_ERRNO": str(code),
    }


def outcome(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.splitlines()[-1]))


FAULTS = {
    # name: (ops, path substring)
    "eio_writing_the_rollback_point": ("write", "/rollback/"),
    "enospc_writing_the_rollback_point": ("write", "/rollback/"),
    "eio_fsync_of_staged_files": ("fsync", "/staging/"),
    "eio_writing_the_migrated_database": ("write", "/.migrate-"),
    "enospc_writing_the_migrated_database": ("write", "/.migrate-"),
    "eio_writing_the_manifest": ("write", "/trust/manifests/"),
    "eio_at_the_current_switch_rename": ("rename", "/current"),
    "enospc_at_the_current_switch_symlink": ("symlink", "/.current.tmp-"),
    "eio_fsync_of_the_node_dir_after_switch": ("fsync", "/node"),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_install_fault_leaves_old_version(
    name: str, shim: Path, base_node: Path, tmp_path: Path
) -> None:
    ops, path = FAULTS[name]
    code = errno.ENOSPC if name.startswith("enospc") else errno.EIO
    node = copy_node(base_node, tmp_path / "node")
    env = fault_env(shim, ops, path, code)
    if name == "eio_fsync_of_the_node_dir_after_switch":
        env["FAULT_PATH"] = str(node)  # the directory itself: only its own fsyncs match exactly
        env["FAULT_EXACT"] = "1"
    result = outcome(run_driver({"node": str(node), "ops": ["install-v2"]}, env=env))
    assert result["install-v2"].split(":")[0] in ("InstallError", "MigrationError"), result
    assert os.strerror(code) in result["install-v2"] or "disk" in result["install-v2"], result
    if name == "eio_fsync_of_the_node_dir_after_switch":
        # The rename reached the directory but could not be made durable, and every later
        # fsync of the directory fails too, so the undo cannot finish: the next open finds
        # the journal at "switching" with `current` on the new tree and completes the install.
        assert check_node(node) in ("1.0.0", "2.0.0")
        return
    assert check_node(node) == "1.0.0"
    with NodeStore.open(node) as store:
        assert [i.version for i in store.installed_versions()] == ["1.0.0"]
        assert store.history()[-1]["action"] == "failed"
    # with the fault gone, the same install succeeds
    assert outcome(run_driver({"node": str(node), "ops": ["install-v2"]}))["install-v2"] == "ok"
    assert check_node(node) == "2.0.0"


def test_eio_during_rollback_restore_is_finished_on_reopen(
    shim: Path, base_node: Path, tmp_path: Path
) -> None:
    node = copy_node(base_node, tmp_path / "node")
    assert outcome(run_driver({"node": str(node), "ops": ["install-v2"]}))["install-v2"] == "ok"
    env = fault_env(shim, "write", "/.data-restore/", errno.EIO)
    result = outcome(run_driver({"node": str(node), "ops": ["rollback"]}, env=env))
    assert result["rollback"].startswith("OSError"), result
    assert check_node(node) == "1.0.0"  # the journaled rollback finished at the next open


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, timeout=60)
    try:
        yield path
    finally:
        run(["umount", "-l", str(path)], timeout=60)


@needs_root
def test_real_enospc_while_extracting_into_staging(tmp_path: Path) -> None:
    import hashlib
    import io
    import tarfile

    from blackhole_sync.documents import Artifact, Member, Unpack

    big = bytes(12 * 1024 * 1024)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("huge.bin")
        info.size = len(big)
        info.mode = 0o644
        tf.addfile(info, io.BytesIO(big))
    blob = buf.getvalue()
    member = Member(
        "huge.bin", 0o644, "file", len(big), {"sha256": hashlib.sha256(big).hexdigest()}
    )
    artifact = Artifact(
        "b.tar.gz",
        len(blob),
        {"sha256": hashlib.sha256(blob).hexdigest()},
        unpack=Unpack("tar.gz", (member,)),
    )
    with tmpfs(tmp_path / "fs", "8m") as fs:
        with NodeStore.create(
            fs / "node", root_bytes=b"{}", config_text="", reserve_bytes=0
        ) as store:
            src = tmp_path / "b.tar.gz"
            src.write_bytes(blob)
            tree = store.new_staging_dir()
            with pytest.raises(InstallError, match="No space left"):
                store.stage_archive(src, artifact, tree)
            assert os.listdir(store.staging_dir) == [tree.name]
            assert os.listdir(tree) == []
        with NodeStore.open(fs / "node") as store:
            assert os.listdir(store.staging_dir) == []


@needs_root
def test_full_disk_refuses_install_before_starting(base_node: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "16m") as fs:
        node = copy_node(base_node, fs / "node")
        m2, b2 = v2_release()
        from crashlib import release_files, stage

        with NodeStore.open(node, reserve_bytes=0) as store:
            tree = stage(store, m2, release_files("2.0.0"))
            ballast = fs / "ballast"
            free = store.free_bytes()
            with open(ballast, "wb") as f:
                f.write(bytes(max(0, free - 256 * 1024)))
            with pytest.raises(InsufficientSpaceError):
                anyio.run(store.install, SignedManifest.from_bytes(b2), tree)
            assert store.current_version() == "1.0.0"
            assert store.active_operation() is None
        ballast.unlink()
        assert check_node(node) == "1.0.0"


@needs_root
def test_read_only_node_refuses_to_open_for_writing(base_node: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "32m") as fs:
        node = copy_node(base_node, fs / "node")
        run(["mount", "-o", "remount,ro", str(fs)], check=True, timeout=60)
        try:
            with pytest.raises(InstallError):
                NodeStore.open(node)
            with NodeStore.open(node, read_only=True) as store:
                assert store.current_version() == "1.0.0"
                assert store.verify_installed() == []
                with pytest.raises(InstallError):
                    store.rollback("1.0.0")
        finally:
            run(["mount", "-o", "remount,rw", str(fs)], check=True, timeout=60)
        assert check_node(node) == "1.0.0"


def test_leftovers_planted_in_staging_are_removed_on_open(base_node: Path, tmp_path: Path) -> None:
    node = copy_node(base_node, tmp_path / "node")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    staging = node / "staging"
    (staging / "partial.blob").write_bytes(b"x" * 1000)
    locked = staging / "s-locked"
    (locked / "deep").mkdir(parents=True)
    (locked / "deep" / "f").write_text("f")
    os.chmod(locked / "deep", 0o000)
    os.chmod(locked, 0o500)
    os.symlink(outside, staging / "link-to-outside")
    os.symlink(outside / "keep.txt", staging / "link-to-file")
    assert check_node(node) == "1.0.0"  # opens (recovers) and checks staging is empty
    assert (outside / "keep.txt").read_text() == "precious"
    assert oct(os.stat(staging).st_mode & 0o777) == "0o700"
