#!/usr/bin/env bash
# A prepared check for a lent GPU (run from the repository root, well under 10 minutes):
#   1. 8-bit vs 32-bit AdamW parity and state bytes/param (tests/test_optim.py on CUDA tensors via the benchmark);
#   2. MoCo v2 (ResNet-50, 224 px, batch 128, bf16 autocast) for a few steps on synthetic images: images/s
#      with 32-bit SGD and with 8-bit SGD, and the loss of both.
set -euo pipefail
PY=${PY:-.venv/bin/python}
$PY - <<'PY'
import time, torch
from passkit.recipes.engine import TensorData, TrainConfig, Trainer
from passkit.recipes.moco import MoCoConfig, MoCoV2
from passkit.recipes.optim import OptimConfig
from passkit.recipes.synthetic import generate
assert torch.cuda.is_available(), "no CUDA device"
print(torch.cuda.get_device_name(0))
x, _ = generate(2048, 224, seed=0)
for bits in (32, 8):
    torch.manual_seed(0)
    rec = MoCoV2(MoCoConfig(arch="resnet50", image_size=224, queue=16384))
    res = Trainer(rec, TensorData(x, rec.transform(), 128, num_workers=8), TrainConfig(
        steps=40, optim=OptimConfig(name="sgd", lr=0.03, bits=bits), log_every=10, progress=False, seed=0)).fit()
    steady = [h["images_per_s"] for h in res.history[1:]]
    print(f"MoCo v2 R50 bs128 bf16 {bits}-bit SGD: {sum(steady) / len(steady):.0f} images/s (steady), "
          f"loss {res.final('loss'):.4f}, state {res.optimizer_state['bytes_per_param']:.2f} B/param")
PY
$PY benchmarks/optim8bit.py --device cuda --runs 3 --steps 10
$PY -m pytest -q tests/test_optim.py
# 3. (issue 9) SwAV (ResNet-50), DINO (ViT-S/16) and MAE (ViT-B/16, and the medical ViT-S preset): a few
#    bf16 steps each with 8-bit AdamW/SGD on synthetic 224 px images: images/s, loss start -> end, RankMe.
$PY - <<'PY'
import torch
from passkit.recipes.dino import DINOConfig, DINORecipe
from passkit.recipes.engine import TensorData, TrainConfig, Trainer
from passkit.recipes.mae import MAEConfig, MAERecipe, medical_config
from passkit.recipes.multicrop import MultiCropConfig
from passkit.recipes.optim import OptimConfig
from passkit.recipes.swav import SwAVConfig, SwAVRecipe
from passkit.recipes.synthetic import generate
x, _ = generate(1024, 224, seed=0)
crops = MultiCropConfig(224, 96, 2, 4)
runs = [
    ("swav r50", SwAVRecipe(SwAVConfig(crops=crops, queue_start_step=15, freeze_prototypes_steps=5)), 64,
     OptimConfig(name="sgd", lr=0.06, bits=8, weight_decay=1e-6)),
    ("dino vit_small", DINORecipe(DINOConfig(crops=crops, teacher_temp_warmup_steps=20, freeze_last_layer_steps=5)), 64,
     OptimConfig(name="adamw", lr=2.5e-4, bits=8, weight_decay=0.04)),
    ("mae vit_base", MAERecipe(MAEConfig()), 128, OptimConfig(name="adamw", lr=1.5e-4, bits=8, weight_decay=0.05, betas=(0.9, 0.95))),
    ("mae-medical vit_small", MAERecipe(medical_config()), 128,
     OptimConfig(name="adamw", lr=1.5e-4, bits=8, weight_decay=0.05, betas=(0.9, 0.95))),
]
for name, rec, bs, opt in runs:
    torch.manual_seed(0)
    res = Trainer(rec, TensorData(x, rec.transform(), bs, num_workers=8), TrainConfig(
        steps=30, optim=opt, warmup_steps=5, log_every=5, progress=False, seed=0)).fit()
    steady = [h["images_per_s"] for h in res.history[1:]]
    print(f"{name} bs{bs} bf16 8-bit {opt.name}: {sum(steady) / len(steady):.0f} images/s, loss "
          f"{res.history[0]['loss']:.3f} -> {res.history[-1]['loss']:.3f}, RankMe {res.history[-1].get('rankme', 0):.1f}, "
          f"state {res.optimizer_state['bytes_per_param']:.2f} B/param, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    torch.cuda.reset_peak_memory_stats()
PY
$PY -m pytest -q tests/test_swav.py tests/test_dino.py tests/test_mae.py
