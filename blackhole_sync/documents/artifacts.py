"""What a release ships, byte for byte: artifacts, archive members, encryption and deltas.

An :class:`Artifact` is content-addressed by sha256 (``blobs/<sha256>``); its ``length`` and
``hashes`` are always those of the installed bytes. Its blob on the wire may differ: a
compressed artifact carries a :class:`Transfer` (codec, length and sha256 of the compressed
blob), an encrypted one its ciphertext's length and hash and its key sealed to each
:class:`Recipient` (:attr:`Artifact.blob` is what is fetched). An archive marked to unpack lists
every :class:`Member` with its path, mode and hash; a :class:`DeltaRecord` is a patch from an
earlier version's artifact (or member) to this one's installed bytes.
Names and paths are checked so that none can escape its directory.

``_plain_artifact`` is an accept-only fast path for the common shape of an artifact: it returns
what the full parser would, or None and the full parser decides (and names the error).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from ..errors import FormatError, UnsafePathError
from .canonical import MAX_INT
from .fields import (
    _HEX64,
    _NAME_RE,
    _PLAIN_NAME,
    MetaFile,
    _channel_name,
    _check_mode,
    _drop_unset,
    _hashes,
    _Reader,
    check_safe_name,
    check_safe_path,
)
from .signing import PublicKey

__all__ = ["Artifact", "DeltaRecord", "Encryption", "Member", "Recipient", "Transfer", "Unpack"]


@frozen
class Member:
    """One entry of an archive marked to unpack: a file or a directory."""

    path: str
    mode: int
    type: str = "file"  # "file" | "dir"
    length: int | None = None
    hashes: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = field(factory=dict)

    @property
    def sha256(self) -> str | None:
        return None if self.hashes is None else self.hashes["sha256"]

    @classmethod
    def from_dict(cls, obj: Any, where: str = "member") -> Member:
        r = _Reader(obj, where)
        path = check_safe_path(r.string("path", max_len=4096), f"{where}.path")
        mode = _check_mode(r.integer("mode", maximum=0o7777), f"{where}.mode")
        kind = r.string("type", "file")
        if kind not in ("file", "dir"):
            raise UnsafePathError(f"{where}.type: {kind!r} (only files and directories)")
        length = r.integer("length", None)
        hashes = r.obj_("hashes", _hashes, None)
        if kind == "file" and (length is None or hashes is None or "sha256" not in hashes):
            raise FormatError(f"{where}: a file member needs length and sha256")
        if kind == "dir" and (length is not None or hashes is not None):
            raise FormatError(f"{where}: a directory has no length or hashes")
        return cls(path, mode, kind, length, hashes, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "path": self.path,
                "mode": self.mode,
                "type": self.type,
                "length": self.length,
                "hashes": None if self.hashes is None else dict(self.hashes),
            },
        )


@frozen
class Unpack:
    format: str  # "tar" | "zip"
    members: tuple[Member, ...]
    extra: Mapping[str, Any] = field(factory=dict)

    FORMATS: ClassVar[tuple[str, ...]] = ("tar", "tar.gz", "tar.xz", "tar.bz2", "zip")

    @classmethod
    def from_dict(cls, obj: Any, where: str = "unpack") -> Unpack:
        r = _Reader(obj, where)
        fmt = r.string("format", max_len=16)
        if fmt not in cls.FORMATS:
            raise FormatError(f"{where}.format: unknown archive format {fmt!r}")
        members = r.items("members", Member.from_dict, max_items=100_000)
        seen: set[str] = set()
        for m in members:
            if m.path in seen:
                raise UnsafePathError(f"{where}: member {m.path!r} listed twice")
            seen.add(m.path)
        return cls(fmt, members, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "format": self.format, "members": [m.to_dict() for m in self.members]}


@frozen
class Recipient:
    """The artifact key sealed (X25519 sealed box) to one node's key."""

    public: str  # the node's ed25519 public key, hex
    sealed_key: str  # hex
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "recipient") -> Recipient:
        r = _Reader(obj, where)
        public = PublicKey.from_hex(r.string("public", max_len=64)).hex
        sealed = r.string("sealed_key", max_len=512)
        if not re.fullmatch(r"[0-9a-f]+", sealed):
            raise FormatError(f"{where}.sealed_key: expected hex")
        return cls(public, sealed, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "public": self.public, "sealed_key": self.sealed_key}


