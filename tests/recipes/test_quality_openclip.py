"""The frozen open_clip ConvNeXt scorer of GenView's quality loss, without a download: a tiny open_clip
model (timm's ConvNeXt-atto trunk) with random weights saved to a file and loaded back through
`open_clip:ARCH:FILE` (tests/helpers/openclip.py); then the MoCo step and `passkit validate
--quality-loss --quality-scorer` with it, the direction fitted on the release, stored and resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("open_clip")
pytest.importorskip("timm")

from passkit.recipes import quality  # noqa: E402
from passkit.recipes.moco import MoCo, MoCoConfig  # noqa: E402
from passkit.recipes.quality import OpenClipScorer, build_scorer  # noqa: E402
from tests.helpers.openclip import ARCH, DIM, IMAGE_SIZE, tiny_convnext_clip  # noqa: E402

TINY = dict(arch="resnet18", width=8, small_stem=True, image_size=16, queue=32, bn_splits=2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_convnext_clip(tmp_path_factory.mktemp("openclip"))


def test_the_scorer_loads_the_file_and_gives_frozen_feature_maps(weights: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    scorer = build_scorer(f"open_clip:{ARCH}:{weights}")
    assert isinstance(scorer, OpenClipScorer) and scorer.name == f"open_clip:{ARCH}" and scorer.frozen
    saved = load_file(str(weights))
    trunk_keys = [k for k in saved if k.startswith("visual.trunk.")]
    assert trunk_keys and all(torch.equal(saved[k], scorer.trunk.state_dict()[k[len("visual.trunk."):]])
                              for k in trunk_keys)  # the file's weights, not a fresh initialisation
    assert not scorer.trunk.training and not any(p.requires_grad for p in scorer.trunk.parameters())

    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    tokens = scorer(x)  # a 32 px view is upsampled to the network's 128 px: a 4 x 4 grid of stride-32 cells
    assert tokens.shape == (3, (IMAGE_SIZE // 32) ** 2, DIM) and scorer.dim == DIM
    assert not tokens.requires_grad
    assert scorer(torch.randn(2, 3, 160, 160)).shape == (2, 25, DIM)  # larger views keep their size
    # the same weights as a torch .bin give the same maps
    other = build_scorer(f"open_clip:{ARCH}:{tiny_convnext_clip(tmp_path, fmt='bin')}")
    assert torch.allclose(other(x.detach()), tokens, atol=1e-5)


def test_moco_trains_with_the_frozen_scorer_and_a_stored_direction(weights: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    scorer = build_scorer(f"open_clip:{ARCH}:{weights}")
    images = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    principal, n = quality.fit_release(scorer, iter(images), limit=10)
    assert n == 10
    quality.write_pca(tmp_path / quality.PCA_FILE, principal, {"scorer": scorer.name, "images": n})

    m = MoCo(MoCoConfig(**TINY, quality_loss=True, quality_scorer=f"open_clip:{ARCH}:{weights}",
                        quality_pca=str(tmp_path / quality.PCA_FILE)))
    assert m.scorer.trunk is scorer.trunk  # loaded once per process
    assert torch.equal(m.quality_pca.direction, principal.direction) and int(m.quality_pca.fits) == 1
    assert not any(k.startswith("scorer") or "trunk" in k for k in m.state_dict())  # frozen weights stay out
    m.train()
    x = torch.randn(8, 3, 16, 16)
    out = m(x, x.flip(3) + 0.1 * torch.randn_like(x))
    assert not m.scorer.trunk.training  # the recipe's train() does not reach the scorer
    assert int(out.metrics["pca_fits"]) == 1  # a frozen scorer's direction is never refitted
    out.loss.backward()
    assert all(p.grad is not None for p in m.encoder_q.parameters())
    assert all(p.grad is None for p in m.scorer.trunk.parameters())


def _validate(source: Path, work: Path, weights: Path) -> int:
    from passkit.cli import main

    return main(["validate", str(source), "--recipe", "moco_v2", "--preset", "smoke", "--steps", "2", "--device", "cpu",
                 "--quality-loss", "--quality-scorer", f"open_clip:{ARCH}:{weights}", "--work", str(work)])


def test_validate_fits_the_direction_on_the_release_stores_it_and_a_resume_reads_it(
        weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers.staging import basic_items, staged_release

    source = staged_release(tmp_path, basic_items(10))
    work = tmp_path / "work"
    assert _validate(source, work, weights) == 0
    run = source / "validation" / "moco_v2-quality-smoke-seed0"
    v = json.loads((run / "validation.json").read_text())
    q = v["settings"]["quality_loss"]
    assert q["scorer"] == f"open_clip:{ARCH}:{weights}" and q["pca"]["fit"] == "release" and q["pca"]["images"] == 10
    assert q["pca"]["file"] == f"validation/moco_v2-quality-smoke-seed0/{quality.PCA_FILE}" in v["files"]
    stored, info = quality.read_pca(source / q["pca"]["file"])
    assert info["weights_sha256"] == q["pca"]["weights_sha256"] and info["release"] == source.name
    first, _ = quality.read_pca(work / quality.PCA_FILE)  # beside the checkpoint, where a resume looks
    assert torch.equal(first.direction, stored.direction) and stored.direction.shape == (DIM,)
    entry = json.loads((source / "manifest.json").read_text())["validation"][-1]
    assert entry["settings"]["quality_loss"]["pca"]["sha256"] == q["pca"]["sha256"]

    def refit(*a: Any, **kw: Any) -> Any:
        raise AssertionError("a resumed run fitted the direction again")

    monkeypatch.setattr(quality, "fit_release", refit)
    assert _validate(source, work, weights) == 0  # the checkpoint and the stored direction are read back
    again = json.loads((run / "validation.json").read_text())["settings"]["quality_loss"]["pca"]
    assert again["sha256"] == q["pca"]["sha256"]
    with pytest.raises(AssertionError, match="fitted the direction again"):  # another release: fitted anew
        _validate(staged_release(tmp_path / "other", basic_items(6)), work, weights)


def test_validate_says_what_is_wrong_with_the_scorer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from passkit.cli import main
    from tests.helpers.staging import basic_items, staged_release

    source = staged_release(tmp_path, basic_items(4))
    base = ["validate", str(source), "--recipe", "moco_v2", "--steps", "1", "--device", "cpu"]
    assert main([*base, "--quality-scorer", "momentum"]) == 2
    assert "add --quality-loss" in capsys.readouterr().err
    assert main([*base, "--quality-loss", "--quality-scorer", f"open_clip:{ARCH}:{tmp_path / 'none.bin'}"]) == 2
    assert "no such weights file" in capsys.readouterr().err
    assert main([*base, "--quality-loss", "--quality-scorer", "clip"]) == 2
    assert "unknown quality scorer" in capsys.readouterr().err
    assert not (source / "validation").exists()  # refused before any work
