#!/usr/bin/env bash
# A prepared check for a lent GPU (run from the repository root; about 2-4 minutes on an H200):
#   1. MoCo v2 (ResNet-50, 224 px, batch 128, bf16 autocast) for a few steps on synthetic images: images/s
#      with 32-bit SGD, bitsandbytes' 8-bit SGD (when installed) and passkit's pure-PyTorch 8-bit SGD, and the loss.
#   2. 8-bit vs 32-bit AdamW step time and state bytes/param on CUDA tensors (benchmarks/optim8bit.py);
#      tests/recipes/test_optim.py (its bitsandbytes tests skip themselves when bitsandbytes is missing).
#   3. SwAV (ResNet-50), DINO (ViT-S/16) and MAE (ViT-B/16, and the medical ViT-S preset): a few
#      bf16 steps each with 8-bit AdamW/SGD on synthetic 224 px images: images/s, loss start -> end, RankMe;
#      then tests/recipes/test_swav.py, test_dino.py and test_mae.py (the Trainer picks CUDA when there is one).
#   3b. benchmarks/train_input.py --full: images/s of the input pipeline alone, the model step alone and both
#      together, CPU loader vs device pipeline (and DALI, mixed decode, when nvidia-dali is installed:
#      pip install 'passkit[dali]'), for MoCo v2 (ResNet-50, bf16, batch 256) and DINO (ViT-S/16, multi-crop);
#      last line `end-to-end / model-only (moco_v2): X.XX` (the device pipeline's on CUDA); then
#      tests/stream/test_dali.py (skips itself without DALI).
#   4. GenView: seconds per generated view with `passkit views generate` (GENVIEW_MODEL: a local unCLIP folder),
#      and the MoCo v2 step with the quality-driven loss against the plain step (genview-moco): scored by the
#      momentum encoder, and by a frozen open_clip ConvNeXt when GENVIEW_SCORER=open_clip:ARCH:WEIGHTS_FILE.
# Each section runs on its own (under `timeout`): a failure prints its error and the next section still runs.
#
#   bash scripts/gpu_check.sh                  # on the GPU machine
#   DRY=1 bash scripts/gpu_check.sh            # anywhere: tiny sizes on the CPU, checks the script itself
# Env: PY (python), DRY, STEPS (MoCo steps, default 30), RSTEPS (section 3 steps, default 20), WORKERS (8),
#      ONLY (space-separated section names to run), SECTION_TIMEOUT (seconds per section, default 240), BUDGET (seconds for the whole script, default 600:
#      a section gets at most what is left, and is skipped with under 15 s left).
#      With $OUT set, everything also goes to $OUT/gpu_log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${OUT:-}" ]]; then mkdir -p "$OUT" && exec > >(tee -a "$OUT/gpu_log.txt") 2>&1; fi
if [[ -z "${PY:-}" ]]; then
  for c in .venv/bin/python python3 python; do
    if command -v "$c" >/dev/null 2>&1; then PY="$c"; break; fi
  done
fi
export PY PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
export DRY="${DRY:-0}" STEPS="${STEPS:-30}" RSTEPS="${RSTEPS:-20}" WORKERS="${WORKERS:-8}"
TO="${SECTION_TIMEOUT:-240}" BUDGET="${BUDGET:-600}"
failed=()

section() {  # section NAME CMD...: run CMD under a timeout, report its status and time, never abort the script
  local name=$1 t0=$SECONDS rc left=$((BUDGET - SECONDS))
  shift
  if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return 0; fi
  if ((left < 15)); then echo "=== [$name] SKIPPED: only ${left} s left of BUDGET=${BUDGET}"; failed+=("$name(skipped)"); return 0; fi
  echo "=== [$name] $(date +%T) (limit $((left < TO ? left : TO)) s)"
  timeout -k 10 "$((left < TO ? left : TO))" "$@"
  rc=$?
  echo "=== [$name] rc=$rc in $((SECONDS - t0)) s"
  if ((rc != 0)); then failed+=("$name(rc=$rc)"); fi
  return 0
}

