"""The bridge to HDiffPatch's C patcher inside the ``hdiffpatch`` wheel (ctypes).

The wheel's Python ``apply(old, diff)`` trusts the diff's header: it allocates the declared
output length, then copies the output into a bytes object (old + 2 x new + diff of memory, and
a 2**40-byte claim is a 1 TiB allocation). Its extension module also exports HDiffPatch's C
entry points, so the ``hdiffpatch`` codec calls ``patch_decompress`` directly with its own
stream callbacks: old is read in place, the diff is served by the caller (decoded on demand,
under declared lengths), and every output byte goes through a write callback that refuses
anything out of order or past the declared length. HDiffPatch itself allocates only its
small read caches.

This depends on the C layouts of HDiffPatch 4.x (``hpatch_TStreamInput`` and
``hpatch_TStreamOutput`` in ``patch_types.h``) as built into ``hdiffpatch`` 2.6.x
(:data:`SUPPORTED_VERSION`). The codec's self-test checks the version and round-trips a small
pair before the codec is used; when it fails, the codec is unavailable (no delta is made or
applied with it), never a crash. The library is loaded without importing the wheel's Python
package (whose import costs more than the apply of a small patch).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SUPPORTED_VERSION", "HPatchError", "library", "patch_stream", "wheel_version"]

#: The ``hdiffpatch`` releases whose exported C layouts this bridge was written against.
SUPPORTED_VERSION = "2.6."

_U64 = ctypes.c_ulonglong


class HPatchError(Exception):
    """The C library could not be loaded or refused the diff (the caller names why)."""


class _TStreamInput(ctypes.Structure):
    pass


class _TStreamOutput(ctypes.Structure):
    pass


_READ = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(_TStreamInput), _U64, ctypes.c_void_p, ctypes.c_void_p
)
_WRITE = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(_TStreamOutput), _U64, ctypes.c_void_p, ctypes.c_void_p
)
_TStreamInput._fields_ = [
    ("streamImport", ctypes.c_void_p),
    ("streamSize", _U64),
    ("read", _READ),
    ("_private_reserved", ctypes.c_void_p),
]
_TStreamOutput._fields_ = [
    ("streamImport", ctypes.c_void_p),
    ("streamSize", _U64),
    ("read_writed", ctypes.c_void_p),
    ("write", _WRITE),
]

_lib: Any = None


def _extension_path() -> Path:
    spec = importlib.util.find_spec("hdiffpatch")  # a top-level package: not imported
    if spec is None or not spec.submodule_search_locations:
        raise HPatchError("the hdiffpatch package is not installed")
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_c_extension{suffix}"
            if path.is_file():
                return path
    raise HPatchError("hdiffpatch has no compiled extension module")


def wheel_version() -> str | None:
    """The installed ``hdiffpatch``'s version, from its ``.dist-info`` beside the package (no
    ``importlib.metadata`` scan); None when it is not installed."""
    spec = importlib.util.find_spec("hdiffpatch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for info in sorted(Path(folder).parent.glob("hdiffpatch-*.dist-info")):
            return info.name[len("hdiffpatch-") : -len(".dist-info")]
    from importlib import metadata

    try:
        return metadata.version("hdiffpatch")
    except metadata.PackageNotFoundError:
        return None


def library() -> Any:
    """The wheel's extension module as a C library, its two entry points typed."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(str(_extension_path()))
            lib.patch_decompress.argtypes = [
                ctypes.POINTER(_TStreamOutput),
                ctypes.POINTER(_TStreamInput),
                ctypes.POINTER(_TStreamInput),
                ctypes.c_void_p,
            ]
            lib.patch_decompress.restype = ctypes.c_int
            lib.mem_as_hStreamInput.argtypes = [
                ctypes.POINTER(_TStreamInput),
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            lib.mem_as_hStreamInput.restype = None
        except (OSError, AttributeError) as e:
            raise HPatchError(f"HDiffPatch's C patcher is not usable: {e}") from e
        _lib = lib
    return _lib


def _address(data: bytes) -> int:
    """Address of a bytes object's buffer (no copy); valid while ``data`` is alive."""
    addr = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    if addr is None:
        raise HPatchError("no buffer")
    return addr


def patch_stream(
    old: bytes,
    old_off: int,
    old_len: int,
    diff_size: int,
    read: Callable[[int, int], bytes],
    new_len: int,
    write: Callable[[int, bytes], None],
) -> bool:
    """Run ``patch_decompress`` over ``old[old_off:old_off + old_len]`` (read in place).

    ``read(pos, n)`` serves ``n`` bytes of the (virtual) uncompressed diff at ``pos``;
    ``write(pos, data)`` takes output at ``pos``. Either may raise: the exception is re-raised
    here after the C call returns (it sees a failed callback and stops). The caller has checked
    that ``old_off + old_len <= len(old)``. Returns HDiffPatch's verdict.
    """
    lib = library()
    errors: list[BaseException] = []

    def on_read(_stream: object, pos: int, start: int, end: int) -> int:
        try:
            if end < start or pos > diff_size or end - start > diff_size - pos:
                raise HPatchError("HDiffPatch read past the diff")
            data = read(pos, end - start)
            ctypes.memmove(start, data, end - start)
            return 1
        except BaseException as e:  # reported after the C call returns  # noqa: BLE001
            errors.append(e)
            return 0

    def on_write(_stream: object, pos: int, start: int, end: int) -> int:
        try:
            if end < start:
                raise HPatchError("HDiffPatch wrote a negative length")
            write(pos, ctypes.string_at(start, end - start))
            return 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            return 0

    read_cb, write_cb = _READ(on_read), _WRITE(on_write)
    old_in = _TStreamInput()
    base = _address(old) + old_off
    lib.mem_as_hStreamInput(ctypes.byref(old_in), base, base + old_len)
    diff_in = _TStreamInput(None, diff_size, read_cb, None)
    out = _TStreamOutput(None, new_len, None, write_cb)
    ok = lib.patch_decompress(ctypes.byref(out), ctypes.byref(old_in), ctypes.byref(diff_in), None)
    del read_cb, write_cb
    if errors:
        raise errors[0]
    return bool(ok)
