"""DALI's webdataset index files: the format wds2idx writes, offsets that point at the members' bytes."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from passkit.shards import write_tar
from passkit.shards.wdsindex import derive_index, format_index, index_path, parse_index


def test_the_format_is_wds2idx_s() -> None:
    # two samples: a.jpg (3 bytes) and a.json (2), then b.jpg (600: two data blocks)
    members = [("a.jpg", 512, 3), ("a.json", 1536, 2), ("b.jpg", 2560, 600)]
    assert format_index(members) == (b"v1.2 2\n"
                                     b"jpg 512 3 a.jpg json 1536 2 a.json\n"
                                     b"jpg 2560 600 b.jpg\n")
    assert index_path("shards/demo-000001.tar") == "shards/demo-000001.idx"
    with pytest.raises(ValueError):
        index_path("shards/demo.zip")


def test_written_index_points_at_each_member(tmp_path: Path) -> None:
    members = [(f"k{i:02d}.{ext}", bytes([i]) * (i * 300 + len(ext))) for i in range(7) for ext in ("jpg", "json")]
    layout: list[tuple[str, int, int]] = []
    tar = tmp_path / "s.tar"
    write_tar(tar, members, layout)
    data = format_index(layout)
    assert data == derive_index(tar)  # what the writer saw equals what the headers say
    samples = parse_index(data)
    assert len(samples) == 7 and data.startswith(b"v1.2 7\n")
    raw = tar.read_bytes()
    with tarfile.open(tar) as tf:
        by_name = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]
    for i, sample in enumerate(samples):
        assert [m[0] for m in sample] == ["jpg", "json"]
        for _ext, offset, size, name in sample:
            assert name.startswith(f"k{i:02d}.")
            assert raw[offset:offset + size] == by_name[name]


def test_parse_refuses_what_is_not_an_index() -> None:
    for bad in (b"v1.1 1\njpg 512 3\n", b"v1.2 2\njpg 512 3 a.jpg\n", b"v1.2 1\njpg 512 a.jpg\n"):
        with pytest.raises(ValueError):
            parse_index(bad)