@frozen
class Encryption:
    """How an artifact's ciphertext blob is made; the artifact's own hashes are the plaintext's."""

    scheme: str
    ciphertext: MetaFile
    recipients: tuple[Recipient, ...]
    chunk_size: int = 65536
    extra: Mapping[str, Any] = field(factory=dict)

    SCHEMES: ClassVar[tuple[str, ...]] = ("secretstream-xchacha20poly1305+sealedbox-x25519",)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "encryption") -> Encryption:
        r = _Reader(obj, where)
        scheme = r.string("scheme", max_len=128)
        if scheme not in cls.SCHEMES:
            raise FormatError(f"{where}.scheme: unknown scheme {scheme!r}")
        ciphertext = r.obj_("ciphertext", MetaFile.from_dict)
        recipients = r.items("recipients", Recipient.from_dict, max_items=100_000)
        if not recipients:
            raise FormatError(f"{where}.recipients: empty")
        chunk = r.integer("chunk_size", 65536, minimum=1024, maximum=16 * 1024 * 1024)
        return cls(scheme, ciphertext, recipients, chunk, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "scheme": self.scheme,
            "ciphertext": self.ciphertext.to_dict(),
            "recipients": [x.to_dict() for x in self.recipients],
            "chunk_size": self.chunk_size,
        }


@frozen
class Transfer:
    """The blob an artifact travels as when it is not its installed bytes (compressed).

    ``codec`` names how the installed bytes come back (``zstd``: one zstd frame declaring the
    artifact's length); ``length`` and ``sha256`` are the blob's. A node that does not know the
    codec cannot fetch the artifact whole (the manifest still parses).
    """

    codec: str
    length: int
    sha256: str
    extra: Mapping[str, Any] = field(factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "transfer") -> Transfer:
        r = _Reader(obj, where)
        codec = _channel_name(r.string("codec", max_len=32), f"{where}.codec")
        length = r.integer("length")
        digest = r.string("sha256", max_len=64)
        if _HEX64.match(digest) is None:
            raise FormatError(f"{where}.sha256: expected 64 lowercase hex digits")
        return cls(codec, length, digest, r.extra())

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "codec": self.codec, "length": self.length, "sha256": self.sha256}

    @property
    def meta(self) -> MetaFile:
        return MetaFile(self.length, {"sha256": self.sha256})


@frozen
class Artifact:
    """One file of a release, content-addressed by sha256 (``blobs/<sha256>``).

    ``length`` and ``hashes`` are the installed bytes'; ``transfer`` (optional) the compressed
    blob fetched instead.
    """

    name: str
    length: int
    hashes: Mapping[str, str]
    mode: int = 0o644
    platform: str = "any"
    arch: str = "any"
    unpack: Unpack | None = None
    locators: tuple[Mapping[str, str], ...] = ()
    encryption: Encryption | None = None
    extra: Mapping[str, Any] = field(factory=dict)
    transfer: Transfer | None = None

    @property
    def sha256(self) -> str:
        return self.hashes["sha256"]

    @property
    def blob(self) -> MetaFile:
        """What is fetched: the ciphertext when encrypted, the transfer blob when compressed,
        else the artifact itself."""
        if self.encryption is not None:
            return self.encryption.ciphertext
        if self.transfer is not None:
            return self.transfer.meta
        return MetaFile(self.length, self.hashes)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "artifact") -> Artifact:
        plain = _plain_artifact(obj)
        if plain is not None:
            return plain
        r = _Reader(obj, where)
        name = check_safe_name(r.string("name", max_len=1024), f"{where}.name")
        length = r.integer("length")
        hashes = r.obj_("hashes", _hashes)
        if "sha256" not in hashes:
            raise FormatError(f"{where}.hashes: sha256 is required")
        mode = _check_mode(r.integer("mode", 0o644, maximum=0o7777), f"{where}.mode")
        platform = _channel_name(r.string("platform", "any", max_len=64), f"{where}.platform")
        arch = _channel_name(r.string("arch", "any", max_len=64), f"{where}.arch")
        unpack = r.obj_("unpack", Unpack.from_dict, None)
        locators = r.items("locators", _locator, (), max_items=64)
        encryption = r.obj_("encryption", Encryption.from_dict, None)
        transfer = r.obj_("transfer", Transfer.from_dict, None)
        if transfer is not None and encryption is not None:
            raise FormatError(f"{where}: an encrypted artifact has no transfer encoding")
        return cls(
            name,
            length,
            hashes,
            mode,
            platform,
            arch,
            unpack,
            locators,
            encryption,
            r.extra(),
            transfer,
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "name": self.name,
                "length": self.length,
                "hashes": dict(self.hashes),
                "mode": self.mode,
                "platform": self.platform,
                "arch": self.arch,
                "unpack": None if self.unpack is None else self.unpack.to_dict(),
                "locators": [dict(x) for x in self.locators] if self.locators else None,
                "encryption": None if self.encryption is None else self.encryption.to_dict(),
                "transfer": None if self.transfer is None else self.transfer.to_dict(),
            },
        )


_PLAIN_ARTIFACT_FIELDS = frozenset(
    {"name", "length", "hashes", "mode", "platform", "arch", "locators", "transfer"}
)


