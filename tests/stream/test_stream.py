"""passkit.stream: the WebDataset training loader and the Hugging Face datasets view."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import webdataset as wds
from torchvision.transforms import v2

from passkit.stream import loader, open_release
from tests.helpers.releases import make_release, sample_key

N = 12
REMOVED = sample_key(3)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("releases"), n=N, shard_max=5)


@pytest.fixture(scope="module")
def release_with_removal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A takedown issued after publication: the key is in the manifest's removals and still in a shard."""
    return make_release(
        tmp_path_factory.mktemp("removal"), n=N, shard_max=5, removals=[(REMOVED, "takedown")]
    )


def all_keys() -> set[str]:
    return {sample_key(i) for i in range(N)}


def order(dl) -> list[str]:
    return [m["key"] for _, metas in dl for m in metas]


def test_loader_yields_every_sample_as_batches(release: Path) -> None:
    dl = loader(release, batch_size=5)
    batches = list(dl)
    assert [imgs.shape[0] for imgs, _ in batches] == [5, 5, 2]
    for imgs, metas in batches:
        assert imgs.dtype == torch.uint8 and tuple(imgs.shape[1:]) == (3, 224, 224)
        assert len(metas) == imgs.shape[0]
        for m in metas:
            assert m["license"] in {"cc-by-2.0", "cc-by-4.0", "cc0-1.0"}
            assert m["attribution"] and m["creator"] and m["landing_url"]
    keys = [m["key"] for _, metas in batches for m in metas]
    assert sorted(keys) == keys  # shard order without shuffle
    assert set(keys) == all_keys() and len(keys) == N
    assert dl.num_samples == N


def test_drop_last_and_custom_transform(release: Path) -> None:
    tf = v2.Compose(
        [v2.PILToTensor(), v2.Resize((32, 40), antialias=True), v2.ToDtype(torch.float32, scale=True)]
    )
    batches = list(loader(release, batch_size=5, transform=tf, drop_last=True))
    assert len(batches) == 2
    imgs, _ = batches[0]
    assert imgs.shape == (5, 3, 32, 40) and imgs.dtype == torch.float32 and imgs.max() <= 1.0


def test_multi_crop_transform_stacks_each_view(release: Path) -> None:
    def two_views(im):
        return [
            v2.functional.pil_to_tensor(im.resize((16, 16))),
            v2.functional.pil_to_tensor(im.resize((8, 8))),
        ]

    views, metas = next(iter(loader(release, batch_size=4, transform=two_views)))
    assert [tuple(v.shape) for v in views] == [(4, 3, 16, 16), (4, 3, 8, 8)] and len(metas) == 4


def test_native_size_unbatched(release: Path) -> None:
    seen = 0
    for img, meta in loader(release, batch_size=None, image_size=None):
        assert tuple(img.shape) == (3, meta["height"], meta["width"])
        seen += 1
    assert seen == N


def test_native_sizes_do_not_stack(release: Path) -> None:
    with pytest.raises(ValueError, match="different shapes"):
        list(loader(release, batch_size=4, image_size=None))


def test_shuffle_is_reproducible_and_per_epoch(release: Path) -> None:
    plain = order(loader(release, batch_size=4))
    a = order(loader(release, batch_size=4, shuffle=True, seed=7))
    b = order(loader(release, batch_size=4, shuffle=True, seed=7))
    c = order(loader(release, batch_size=4, shuffle=True, seed=8))
    assert a == b
    assert a != plain and sorted(a) == plain
    assert c != a and sorted(c) == plain
    dl = loader(release, batch_size=4, shuffle=True, seed=7)
    dl.set_epoch(1)
    e1 = order(dl)
    assert e1 != a and sorted(e1) == plain
    dl.set_epoch(0)
    assert order(dl) == a


def test_workers_read_each_sample_once(release: Path) -> None:
    dl = loader(release, batch_size=3, num_workers=2, shuffle=True, seed=3)
    first = order(dl)
    assert sorted(first) == sorted(all_keys())
    assert order(dl) == first  # same seed and epoch in fresh workers


def test_removals_are_skipped(release_with_removal: Path) -> None:
    assert REMOVED in open_release(release_with_removal).removed
    keys = order(loader(release_with_removal, batch_size=4))
    assert REMOVED not in keys and set(keys) == all_keys() - {REMOVED}
    keys = order(loader(release_with_removal, batch_size=4, shuffle=True, seed=1, num_workers=2))
    assert REMOVED not in keys and len(keys) == N - 1
    keys = order(loader(release_with_removal, batch_size=4, apply_removals=False))
    assert REMOVED in keys and len(keys) == N


def test_plain_webdataset_reads_the_shards(release: Path) -> None:
    urls = open_release(release).urls
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == N
    for s in samples:
        assert s["__key__"] == s["json"]["key"]
        assert s["jpg"].mode == "RGB" and s["jpg"].size == (s["json"]["width"], s["json"]["height"])


# ----------------------------------------------------------------------------- Hugging Face datasets


@pytest.mark.parametrize("streaming", [False, True], ids=["arrow", "streaming"])
def test_hf_dataset_has_image_and_attribution_columns(
    release_with_removal: Path, tmp_path: Path, streaming: bool
) -> None:
    datasets = pytest.importorskip("datasets")
    from passkit.stream.hf import dataset

    ds = dataset(release_with_removal, streaming=streaming, cache_dir=tmp_path / "hf")
    assert isinstance(ds.features["image"], datasets.Image)
    for col in (
        "key",
        "title",
        "creator",
        "creator_url",
        "landing_url",
        "license",
        "license_url",
        "license_name",
        "attribution",
        "modification",
        "sha256",
        "width",
        "height",
        "scores",
    ):
        assert col in ds.features, col
    rows = list(ds)
    assert len(rows) == N - 1
    assert {r["key"] for r in rows} == all_keys() - {REMOVED}
    r = rows[0]
    assert r["image"].size == (r["width"], r["height"])
    assert r["attribution"].startswith('"Test image') and isinstance(r["scores"], dict)
    assert set(r["scores"]) == {"mtcnn", "yolox"}
    assert any(r["creator_url"] is None for r in rows) and any(r["creator_url"] for r in rows)
    if not streaming:
        assert ds.num_rows == N - 1
    raw = ds.cast_column("image", datasets.Image(decode=False))
    for row in raw:  # the JPEG bytes are the shard's, not re-encoded
        assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == row["sha256"]
