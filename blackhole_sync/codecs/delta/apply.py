"""Applying a patch: in a bounded child interpreter (:func:`apply_patch`), or in process.

:func:`apply_patch` is what the installer uses. The parent checks the patch's length and sha256
(:class:`~blackhole_sync.errors.LengthOrHashMismatchError`, a security refusal), then runs a
child interpreter with the request. The child limits itself -- address space (``RLIMIT_AS``,
see :class:`ApplyLimits`), CPU seconds, file size (the output length), no core dumps -- and,
before it parses a byte of the patch, checks the source's sha256
(:class:`~blackhole_sync.errors.PatchSourceMismatchError`) and the output length the patch
declares against the manifest's (:class:`~blackhole_sync.errors.PatchOutputError`). It then
applies the patch into a temporary file beside ``output``, streaming when the codec streams.
Back in the parent, the output's length and sha256 must match the manifest or the file is
removed; a wall-clock timeout bounds the whole. Nothing is written outside ``output.parent``
and no partial output survives a failure.

The child's exit report names the error class; anything else (a crash, a signal) is a
:class:`~blackhole_sync.errors.PatchError`. Either way the caller falls back to a full
download. A caller that knows a patch is coming can start the child first
(:class:`ApplyWorker`): its interpreter loads while the patch downloads.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import frozen

from ..._fsutil import fsync_fd, replace, sha256, sha256_hex
from ...errors import (
    LengthOrHashMismatchError,
    PatchError,
    PatchFormatError,
    PatchOutputError,
    PatchSourceMismatchError,
)
from .base import (
    HEAD_BYTES,
    MiB,
    PatchCodec,
    SizedPatchCodec,
    StreamingPatchCodec,
    check_declared,
    codec_available,
)
from .registry import DEFAULT_CODEC, get_codec, is_builtin

__all__ = ["WORKER_INTERPRETER", "ApplyLimits", "ApplyWorker", "apply_patch", "apply_patch_bytes"]

_CHUNK = 1 * MiB
#: Address space of the apply worker's interpreter before it reads its inputs (imports and
#: loaded libraries), for planning: the worker measures its own and adds the allowance to it.
WORKER_INTERPRETER = 64 * MiB


@frozen
class ApplyLimits:
    """Bounds of one patch apply in the child worker (defaults suit artifacts up to ~1 GiB).

    The child's address space is what its interpreter holds once its imports are done, plus
    the source and the patch (both read whole), plus an allowance:

    * a streaming codec (``hdiffpatch``, ``zstd-patch``): the output length plus
      ``stream_overhead`` -- so the apply holds at most old + patch + output + 64 MiB however
      hostile the patch (the output itself goes to the file, never to memory);
    * any other codec (``bsdiff4``, ``bsdiff4-lzma``, plugin codecs that return bytes):
      ``memory_base + memory_per_output_byte * output_length`` (their decoders hold the output
      and up to three raw streams of its size).

    It gets ``cpu_seconds`` of CPU and ``timeout`` seconds of wall time.
    """

    memory_base: int = 256 * MiB
    memory_per_output_byte: int = 4
    stream_overhead: int = 64 * MiB
    timeout: float = 300.0
    cpu_seconds: int = 300

    def allowance(self, output_length: int, *, streaming: bool) -> int:
        """Bytes the codec may allocate beyond the interpreter and its inputs."""
        if streaming:
            return output_length + self.stream_overhead
        return self.memory_base + self.memory_per_output_byte * output_length

    def address_space(
        self,
        source_length: int,
        output_length: int,
        *,
        streaming: bool = False,
        patch_length: int = 0,
    ) -> int:
        """The child's limit beyond its interpreter: inputs plus :meth:`allowance`."""
        return source_length + patch_length + self.allowance(output_length, streaming=streaming)

    def memory_needed(
        self, codec: object, source_length: int, patch_length: int, output_length: int
    ) -> int:
        """The whole worker's bound for one apply (with :data:`WORKER_INTERPRETER`), as a
        node's ``delta_memory_budget`` is compared with."""
        streaming = isinstance(codec, StreamingPatchCodec)
        return WORKER_INTERPRETER + self.address_space(
            source_length, output_length, streaming=streaming, patch_length=patch_length
        )


