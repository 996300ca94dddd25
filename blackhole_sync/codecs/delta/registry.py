"""The table of patch codecs: the built-ins, plus those plugins register.

Built-in codecs (the names signed manifests carry):

==================  =====================================================================
``hdiffpatch``      the default (:mod:`.hdiff`): HDiffPatch's matcher, LZMA2 streams, apply
                    streamed through HDiffPatch's C patcher under declared lengths
``zstd-patch``      ``zstd --patch-from --long`` (:mod:`.zstdpatch`), a second candidate
                    where HDiffPatch's patch is poor
``bsdiff4-lzma``    bsdiff4 in our LZMA2 container (:mod:`.bsdiff`), the previous default:
                    applied, no longer made unless asked for
``bsdiff4``         bsdiff4 1.3 as shipped: applied, made only when asked for
==================  =====================================================================

Plugins add codecs through the ``blackhole_sync_patch_codecs`` hook; :func:`codec_table`
merges them with the built-ins (a name given twice is refused). A codec whose self-test fails
(:func:`~blackhole_sync.codecs.delta.base.codec_available`) stays in the table, so that its name
is known, but is never chosen and its patches are not applied: the node fetches the artifact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ...errors import MissingPluginError
from .base import PatchCodec
from .bsdiff import Bsdiff4Codec, Bsdiff4LzmaCodec
from .hdiff import HDiffPatchCodec
from .zstdpatch import ZstdPatchCodec

__all__ = [
    "BUILTIN_CODECS",
    "DEFAULT_CANDIDATES",
    "DEFAULT_CODEC",
    "codec_table",
    "codecs",
    "get_codec",
]

#: The codec a release builder prefers (the reference of its CPU budget).
DEFAULT_CODEC = "hdiffpatch"
#: Built-in codecs a release builder tries, in order (plugin codecs are added after them).
DEFAULT_CANDIDATES: tuple[str, ...] = ("hdiffpatch", "zstd-patch")

BUILTIN_CODECS: tuple[PatchCodec, ...] = (
    HDiffPatchCodec(),
    ZstdPatchCodec(),
    Bsdiff4LzmaCodec(),
    Bsdiff4Codec(),
)

#: The built-in codecs by name. Use :func:`codec_table` to include plugin codecs.
codecs: dict[str, PatchCodec] = {c.name: c for c in BUILTIN_CODECS}


def codec_table(extra: Iterable[PatchCodec] = ()) -> dict[str, PatchCodec]:
    """Merge the built-in codecs with plugin ones; a name given twice is refused (ValueError)."""
    table = dict(codecs)
    for codec in extra:
        if not isinstance(codec, PatchCodec) or not isinstance(codec.name, str) or not codec.name:
            raise TypeError(f"{codec!r} is not a PatchCodec")
        if codec.name in table:
            raise ValueError(f"patch codec {codec.name!r} is registered twice")
        table[codec.name] = codec
    return table


def get_codec(name: str, table: Mapping[str, PatchCodec] | None = None) -> PatchCodec:
    """The codec called ``name``; MissingPluginError when no installed codec has that name."""
    table = codecs if table is None else table
    try:
        return table[name]
    except KeyError:
        raise MissingPluginError(
            f"no patch codec named {name!r}; install a plugin that provides it through the "
            "'blackhole_sync_patch_codecs' hook (entry-point group 'blackhole_sync')"
        ) from None


def is_builtin(codec: PatchCodec) -> bool:
    """Whether ``codec`` is the built-in of its name (the apply worker rebuilds it by name)."""
    return codecs.get(codec.name) == codec
