"""Byte transforms used by both sides: delta codecs (:mod:`.delta`), archives, transfer
compression (:mod:`.compress`), encryption to node keys, and key files (:mod:`.keyfile`).

Names load lazily (PEP 562): importing the package costs nothing until a name
is used, so a command imports only the modules it needs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: name -> the module of this package that provides it
_EXPORTS: dict[str, str] = {
    "ARCHIVE_SUFFIXES": "archive",
    "ASSUMED_BANDWIDTH": "delta",
    "ApplyLimits": "delta",
    "ApplyWorker": "delta",
    "ArchiveEntry": "archive",
    "AvailableUpdates": "delta",
    "BUILTIN_CODECS": "delta",
    "Bsdiff4Codec": "delta",
    "Bsdiff4LzmaCodec": "delta",
    "CreateBudget": "delta",
    "DEFAULT_CANDIDATES": "delta",
    "DEFAULT_CHUNK_SIZE": "crypto",
    "DEFAULT_CODEC": "delta",
    "DEFAULT_DIFF_MEMORY_BUDGET": "delta",
    "Decryptor": "crypto",
    "DeltaEdge": "delta",
    "DeltaPatch": "delta",
    "FullDownload": "delta",
    "HDiffPatchCodec": "delta",
    "KDF_BOUNDS": "keyfile",
    "KDF_DEFAULT": "keyfile",
    "KEY_FILE_MAX": "keyfile",
    "KeyFileInfo": "keyfile",
    "MAX_ENTRIES": "archive",
    "MemberDelta": "delta",
    "PASSPHRASE_ENV": "keyfile",
    "Passphrase": "keyfile",
    "PatchCodec": "delta",
    "SCHEME": "crypto",
    "SecureChannel": "crypto",
    "SecureDistribution": "crypto",
    "SizedPatchCodec": "delta",
    "StreamingPatchCodec": "delta",
    "TRANSFER_CODECS": "compress",
    "TransferBlob": "compress",
    "UpdateOptimizer": "delta",
    "UpdatePath": "delta",
    "WrongKeyKindError": "keyfile",
    "ZstdPatchCodec": "delta",
    "apply_patch": "delta",
    "apply_patch_bytes": "delta",
    "archive_format": "archive",
    "ciphertext_length": "crypto",
    "libp2p_peer_id": "crypto",
    "codec_available": "delta",
    "codec_table": "delta",
    "codecs": "delta",
    "compress_file": "compress",
    "decompress_file": "compress",
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
    "load_private_key": "keyfile",
    "load_public_key": "keyfile",
    "make_delta": "delta",
    "member_deltas": "delta",
    "open_sealed_key": "crypto",
    "pack_directory": "archive",
    "probe_related": "delta",
    "read_key_file": "keyfile",
    "seal_key": "crypto",
    "select_patch": "delta",
    "write_key_pair": "keyfile",
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
    from .compress import (
        TRANSFER_CODECS as TRANSFER_CODECS,
        TransferBlob as TransferBlob,
        compress_file as compress_file,
        decompress_file as decompress_file,
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
        libp2p_peer_id as libp2p_peer_id,
        open_sealed_key as open_sealed_key,
        seal_key as seal_key,
    )
    from .delta import (
        ASSUMED_BANDWIDTH as ASSUMED_BANDWIDTH,
        BUILTIN_CODECS as BUILTIN_CODECS,
        DEFAULT_CANDIDATES as DEFAULT_CANDIDATES,
        DEFAULT_CODEC as DEFAULT_CODEC,
        DEFAULT_DIFF_MEMORY_BUDGET as DEFAULT_DIFF_MEMORY_BUDGET,
        ApplyLimits as ApplyLimits,
        ApplyWorker as ApplyWorker,
        AvailableUpdates as AvailableUpdates,
        Bsdiff4Codec as Bsdiff4Codec,
        Bsdiff4LzmaCodec as Bsdiff4LzmaCodec,
        CreateBudget as CreateBudget,
        DeltaEdge as DeltaEdge,
        DeltaPatch as DeltaPatch,
        FullDownload as FullDownload,
        HDiffPatchCodec as HDiffPatchCodec,
        MemberDelta as MemberDelta,
        PatchCodec as PatchCodec,
        SizedPatchCodec as SizedPatchCodec,
        StreamingPatchCodec as StreamingPatchCodec,
        UpdateOptimizer as UpdateOptimizer,
        UpdatePath as UpdatePath,
        ZstdPatchCodec as ZstdPatchCodec,
        apply_patch as apply_patch,
        apply_patch_bytes as apply_patch_bytes,
        codec_available as codec_available,
        codec_table as codec_table,
        codecs as codecs,
        diff_memory_needed as diff_memory_needed,
        generate_delta as generate_delta,
        get_codec as get_codec,
        make_delta as make_delta,
        member_deltas as member_deltas,
        probe_related as probe_related,
        select_patch as select_patch,
    )
    from .keyfile import (
        KDF_BOUNDS as KDF_BOUNDS,
        KDF_DEFAULT as KDF_DEFAULT,
        KEY_FILE_MAX as KEY_FILE_MAX,
        PASSPHRASE_ENV as PASSPHRASE_ENV,
        KeyFileInfo as KeyFileInfo,
        Passphrase as Passphrase,
        WrongKeyKindError as WrongKeyKindError,
        load_private_key as load_private_key,
        load_public_key as load_public_key,
        read_key_file as read_key_file,
        write_key_pair as write_key_pair,
    )
