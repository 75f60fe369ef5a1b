"""GenView pairing in the loader (passkit.stream.pairs) on a derived release made by the tiny random-weight
unCLIP pipeline, and the whole path through the CLI: views generate -> validate --genview --quality-loss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from passkit.stream.pairs import GenViewPairing, choice, paired_loader, shard_map

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from passkit.filters.people.ensemble import PeopleResult  # noqa: E402
from passkit.recipes.augment import MultiView, eval_transform, two_views  # noqa: E402
from passkit.recipes.engine import EngineError, ReleaseData  # noqa: E402
from passkit.shards import iter_samples  # noqa: E402
from passkit.stream import decode, open_release  # noqa: E402
from passkit.views.derive import KEY_SUFFIX, generate_views  # noqa: E402
from tests.helpers.staging import basic_items, staged_release  # noqa: E402
from tests.helpers.unclip import build_tiny_unclip  # noqa: E402

SIZE = 32


class FlagKeys:
    """A people filter that sees a person in the variations of `keys` (given in generation order)."""

    def __init__(self, order: list[str], keys: set[str]) -> None:
        self.order, self.keys, self.seen = order, keys, 0

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": "fake", "threshold": 0.5, "weights": "none", "sha256": None}]

    def score(self, images: list[Any]) -> list[PeopleResult]:
        out = []
        for _ in images:
            hit = self.order[self.seen] in self.keys
            self.seen += 1
            out.append(PeopleResult({"fake": 0.9 if hit else 0.1}, fired=["fake"] if hit else []))
        return out


def _samples(release: Path) -> dict[str, dict[str, bytes]]:
    m = json.loads((release / "manifest.json").read_text())
    return {k: g for e in m["shards"] for k, g in iter_samples(release / e["path"])}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """10 source samples in shards of 3, 3, 2, 2; variations of all but the second sample and the last
    shard's two (so a member and a whole derived shard are missing)."""
    base = tmp_path_factory.mktemp("pairing")
    source = staged_release(base, basic_items(10))
    model = build_tiny_unclip(base / "tiny-unclip")
    m = json.loads((source / "manifest.json").read_text())
    shards = [[k for k, _ in iter_samples(source / e["path"])] for e in m["shards"]]
    assert [len(s) for s in shards] == [3, 3, 2, 2]
    order = [k for s in shards for k in s]
    rejected = {order[1], *shards[-1]}
    res = generate_views(source, model, steps=1, fit_images=4, people=FlagKeys(order, rejected),
                         created="2024-01-01T00:00:00Z")
    assert (res.generated, res.rejected, res.shards) == (7, 3, 3)
    return {"source": source, "derived": res.path, "model": model, "rejected": rejected, "order": order}


def _fixed_views() -> MultiView:
    return MultiView([eval_transform(SIZE), eval_transform(SIZE)])  # no randomness: pixels can be compared


def test_the_paired_view_is_the_variation_and_samples_without_one_fall_back(made: dict[str, Any]) -> None:
    src, gen = _samples(made["source"]), _samples(made["derived"])
    dl = paired_loader(made["source"], GenViewPairing(made["derived"], prob=1.0), None, transform=_fixed_views())
    seen, chosen = [], set()
    for views, meta in dl:
        key = meta["key"]
        seen.append(key)
        orig = eval_transform(SIZE)(decode.decode_pil(src[key]["jpg"]))
        if key in made["rejected"]:
            assert meta["genview_view"] is None
            assert all(torch.equal(v, orig) for v in views)
            continue
        var = eval_transform(SIZE)(decode.decode_pil(gen[key + KEY_SUFFIX]["jpg"]))
        assert not torch.equal(var, orig)  # the variation is other content, not the original again
        v = meta["genview_view"]
        assert v in (0, 1)
        chosen.add(v)
        assert torch.equal(views[v], var) and torch.equal(views[1 - v], orig)
    assert seen == made["order"] and chosen == {0, 1}


def _run(dl: Any, epoch: int) -> list[tuple[list[torch.Tensor], list[Any]]]:
    dl.set_epoch(epoch)
    return [(list(views), [m["genview_view"] for m in metas]) for views, metas in dl]


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        ma == mb and all(torch.equal(x, y) for x, y in zip(va, vb, strict=True))
        for (va, ma), (vb, mb) in zip(a, b, strict=True))