section env "$PY" - <<'PY'
import os, torch
print(f"python torch {torch.__version__} cuda {torch.version.cuda} available {torch.cuda.is_available()}",
      f"({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "")
try:
    import bitsandbytes as bnb
    print(f"bitsandbytes {bnb.__version__}")
except Exception as e:  # noqa: BLE001 - passkit falls back to its own 8-bit optimizers
    print(f"bitsandbytes: not usable ({type(e).__name__}: {str(e)[:200]}); 8-bit runs use passkit's pure-PyTorch optimizers")
try:
    import nvidia.dali
    print(f"nvidia-dali {nvidia.dali.__version__}: train-input measures --loader dali too")
except ImportError:
    print("nvidia-dali: not installed (pip install 'passkit[dali]'); train-input skips DALI")
if os.environ["DRY"] == "1":
    print("DRY=1: tiny sizes on the CPU (the numbers mean nothing)")
elif not torch.cuda.is_available():
    raise SystemExit("no CUDA device (set DRY=1 to check the script on a CPU)")
PY

section moco "$PY" - <<'PY'
import os, torch
from passkit.recipes.engine import TensorData, TrainConfig, Trainer
from passkit.recipes.moco import MoCoConfig, MoCoV2
from passkit.recipes.optim import OptimConfig, bnb_available
from passkit.recipes.synthetic import generate
dry = os.environ["DRY"] == "1"
if not dry:
    assert torch.cuda.is_available(), "no CUDA device"
    torch.backends.cudnn.benchmark = True
n, bs, steps, workers = (64, 8, 2, 0) if dry else (1024, 128, int(os.environ["STEPS"]), int(os.environ["WORKERS"]))
x, _ = generate(n, 224, seed=0)
variants = [(32, "auto")] + ([(8, "bnb")] if bnb_available() else []) + [(8, "torch")]
for bits, backend in variants:
    try:
        torch.manual_seed(0)
        rec = MoCoV2(MoCoConfig(arch="resnet50", image_size=224, queue=16384))
        res = Trainer(rec, TensorData(x, rec.transform(), bs, num_workers=workers), TrainConfig(
            steps=steps, optim=OptimConfig(name="sgd", lr=0.03, bits=bits, backend=backend),
            log_every=max(1, steps // 3), progress=False, seed=0, device="cpu" if dry else "auto")).fit()
        steady = [h["images_per_s"] for h in res.history[1:]] or [res.images_per_s]
        st = res.optimizer_state
        print(f"MoCo v2 R50 bs{bs} {'fp32 cpu' if dry else 'bf16'} {bits}-bit SGD ({st['backend']}): "
              f"{sum(steady) / len(steady):.0f} images/s (steady), loss {res.history[0]['loss']:.4f} -> "
              f"{res.final('loss'):.4f}, state {st['bytes_per_param']:.2f} B/param", flush=True)
    except Exception as e:  # noqa: BLE001 - report and go on with the next variant
        print(f"MoCo v2 {bits}-bit {backend}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
PY

if [[ "$DRY" == 1 ]]; then
  section optim8bit "$PY" benchmarks/optim8bit.py --device cpu --model resnet18 --runs 1 --steps 1
else
  section optim8bit "$PY" benchmarks/optim8bit.py --device cuda --runs 3 --steps 10
fi
section pytest-optim "$PY" -m pytest -q -p no:cacheprovider tests/recipes/test_optim.py

section loader "$PY" - <<'PY'
# Is training data-bound? The same MoCo v2 input pipeline alone (CPU augmentations in DataLoader
# workers), then the model step alone on one batch already on the GPU.
import os, time, torch
from passkit.recipes.engine import TensorData
from passkit.recipes.moco import MoCoConfig, MoCoV2
from passkit.recipes.synthetic import generate
dry = os.environ["DRY"] == "1"
workers = 0 if dry else int(os.environ["WORKERS"])
x, _ = generate(64 if dry else 1024, 224, seed=0)
rec = MoCoV2(MoCoConfig(arch="resnet18" if dry else "resnet50", image_size=224, queue=4096))
bs = 8 if dry else 128
it = iter(TensorData(x, rec.transform(), bs, num_workers=workers).epoch(0))
views = next(it)[0]
t0, n = time.perf_counter(), 0
for b in it:
    n += b[0][0].shape[0]
print(f"loader alone ({workers} workers, MoCo v2 augmentations, 224 px): {n / (time.perf_counter() - t0):.0f} images/s")
if torch.cuda.is_available() and not dry:
    from passkit.recipes.augment import normalize
    model = rec.build_model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    v = [normalize(t.cuda()) for t in views]
    for i in range(13):
        if i == 3:
            torch.cuda.synchronize(); t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = rec.training_step(model, v, i)
        opt.zero_grad(); out.loss.backward(); opt.step()
    torch.cuda.synchronize()
    print(f"model step alone (R50, bs{bs}, bf16, batch on GPU): {10 * bs / (time.perf_counter() - t0):.0f} images/s")
PY

section recipes "$PY" - <<'PY'
import os, torch
from passkit.recipes.dino import DINOConfig, DINORecipe
from passkit.recipes.engine import TensorData, TrainConfig, Trainer
from passkit.recipes.mae import MAEConfig, MAERecipe, medical_config
from passkit.recipes.multicrop import MultiCropConfig
from passkit.recipes.optim import OptimConfig
from passkit.recipes.swav import SwAVConfig, SwAVRecipe
from passkit.recipes.synthetic import generate
dry = os.environ["DRY"] == "1"
cuda = torch.cuda.is_available() and not dry
if cuda:
    torch.backends.cudnn.benchmark = True
steps, workers, div = (2, 0, 16) if dry else (int(os.environ["RSTEPS"]), int(os.environ["WORKERS"]), 1)
x, _ = generate(64 if dry else 1024, 224, seed=0)
crops = MultiCropConfig(224, 96, 2, 4)
runs = [
    ("swav r50", lambda: SwAVRecipe(SwAVConfig(crops=crops, queue_start_step=min(15, steps - 1), freeze_prototypes_steps=5)),
     64, OptimConfig(name="sgd", lr=0.06, bits=8, weight_decay=1e-6)),
    ("dino vit_small", lambda: DINORecipe(DINOConfig(crops=crops, teacher_temp_warmup_steps=20, freeze_last_layer_steps=5)),
     64, OptimConfig(name="adamw", lr=2.5e-4, bits=8, weight_decay=0.04)),
    ("mae vit_base", lambda: MAERecipe(MAEConfig()), 128,
     OptimConfig(name="adamw", lr=1.5e-4, bits=8, weight_decay=0.05, betas=(0.9, 0.95))),
    ("mae-medical vit_small", lambda: MAERecipe(medical_config()), 128,
     OptimConfig(name="adamw", lr=1.5e-4, bits=8, weight_decay=0.05, betas=(0.9, 0.95))),
]
for name, make, bs, opt in runs:
    bs //= div
    try:
        torch.manual_seed(0)
        rec = make()
        res = Trainer(rec, TensorData(x, rec.transform(), bs, num_workers=workers), TrainConfig(
            steps=steps, optim=opt, warmup_steps=min(5, steps // 4), log_every=max(1, steps // 4), progress=False,
            seed=0, device="cuda" if cuda else "cpu")).fit()
        steady = [h["images_per_s"] for h in res.history[1:]] or [res.images_per_s]
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        print(f"{name} bs{bs} {'bf16' if cuda else 'fp32 cpu'} 8-bit {opt.name} ({res.optimizer_state['backend']}): "
              f"{sum(steady) / len(steady):.0f} images/s, loss {res.history[0]['loss']:.3f} -> {res.history[-1]['loss']:.3f}, "
              f"RankMe {res.history[-1].get('rankme', 0):.1f}, state {res.optimizer_state['bytes_per_param']:.2f} B/param, "
              f"peak {peak:.1f} GiB", flush=True)
    except Exception as e:  # noqa: BLE001 - report and go on with the next recipe
        print(f"{name}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
    finally:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
PY

# GenView generation: per-image time of Stable unCLIP img2img variations (the real checkpoint when
# GENVIEW_MODEL names its local folder, else the tiny random-weight pipeline the tests build, which times only
# the mechanics) on a small release made by the test helpers, through `passkit views generate`.
section genview "$PY" - <<'PY'
import os, tempfile, time
from pathlib import Path
import torch
from tests.helpers.staging import basic_items, staged_release
from tests.helpers.unclip import build_tiny_unclip
from passkit.views.derive import generate_views

class NoPeople:  # the people filter's own timing is not this section's question
    def describe(self):
        return [{"name": "none", "threshold": 1.0, "weights": "none", "sha256": None}]
    def score(self, images):
        from passkit.filters.people.ensemble import PeopleResult
        return [PeopleResult({"none": 0.0}) for _ in images]

dry = os.environ.get("DRY") == "1"
device = "cuda" if torch.cuda.is_available() and not dry else "cpu"
n = 4 if dry else 16
with tempfile.TemporaryDirectory() as tmp:
    model = Path(os.environ["GENVIEW_MODEL"]) if os.environ.get("GENVIEW_MODEL") else build_tiny_unclip(Path(tmp) / "tiny")
    src = staged_release(Path(tmp), basic_items(n))
    t0 = time.perf_counter()
    res = generate_views(src, model, device=device, steps=2 if dry else 20, batch_size=8, fit_images=n, people=NoPeople())
    dt = time.perf_counter() - t0
    print(f"genview {model.name} on {device}: {res.generated} variations, {dt / max(res.generated, 1):.2f} s/image "
          f"(model load and principal fit included)", flush=True)
PY

# the input benchmark writes its 1000 photos first (under a minute on 16 cores), then 2 runs of each figure
if [[ "$DRY" == 1 ]]; then TI_ARGS=(--quick --runs 1 --images 200 --recipes moco_v2,dino); else TI_ARGS=(--full --runs 2); fi
TO=$((TO > 420 ? TO : 420)) section train-input "$PY" benchmarks/train_input.py "${TI_ARGS[@]}"
section pytest-dali "$PY" -m pytest -q -p no:cacheprovider tests/stream/test_dali.py

# GenView's quality-driven loss: MoCo v2 step time with quality_loss against the plain step, same model and batch:
# scored by the momentum encoder (two extra no-grad forward passes of the key backbone), and by the frozen
# open_clip ConvNeXt of GENVIEW_SCORER (open_clip:ARCH:WEIGHTS_FILE, e.g. convnext_base_w's laion2B weights; with
# DRY=1 a tiny random-weight one) with its direction fitted first on the synthetic batch, as validate fits it on
# release images.
section genview-moco "$PY" - <<'PY'
import os, tempfile, time
from pathlib import Path
import torch
from passkit.recipes import quality
from passkit.recipes.moco import MoCo, MoCoConfig

dry = os.environ.get("DRY") == "1"
cuda = torch.cuda.is_available() and not dry
dev = torch.device("cuda" if cuda else "cpu")
kw = dict(arch="resnet18", width=8, small_stem=True, image_size=16, queue=64, bn_splits=2) if dry else \
     dict(arch="resnet50", image_size=224, queue=65536, bn_splits=8)
b, steps = (8, 2) if dry else (128, 10)
x = torch.randn(b, 3, kw["image_size"], kw["image_size"], device=dev)
tmp = Path(tempfile.mkdtemp())
scorers = [None, "momentum"]
if os.environ.get("GENVIEW_SCORER"):
    scorers.append(os.environ["GENVIEW_SCORER"])
elif dry:
    from tests.helpers.openclip import ARCH, tiny_convnext_clip
    scorers.append(f"open_clip:{ARCH}:{tiny_convnext_clip(tmp)}")
for spec in scorers:
    torch.manual_seed(0)
    pca = None
    if spec not in (None, "momentum"):
        t0 = time.perf_counter()
        principal, n = quality.fit_release(quality.build_scorer(spec), iter([x]), limit=b)
        quality.write_pca(tmp / "pca.json", principal, {"scorer": spec, "images": n})
        pca = str(tmp / "pca.json")
        print(f"{spec}: loaded and direction fitted on {n} images in {time.perf_counter() - t0:.1f} s", flush=True)
    m = MoCo(MoCoConfig(**kw, quality_loss=spec is not None, quality_scorer=spec or "momentum", quality_pca=pca))
    m = m.to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.9)
    amp = torch.autocast("cuda", torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with amp:
            out = m(x, x.flip(3))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        m.momentum_update()
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    extra = {k: round(float(out.metrics[k]), 3) for k in ("quality", "weight_min", "weight_max", "pca_fits")
             if k in out.metrics}
    print(f"moco quality_loss={spec or 'off'}: {dt * 1000:.1f} ms/step, {b / dt:.1f} images/s, "
          f"loss {float(out.loss.detach()):.3f} {extra}", flush=True)
PY

section pytest-recipes "$PY" -m pytest -q -p no:cacheprovider tests/recipes/test_swav.py tests/recipes/test_dino.py tests/recipes/test_mae.py
echo "gpu_check: done in ${SECONDS} s; failed sections: ${failed[*]:-none}"
