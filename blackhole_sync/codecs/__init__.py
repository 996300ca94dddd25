"""Byte transforms used by both sides: delta codecs, archives, compression, encryption
to node keys.

Names load lazily (PEP 562): importing the package costs nothing until a name
is used, so a command imports only the modules it needs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: name -> the module of this package that provides it
_EXPORTS: dict[str, str] = {
    "ARCHIVE_SUFFIXES": "archive",
    "ApplyLimits": "delta",
    "ArchiveEntry": "archive",
    "AvailableUpdates": "delta",
    "BUILTIN_CODECS": "delta",
    "Bsdiff4Codec": "delta",
    "Bsdiff4LzmaCodec": "delta",
    "DEFAULT_CANDIDATES": "delta",
    "DEFAULT_CHUNK_SIZE": "crypto",
    "DEFAULT_CODEC": "delta",
    "DEFAULT_DIFF_MEMORY_BUDGET": "delta",
    "Decryptor": "crypto",
    "DeltaEdge": "delta",
    "DeltaPatch": "delta",
    "FullDownload": "delta",
    "MAX_ENTRIES": "archive",
    "MemberDelta": "delta",
    "PatchCodec": "delta",
    "SCHEME": "crypto",
    "SecureChannel": "crypto",
    "SecureDistribution": "crypto",
    "SizedPatchCodec": "delta",
    "UpdateOptimizer": "delta",
    "UpdatePath": "delta",
    "apply_patch": "delta",
    "apply_patch_bytes": "delta",
    "archive_format": "archive",
    "ciphertext_length": "crypto",
    "codec_table": "delta",
    "codecs": "delta",
    "decrypt_file": "crypto",
    "decrypt_stream": "crypto",
    "diff_memory_needed": "delta",
    "encrypt_file": "crypto",
    "extract_archive": "archive",
    "extract_files": "archive",
    "generate_delta": "delta",
    "get_codec": "delta",
    "iter_entries": "archive",
    "list_members": "archive",
    "member_deltas": "delta",
    "open_sealed_key": "crypto",
    "pack_directory": "archive",
    "seal_key": "crypto",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static names for type checkers
    from .archive import (
        ARCHIVE_SUFFIXES as ARCHIVE_SUFFIXES,
        MAX_ENTRIES as MAX_ENTRIES,
        ArchiveEntry as ArchiveEntry,
        archive_format as archive_format,
        extract_archive as extract_archive,
        extract_files as extract_files,
        iter_entries as iter_entries,
        list_members as list_members,
        pack_directory as pack_directory,
    )
    from .crypto import (
        DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE,
        SCHEME as SCHEME,
        Decryptor as Decryptor,
        SecureChannel as SecureChannel,
        SecureDistribution as SecureDistribution,
        ciphertext_length as ciphertext_length,
        decrypt_file as decrypt_file,
        decrypt_stream as decrypt_stream,
        encrypt_file as encrypt_file,
        open_sealed_key as open_sealed_key,
        seal_key as seal_key,
    )
    from .delta import (
        BUILTIN_CODECS as BUILTIN_CODECS,
        DEFAULT_CANDIDATES as DEFAULT_CANDIDATES,
        DEFAULT_CODEC as DEFAULT_CODEC,
        DEFAULT_DIFF_MEMORY_BUDGET as DEFAULT_DIFF_MEMORY_BUDGET,
        ApplyLimits as ApplyLimits,
        AvailableUpdates as AvailableUpdates,
        Bsdiff4Codec as Bsdiff4Codec,
        Bsdiff4LzmaCodec as Bsdiff4LzmaCodec,
        DeltaEdge as DeltaEdge,
        DeltaPatch as DeltaPatch,
        FullDownload as FullDownload,
        MemberDelta as MemberDelta,
        PatchCodec as PatchCodec,
        SizedPatchCodec as SizedPatchCodec,
        UpdateOptimizer as UpdateOptimizer,
        UpdatePath as UpdatePath,
        apply_patch as apply_patch,
        apply_patch_bytes as apply_patch_bytes,
        codec_table as codec_table,
        codecs as codecs,
        diff_memory_needed as diff_memory_needed,
        generate_delta as generate_delta,
        get_codec as get_codec,
        member_deltas as member_deltas,
    )
