"""MAE: masking, patchify, the medical preset, layer-wise LR decay, and that a few dozen CPU steps
with an 8-bit AdamW lower the masked-patch reconstruction error without collapsing."""

from __future__ import annotations

import math

import pytest
import torch

from passkit.recipes.augment import normalize
from passkit.recipes.engine import TensorData, TrainConfig, Trainer
from passkit.recipes.evaluate import evaluate_features
from passkit.recipes.mae import (
    MAE,
    MAEConfig,
    MAERecipe,
    MedicalFinetune,
    finetune_encoder,
    finetune_param_groups,
    finetune_transform,
    medical_config,
    patchify,
    unpatchify,
)
from passkit.recipes.optim import OptimConfig
from passkit.recipes.recipe import Recipe
from passkit.recipes.synthetic import generate, labelled_set

TINY = dict(arch="vit_nano", patch_size=4, image_size=32, decoder_dim=64, decoder_depth=1, decoder_heads=4)


def test_patchify_roundtrip_and_masking_keeps_a_quarter() -> None:
    x = torch.randn(2, 3, 32, 32)
    t = patchify(x, 4)
    assert t.shape == (2, 64, 48)
    assert torch.equal(unpatchify(t, 4, 32, 32), x)
    m = MAE(MAEConfig(**TINY))
    keep, restore, mask = m.random_masking(64, 2, x.device)
    assert keep.shape == (2, 16) and mask.sum(1).tolist() == [48.0, 48.0]
    assert torch.all(mask.gather(1, keep) == 0)  # the kept patches are exactly the unmasked ones


def test_medical_preset_matches_the_paper() -> None:
    c = medical_config()
    assert (c.mask_ratio, c.crop_scale, c.decoder_depth, c.arch) == (0.90, (0.5, 1.0), 2, "vit_small")
    ft = MedicalFinetune()
    assert (ft.layer_decay, ft.randaug_magnitude, ft.drop_path) == (0.55, 6, 0.2)
    enc = finetune_encoder(MAEConfig(**{**TINY, "mask_ratio": 0.9}), MAE(MAEConfig(**TINY)).state_dict(), ft)
    assert enc.blocks[-1].drop_path.p == pytest.approx(0.2)
    groups = finetune_param_groups(enc, torch.nn.Linear(enc.embed_dim, 8), 1e-3, ft)
    lrs = {round(g["lr"], 12) for g in groups}
    # patch embedding: 0.55^(depth+1); last block: 0.55; head: full lr
    assert max(lrs) == pytest.approx(1e-3) and min(lrs) == pytest.approx(1e-3 * 0.55 ** (enc.depth + 1))
    out = finetune_transform(32, ft)(generate(1, 32)[0][0])
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="mask_ratio"):
        MAE(MAEConfig(**{**TINY, "mask_ratio": 1.0}))


def test_mae_learns_to_reconstruct_on_cpu() -> None:
    torch.manual_seed(0)
    rec = MAERecipe(MAEConfig(**TINY))
    assert isinstance(rec, Recipe)
    x, _ = generate(512, 32, seed=0)
    probe = normalize(generate(64, 32, seed=5)[0])
    e0 = rec.reconstruction_error(rec.build_model(), probe)  # same seed -> same init as the trainer's
    res = Trainer(rec, TensorData(x, rec.transform(), 64), TrainConfig(
        steps=60, optim=OptimConfig(name="adamw", lr=1.5e-3, bits=8, weight_decay=0.05, betas=(0.9, 0.95),
                                    min_8bit_size=1024),
        warmup_steps=5, log_every=10, progress=False)).fit()
    assert res.optimizer_state["bytes_per_param"] < 2.5  # 8-bit state (32-bit Adam: 8 B/param)
    e1 = rec.reconstruction_error(res.model, probe)
    losses = [h["loss"] for h in res.history]
    print(f"MAE recon error {e0:.3f} -> {e1:.3f}; loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"RankMe {res.history[-1]['rankme']:.1f}")
    assert e1 < 0.5 * e0 and losses[-1] < losses[0]
    assert res.history[-1]["rankme"] > 4 and all(h.get("collapse", 0.0) == 0.0 for h in res.history)
    ev = evaluate_features(lambda v: rec.features(res.model.eval(), v), labelled_set(200, 100, 32), "cpu")
    assert math.isfinite(ev["linear_probe"]) and ev["linear_probe"] > 1 / 8  # above chance on 8 classes
    print(f"MAE linear probe {ev['linear_probe']:.3f}, kNN {ev['knn_k20_t0.07']:.3f}")