_WORKER_CODE = "from blackhole_sync.codecs.delta.apply import _worker_main; _worker_main()"


class ApplyWorker:
    """A bounded apply worker started ahead of its request; it waits for one request on its
    standard input (see :func:`apply_patch`'s ``worker``). :meth:`close` it when unused."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )

    def run(self, request: dict[str, Any], timeout: float) -> tuple[int, bytes, bytes]:
        """Send the request; (exit status, stdout, stderr). Killed at ``timeout`` seconds."""
        try:
            out, err = self.proc.communicate(json.dumps(request).encode(), timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.close()
            raise PatchError(f"patch apply timed out after {timeout} s") from e
        return self.proc.returncode, out, err

    def close(self) -> None:
        """Stop the worker if it is still running (an unused or abandoned one)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
        # after a timed-out communicate() the request pipe may still be open (and hold
        # unsent bytes: closing it may meet the dead reader)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()

    def __enter__(self) -> ApplyWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve(codec: str | PatchCodec, table: Mapping[str, PatchCodec] | None) -> PatchCodec:
    return get_codec(codec, table) if isinstance(codec, str) else codec


def _hash_file(path: Path, *, cap: int | None = None) -> tuple[str, int]:
    digest = sha256()
    total = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            total += len(chunk)
            if cap is not None and total > cap:
                return "", total
            digest.update(chunk)
    return digest.hexdigest(), total


def apply_patch_bytes(
    old: bytes,
    patch: bytes,
    *,
    codec: str | PatchCodec = DEFAULT_CODEC,
    max_output: int,
    source_sha256: str | None = None,
    output_sha256: str | None = None,
    table: Mapping[str, PatchCodec] | None = None,
) -> bytes:
    """Apply ``patch`` in this process (decompression is bounded, memory is not otherwise).

    For small inputs, the release builder's verification and tests; the installer uses
    :func:`apply_patch`.
    """
    impl = _resolve(codec, table)
    if source_sha256 is not None and sha256_hex(old) != source_sha256:
        raise PatchSourceMismatchError("the source is not the one the patch was made from")
    if isinstance(impl, SizedPatchCodec):
        check_declared(impl.declared_output_length(patch[:HEAD_BYTES]), max_output)
    out = impl.apply(old, patch, max_output=max_output)
    if len(out) > max_output:
        raise PatchOutputError("patch produced more bytes than allowed")
    if output_sha256 is not None and sha256_hex(out) != output_sha256:
        raise PatchOutputError("patch output does not match the expected sha256")
    return out


_ERRORS: dict[str, type[PatchError]] = {
    cls.__name__: cls
    for cls in (PatchError, PatchFormatError, PatchOutputError, PatchSourceMismatchError)
}


def apply_patch(
    source: str | os.PathLike[str],
    patch: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    source_sha256: str,
    patch_sha256: str,
    patch_length: int,
    output_sha256: str,
    output_length: int,
    codec: str | PatchCodec = DEFAULT_CODEC,
    table: Mapping[str, PatchCodec] | None = None,
    limits: ApplyLimits | None = None,
    worker: ApplyWorker | None = None,
) -> None:
    """Apply the patch file to the source file, writing ``output`` (inside its staging dir).

    The expected values come from signed metadata. Raises PatchSourceMismatchError,
    LengthOrHashMismatchError, PatchFormatError, PatchOutputError or PatchError; on any failure
    ``output`` is not created (an existing file there is left as it was). ``worker``: one
    started beforehand (used once; a new one is started when None).
    """
    source, patch, output = Path(source), Path(patch), Path(output)
    limits = ApplyLimits() if limits is None else limits
    impl = _resolve(codec, table)
    if not codec_available(impl):
        raise PatchError(f"patch codec {impl.name!r} is unavailable in this process")
    if not output.parent.is_dir():
        raise ValueError(f"output directory {output.parent} does not exist")

    if os.stat(patch).st_size != patch_length:
        raise LengthOrHashMismatchError(f"patch {patch} has the wrong length")
    digest, _ = _hash_file(patch, cap=patch_length)
    if digest != patch_sha256:
        raise LengthOrHashMismatchError(f"patch {patch} does not match its signed sha256")

    streaming = isinstance(impl, StreamingPatchCodec)
    request: dict[str, Any] = {
        "source": os.fspath(source.absolute()),
        "source_sha256": source_sha256,
        "patch": os.fspath(patch.absolute()),
        "patch_sha256": patch_sha256,
        "max_output": output_length,
        "allowance": limits.address_space(
            os.stat(source).st_size, output_length, streaming=streaming, patch_length=patch_length
        ),
        "cpu_seconds": limits.cpu_seconds,
    }
    if is_builtin(impl):
        request["codec"] = impl.name
    else:
        request["codec_pickle"] = base64.b64encode(pickle.dumps(impl)).decode("ascii")

    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        request["output"] = tmp_name
        _run_worker(request, limits.timeout, worker)
        digest, length = _hash_file(tmp, cap=output_length)
        if length != output_length or digest != output_sha256:
            raise PatchOutputError("patch output does not match the expected length and sha256")
        with open(tmp, "rb") as fh:
            fsync_fd(fh.fileno())
        replace(tmp, output, sync=False)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _run_worker(request: dict[str, Any], timeout: float, worker: ApplyWorker | None) -> None:
    with worker or ApplyWorker() as running:
        status, out, err = running.run(request, timeout)
    if status == 0:
        return
    try:
        report = json.loads(out.decode().strip().splitlines()[-1])
        cls = _ERRORS.get(report["error"], PatchError)
        message = str(report["message"])
    except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError):
        cls = PatchError
        message = f"patch worker exited with status {status}"
        tail = err.decode(errors="replace").strip().splitlines()[-1:]
        if tail:
            message += f": {tail[0][:300]}"
    raise cls(message)