def test_pairing_is_deterministic_per_epoch_for_any_workers_and_resumes(made: dict[str, Any]) -> None:
    pairing = GenViewPairing(made["derived"], prob=0.5)

    def make(workers: int) -> Any:
        # the JPEG transforms (crop chosen from the header, reduced-scale decode): the other input path
        views = decode.Views([decode.RandomResizedCrop(SIZE), decode.RandomResizedCrop(SIZE)])
        return paired_loader(made["source"], pairing, 3, transform=views, shuffle=True, seed=7, num_workers=workers)

    a, b = make(0), make(2)
    first = _run(a, 0)
    assert _same(first, _run(b, 0))  # the same pairs and augmentations with workers
    assert _same(first, _run(make(0), 0))
    assert _same(_run(a, 1), _run(b, 1))
    flags = [v for _, ms in first for v in ms]
    assert any(v is None for v in flags) and any(v is not None for v in flags)

    c = make(0)
    c.set_epoch(0)
    it = iter(c)
    next(it)
    state = c.state_dict()
    d = make(0)
    d.load_state_dict(state)
    assert _same(_run_resumed(d), first[1:])


def _run_resumed(dl: Any) -> list[Any]:
    return [(list(views), [m["genview_view"] for m in metas]) for views, metas in dl]


def test_choice_follows_the_probability_and_the_pass() -> None:
    from passkit.stream import pairs

    assert pairs.KEY_SUFFIX == KEY_SUFFIX
    n = 4000
    half = [choice(0, 0, 0, i, 2, 0.5) for i in range(n)]
    assert abs(sum(v is not None for v in half) / n - 0.5) < 0.04
    assert abs(sum(v == 1 for v in half) / n - 0.25) < 0.04  # the view is uniform
    assert all(choice(0, 0, 0, i, 2, 0.0) is None for i in range(200))
    assert all(choice(0, 0, 0, i, 2, 1.0) is not None for i in range(200))
    for other in ([1, 0, 0], [0, 1, 0], [0, 0, 1]):  # seed, epoch and rank each change the pairs
        assert [choice(*other, i, 2, 0.5) for i in range(200)] != half[:200]


def test_a_release_that_is_not_the_sources_genview_is_refused(made: dict[str, Any]) -> None:
    source, derived = open_release(made["source"]), open_release(made["derived"])
    assert sorted(shard_map(source, derived)) == [0, 1, 2]
    with pytest.raises(ValueError, match="not a GenView release"):
        shard_map(source, source)
    with pytest.raises(ValueError, match="holds variations of"):
        shard_map(derived, derived)
    with pytest.raises(ValueError, match="probability"):
        paired_loader(made["source"], GenViewPairing(made["derived"], prob=1.5), 2, transform=two_views(SIZE))
    with pytest.raises(EngineError, match="cpu input path"):
        ReleaseData(made["source"], two_views(SIZE), 2, loader_mode="device", genview=GenViewPairing(made["derived"]))


def test_validate_trains_moco_on_the_generated_views_with_the_quality_loss(made: dict[str, Any], tmp_path: Path) -> None:
    """The end of the path as a user runs it: the derived release the fixture generated (views generate's
    own function; its command line is tested in test_generate.py), then `passkit validate --genview
    --quality-loss` on the smoke preset, recorded in validation.json and the manifest's entry."""
    from passkit.cli import main

    source, derived = made["source"], made["derived"]
    rc = main(["validate", str(source), "--recipe", "moco_v2", "--preset", "smoke", "--steps", "4",
               "--genview", str(derived), "--genview-prob", "0.5", "--quality-loss", "--device", "cpu",
               "--work", str(tmp_path / "work")])
    assert rc == 0
    v = json.loads((source / "validation" / "moco_v2-genview-quality-smoke-seed0" / "validation.json").read_text())
    s = v["settings"]
    assert s["genview"]["derived_release"] == derived.name and s["genview"]["prob"] == 0.5
    q = s["quality_loss"]
    assert (q["gamma"], q["scorer"]) == (1.0, "momentum") and s["recipe"]["quality_loss"] is True
    # the smoke preset refits the momentum scorer's direction every 32 images: once in 4 steps of 8
    assert (q["pca"]["fit"], q["pca"]["fits"]) == ("training batches", 1) and (source / q["pca"]["file"]).is_file()
    assert s["loader"] == "cpu" and v["verdict"] == "pass"
    entry = json.loads((source / "manifest.json").read_text())["validation"][-1]
    assert entry["settings"]["genview"]["derived_release"] == derived.name
    assert entry["settings"]["quality_loss"]["gamma"] == 1.0
    assert main(["validate", str(source), "--recipe", "swav", "--genview", str(derived)]) == 2  # moco_v2 only
