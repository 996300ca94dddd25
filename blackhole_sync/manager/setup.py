"""Making a node directory: ``init_node``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..documents import (
    PrivateKey,
    TrustedState,
)
from ..node import (
    NodeStore,
)

if TYPE_CHECKING:
    pass


__all__ = ["init_node"]


def init_node(
    path: str | os.PathLike[str],
    *,
    root_bytes: bytes,
    sources: Sequence[str],
    channel: str = "stable",
    region: str = "",
    node_type: str = "",
) -> PrivateKey:
    """Make a node directory that trusts ``root_bytes`` and follows ``sources``.

    The root must verify with its own root threshold (else :class:`SecurityError`, nothing
    written); the directory must not exist or be empty (else :class:`ConflictError`). Writes
    the store layout, a commented ``config.toml`` with every default, and the node's identity
    key (``identity.key``, 0600). No network access. Returns the identity key.
    """
    from ..codecs import write_key_pair
    from ..errors import ConflictError
    from ..node import NodeAttributes, NodeConfig, default_config_text

    node = Path(path)
    if node.exists() and (not node.is_dir() or any(node.iterdir())):
        raise ConflictError(f"{node} exists and is not an empty directory")
    TrustedState(root_bytes)  # refuse a root that does not verify before writing anything
    config_text = default_config_text(sources=list(sources), channel=channel)
    if region or node_type:
        config = NodeConfig.from_toml(config_text).with_updates(
            node=NodeAttributes(region=region, node_type=node_type)
        )
        config_text = config.to_toml()
    store = NodeStore.create(node, root_bytes=root_bytes, config_text=config_text)
    try:
        return write_key_pair(store.layout.identity_key)
    finally:
        store.close()