# -- the child ---------------------------------------------------------------------------------


def _worker_main() -> None:
    """The apply worker: reads one JSON request on stdin, writes the output file, exits.

    Errors are reported as one JSON line on stdout and exit status 3.
    """
    request = json.loads(sys.stdin.buffer.read())
    try:
        _worker_apply(request)
    except PatchError as e:
        _report(type(e).__name__, str(e))
    except MemoryError:
        _report("PatchOutputError", "patch apply exceeded its memory bound")
    except OSError as e:  # the output file's size limit, a vanished input
        _report("PatchError", f"patch apply failed: {e}")
    sys.exit(0)


def _report(name: str, message: str) -> None:
    sys.stdout.write(json.dumps({"error": name, "message": message}) + "\n")
    sys.stdout.flush()
    sys.exit(3)


def _address_space_now() -> int:
    """This process's virtual size (Linux), else the planning constant."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return WORKER_INTERPRETER


def _read_checked(path: str, expected: str, error: type[PatchError], what: str) -> bytes:
    data = Path(path).read_bytes()
    if sha256_hex(data) != expected:
        raise error(what)
    return data


def _worker_apply(request: dict[str, Any]) -> None:
    max_output = int(request["max_output"])
    cpu = int(request["cpu_seconds"])
    if "codec" in request:
        impl = get_codec(str(request["codec"]))
    else:
        # The pickle comes from our own parent process over a pipe, not from the network.
        impl = pickle.loads(base64.b64decode(str(request["codec_pickle"])))  # noqa: S301
    prepare = getattr(impl, "prepare", None)
    if prepare is not None:
        prepare()  # load the codec's libraries before the address space is measured
    limit = _address_space_now() + int(request["allowance"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_output, max_output))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    old = _read_checked(
        request["source"],
        request["source_sha256"],
        PatchSourceMismatchError,
        "the source is not the one the patch was made from",
    )
    patch = _read_checked(
        request["patch"], request["patch_sha256"], PatchFormatError, "the patch changed"
    )
    if isinstance(impl, SizedPatchCodec):
        check_declared(impl.declared_output_length(patch[:HEAD_BYTES]), max_output)
    fd = os.open(str(request["output"]), os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    with os.fdopen(fd, "wb", buffering=_CHUNK) as fh:
        if isinstance(impl, StreamingPatchCodec):
            written = impl.apply_to(old, patch, max_output=max_output, sink=fh)
        else:
            out = impl.apply(old, patch, max_output=max_output)
            del old, patch
            if len(out) > max_output:
                raise PatchOutputError("patch produced more bytes than allowed")
            fh.write(out)
            written = len(out)
    if written > max_output:
        raise PatchOutputError("patch produced more bytes than allowed")