def _plain_transfer(value: Any) -> Transfer | None:
    """:meth:`Transfer.from_dict` for plainly valid input; None means "ask the parser"."""
    if type(value) is not dict or len(value) != 3:
        return None
    codec, length, digest = value.get("codec"), value.get("length"), value.get("sha256")
    if (
        type(codec) is not str
        or len(codec) > 32
        or _NAME_RE.match(codec) is None
        or type(length) is not int
        or not 0 <= length <= MAX_INT
        or type(digest) is not str
        or _HEX64.match(digest) is None
    ):
        return None
    return Transfer(codec, length, digest, {})


def _plain_locator(value: Any) -> dict[str, str] | None:
    """:func:`_locator` for plainly valid input; None means "ask :func:`_locator`"."""
    if type(value) is not dict or len(value) != 2:
        return None
    kind = value.get("kind")
    loc = value.get("value")
    if (
        type(kind) is not str
        or type(loc) is not str
        or len(loc) > 4096
        or _NAME_RE.match(kind) is None  # at most 64 characters; 32 is the field's cap
        or len(kind) > 32
    ):
        return None
    return {"kind": kind, "value": loc}


def _plain_artifact(obj: Any) -> Artifact | None:
    """:meth:`Artifact.from_dict` for the common, plainly valid shape, without the generic
    reader: the same checks, accept-only. Anything else (unknown, null or optional nested
    fields, any doubt) returns None and the full parser decides, with its exact errors."""
    if type(obj) is not dict or not obj.keys() <= _PLAIN_ARTIFACT_FIELDS:
        return None
    name = obj.get("name")
    length = obj.get("length")
    hashes = obj.get("hashes")
    mode = obj.get("mode", 0o644)
    platform = obj.get("platform", "any")
    arch = obj.get("arch", "any")
    # ``type(x) is int`` refuses booleans; names in _PLAIN_NAME are safe and <= 255 chars.
    if (
        type(name) is not str
        or _PLAIN_NAME.match(name) is None
        or type(length) is not int
        or not 0 <= length <= MAX_INT
        or type(mode) is not int
        or not 0 <= mode <= 0o777
        or type(platform) is not str
        or _NAME_RE.match(platform) is None
        or type(arch) is not str
        or _NAME_RE.match(arch) is None
        or type(hashes) is not dict
        or len(hashes) != 1
    ):
        return None
    digest = hashes.get("sha256")
    if type(digest) is not str or _HEX64.match(digest) is None:
        return None
    locators: tuple[dict[str, str], ...] = ()
    if "locators" in obj:
        items = obj["locators"]
        if type(items) is not list or len(items) > 64:
            return None
        parsed = [_plain_locator(item) for item in items]
        if None in parsed:
            return None
        locators = tuple(parsed)  # type: ignore[arg-type]
    transfer = None
    if "transfer" in obj:
        transfer = _plain_transfer(obj["transfer"])
        if transfer is None:
            return None
    return Artifact(
        name, length, {"sha256": digest}, mode, platform, arch, None, locators, None, {}, transfer
    )


def _locator(value: Any, where: str) -> dict[str, str]:
    r = _Reader(value, where)
    kind = _channel_name(r.string("kind", max_len=32), f"{where}.kind")
    loc = r.string("value", max_len=4096)
    if r.extra():
        raise FormatError(f"{where}: unknown locator fields")
    return {"kind": kind, "value": loc}


@frozen
class DeltaRecord:
    """A patch from an earlier version's artifact (or archive member) to this one's.

    ``locators`` (optional, as an artifact's: at most 64 ``{"kind", "value"}``) say where
    else the patch blob is found -- a BitTorrent info hash, a CID -- signed with the manifest;
    they address the patch blob, whose length and sha256 still decide what is accepted.
    """

    artifact: str
    from_version: str
    source: MetaFile
    patch: MetaFile
    output_length: int
    codec: str
    member: str | None = None
    extra: Mapping[str, Any] = field(factory=dict)
    locators: tuple[Mapping[str, str], ...] = ()

    @classmethod
    def from_dict(cls, obj: Any, where: str = "delta") -> DeltaRecord:
        r = _Reader(obj, where)
        artifact = check_safe_name(r.string("artifact", max_len=1024), f"{where}.artifact")
        from_version = r.version("from_version")
        source = r.obj_("source", MetaFile.from_dict)
        patch = r.obj_("patch", MetaFile.from_dict)
        output_length = r.integer("output_length")
        codec = _channel_name(r.string("codec", max_len=64), f"{where}.codec")
        member = r.string("member", None, max_len=4096)
        if member is not None:
            check_safe_path(member, f"{where}.member")
        locators = r.items("locators", _locator, (), max_items=64)
        return cls(
            artifact,
            from_version,
            source,
            patch,
            output_length,
            codec,
            member,
            r.extra(),
            locators,
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_unset(
            self.extra,
            {
                "artifact": self.artifact,
                "from_version": self.from_version,
                "source": self.source.to_dict(),
                "patch": self.patch.to_dict(),
                "output_length": self.output_length,
                "codec": self.codec,
                "member": self.member,
                "locators": [dict(x) for x in self.locators] if self.locators else None,
            },
        )
