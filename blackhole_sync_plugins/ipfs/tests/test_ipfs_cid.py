"""Offline CIDs and the UnixFS DAG builder (no node). The equality with Kubo's own add is
checked against a real node in test_nodes.py."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from blackhole_sync_ipfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    Cid,
    CidError,
    DagBuilder,
    cid_of_bytes,
    cid_of_file,
)
from blackhole_sync_ipfs._cid import CODEC_DAG_PB, CODEC_RAW, decode_dag_pb

EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def blocks_of(data: bytes, version: int = 1) -> tuple[Cid, dict[Cid, bytes]]:
    blocks: dict[Cid, bytes] = {}
    root = DagBuilder(lambda cid, block: blocks.__setitem__(cid, block), cid_version=version).build(
        io.BytesIO(data)
    )
    return root, blocks


def read_back(root: Cid, blocks: dict[Cid, bytes]) -> bytes:
    block = blocks[root]
    if root.codec == CODEC_RAW:
        return block
    node = decode_dag_pb(block)
    return node.data + b"".join(read_back(child, blocks) for child, _ in node.links)


def test_well_known_empty_file() -> None:
    assert cid_of_bytes(b"") == EMPTY_RAW
    assert cid_of_bytes(b"", cid_version=0) == EMPTY_V0


@pytest.mark.parametrize("size", [1, CHUNK_SIZE - 1, CHUNK_SIZE])
def test_one_chunk_is_a_raw_leaf(size: int) -> None:
    data = random.Random(size).randbytes(size)
    root, blocks = blocks_of(data)
    assert root.codec == CODEC_RAW and root.version == 1
    assert blocks == {root: data}
    assert str(root).startswith("bafkrei")


def test_two_chunks_make_one_dag_pb_node() -> None:
    data = random.Random(2).randbytes(CHUNK_SIZE + 1)
    root, blocks = blocks_of(data)
    assert str(root).startswith("bafybei")
    node = decode_dag_pb(blocks[root])
    assert node.filesize == CHUNK_SIZE + 1
    assert node.blocksizes == (CHUNK_SIZE, 1)
    assert [tsize for _, tsize in node.links] == [CHUNK_SIZE, 1]
    assert all(child.codec == CODEC_RAW for child, _ in node.links)
    assert read_back(root, blocks) == data


def test_more_than_max_links_adds_a_level() -> None:
    # Tiny chunks keep this fast; the layout rules are those of 256 KiB chunks.
    chunk, links = 4, MAX_LINKS
    data = random.Random(3).randbytes(chunk * links + 1)
    blocks: dict[Cid, bytes] = {}
    root = DagBuilder(
        lambda c, b: blocks.__setitem__(c, b), chunk_size=chunk, max_links=links
    ).build(io.BytesIO(data))
    top = decode_dag_pb(blocks[root])
    assert len(top.links) == 2
    first, second = (decode_dag_pb(blocks[c]) for c, _ in top.links)
    assert len(first.links) == links and len(second.links) == 1
    assert top.blocksizes == (chunk * links, 1)
    assert read_back(root, blocks) == data
    # A parent's link size counts the child block and everything under it.
    first_cid, first_tsize = top.links[0]
    assert first_tsize == len(blocks[first_cid]) + chunk * links


def test_v0_form_wraps_leaves() -> None:
    data = random.Random(4).randbytes(CHUNK_SIZE * 2)
    root, blocks = blocks_of(data, version=0)
    assert str(root).startswith("Qm")
    assert all(cid.codec == CODEC_DAG_PB and cid.version == 0 for cid in blocks)
    assert read_back(root, blocks) == data


def test_cid_of_file_matches_bytes(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(3 * CHUNK_SIZE + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert cid_of_file(path) == cid_of_bytes(data)


def test_cid_text_round_trips() -> None:
    for text in (EMPTY_RAW, EMPTY_V0, cid_of_bytes(b"x" * (CHUNK_SIZE + 1))):
        cid = Cid.parse(text)
        assert str(cid) == text
        assert Cid.from_bytes(cid.to_bytes()) == cid
    raw = Cid.parse(EMPTY_RAW)
    assert raw.verify(b"") and not raw.verify(b"x")
    assert Cid.parse(EMPTY_V0).as_raw().multihash == Cid.parse(EMPTY_V0).multihash


@pytest.mark.parametrize("text", ["", "Qm123", "xyz", "bafyzzzz", "f01551220"])
def test_bad_cids_are_refused(text: str) -> None:
    with pytest.raises(CidError):
        Cid.parse(text)
