#!/usr/bin/env bash
# People filter on a GPU: which detectors run on CUDA here and how fast, next to the CPU in the same run.
#
#   bash scripts/gpu_people_check.sh            # on a machine with an NVIDIA GPU, from the repo root
#   PYTHON=.venv/bin/python IMAGES=256 bash scripts/gpu_people_check.sh
#
# Needs: torch with CUDA (MTCNN, torchvision run on it), onnxruntime-gpu for YOLOX-nano on CUDA
# (plain onnxruntime has no CUDAExecutionProvider: the script says so and measures the rest), and an
# OpenCV built with CUDA for YuNet / Yolo-Fastest on the GPU (opencv-python-headless is CPU-only: they
# are reported as "opencv-cpu"). Weights: $PASSKIT_MODELS (default ../shared/models). Images: $PERSON_DEV
# (a labelled folder with labels.csv), else $PASSKIT_MODELS/../data/person_dev_coco when present, else
# synthetic 512 px images (speed only). Env: IMAGES (128), RUNS (timed passes, 3), TIMEOUT (400 s).
# With $OUT set, everything also goes to $OUT/gpu_log.txt.
# Takes 1-3 minutes; prints a table, CPU vs CUDA agreement of each detector that ran on both, the
# MTCNN + HOG stand-in ensemble, and, last, the ratio GPU / CPU images/s of the default ensemble.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${OUT:-}" ]]; then mkdir -p "$OUT" && exec > >(tee -a "$OUT/gpu_log.txt") 2>&1; fi
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for c in .venv/bin/python python3 python; do
    if command -v "$c" >/dev/null 2>&1; then PY="$c"; break; fi
  done
fi
export PASSKIT_MODELS="${PASSKIT_MODELS:-$(cd .. && pwd)/shared/models}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)" PYTHONUNBUFFERED=1
echo "=== [people] $(date +%T)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
timeout -k 10 "${TIMEOUT:-400}" "$PY" - <<'PYEOF'
import os, statistics, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}",
      f"({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "")
import onnxruntime as ort
import cv2
print(f"onnxruntime {ort.__version__} providers: {ort.get_available_providers()}")
print(f"opencv {cv2.__version__}, CUDA devices seen by OpenCV: "
      f"{cv2.cuda.getCudaEnabledDeviceCount() if hasattr(cv2, 'cuda') else 0}")

from passkit.config import DetectorSpec, PeopleSpec
from passkit.filters.people import PeopleFilter

n = int(os.environ.get("IMAGES", "128"))
RUNS = max(1, int(os.environ.get("RUNS", "3")))
coco = Path(os.environ.get("PERSON_DEV") or Path(os.environ["PASSKIT_MODELS"]).parent / "data" / "person_dev_coco")
ims, labels = [], None
if (coco / "labels.csv").is_file():
    try:
        from passkit import images
        from passkit.config import ImageSpec
        from passkit.filters.eval import read_labels
        rows_ = read_labels(coco)[:n]
        ims = [images.check(p.read_bytes(), ImageSpec()).image for p, _ in rows_]
        labels = [y for _, y in rows_]
        print(f"{len(ims)} images from {coco} ({sum(labels)} with people)")
    except Exception as e:  # noqa: BLE001 - fall back to synthetic images
        ims, labels = [], None
        print(f"could not read {coco}: {type(e).__name__}: {str(e)[:200]}")
if not ims:
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)) for _ in range(n)]
    print(f"{len(ims)} synthetic images (no labelled folder at {coco}): speed only")

def rate(spec: PeopleSpec, runs: int = RUNS) -> tuple[float, str, list | None]:
    pf = PeopleFilter(spec, threads=max(1, (os.cpu_count() or 2) // 2))
    if not pf.detectors:
        return 0.0, "skipped: " + "; ".join(w for _, w in pf.skipped), None
    pf.score(ims[:16])  # warm up (CUDA context, cuDNN autotune, ORT allocations)
    rs, results = [], []
    for _ in range(runs):
        results = []
        t0 = time.perf_counter()
        for i in range(0, len(ims), 16):
            results += pf.score(ims[i:i + 16])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rs.append(len(ims) / (time.perf_counter() - t0))
    backends = ", ".join(f"{d.name}: {getattr(d, 'providers', None) or getattr(d, 'backend', None) or getattr(d, 'device', 'cpu')}"
                         for d in pf.detectors)
    return statistics.median(rs), backends, results

def row(label: str, spec: PeopleSpec) -> tuple[float, list | None]:
    t0 = time.perf_counter()
    try:
        r, how, res = rate(spec)
    except Exception as e:  # noqa: BLE001 - report any failure and go on
        r, how, res = 0.0, f"error: {type(e).__name__}: {str(e)[:160]}", None
    print(f"{label:<18} {spec.device:<5} {r:8.1f} img/s  [{time.perf_counter() - t0:4.0f} s]  {how}", flush=True)
    return r, res

def quality(res: list) -> str:
    if labels is None:
        return ""
    v = [r.verdict == "person" for r in res]
    tp = sum(a and y for a, y in zip(v, labels))
    fp = sum(a and not y for a, y in zip(v, labels))
    return f"; vs labels: {tp}/{sum(labels)} people found, {fp}/{len(labels) - sum(labels)} false alarms"

both = {}
for name in ("yolox_nano", "picodet_s_416", "yolo_fastest_body", "yunet", "mtcnn"):
    for device in ("cpu", "cuda"):
        spec = PeopleSpec(device=device, detectors=[DetectorSpec(name=name, threshold=0.5, required=False)])
        both[name, device] = row(name, spec)[1]
print("CPU vs CUDA agreement (same images, threshold 0.5):")
for name in ("yolox_nano", "picodet_s_416", "yolo_fastest_body", "yunet", "mtcnn"):
    a, b = both.get((name, "cpu")), both.get((name, "cuda"))
    if not a or not b:
        print(f"  {name:<18} not run on both devices")
        continue
    d = max(abs(x.scores.get(name, 0.0) - y.scores.get(name, 0.0)) for x, y in zip(a, b))
    same = sum(x.verdict == y.verdict for x, y in zip(a, b))
    print(f"  {name:<18} max |score cpu - cuda| {d:.4f}, same verdict on {same}/{len(a)}{quality(b)}", flush=True)
standin = {}
for device in ("cpu", "cuda"):  # what a user without downloaded weights gets: MTCNN (torch) + HOG (OpenCV)
    standin[device] = row("mtcnn+hog stand-in", PeopleSpec(device=device, detectors=[
        DetectorSpec(name="mtcnn", threshold=0.90), DetectorSpec(name="hog", threshold=0.50)]))[0]
print(f"mtcnn+hog stand-in GPU / CPU images/s: {standin['cuda'] / standin['cpu']:.2f}" if standin["cpu"] and standin["cuda"]
      else "mtcnn+hog stand-in: no GPU / CPU ratio")
ens = {}
for device in ("cpu", "cuda"):
    ens[device], res = row("default ensemble", PeopleSpec(device=device))
    if res and labels is not None:
        print(f"  default ensemble {device}{quality(res)}")
print(f"default ensemble GPU / CPU images/s: {ens['cuda'] / ens['cpu']:.2f}" if ens["cpu"] and ens["cuda"]
      else "default ensemble GPU / CPU images/s: n/a (no CUDA number: see the error above)" if ens["cpu"] else "no CPU number")
PYEOF
rc=$?
echo "=== [people] rc=$rc in ${SECONDS} s"
exit $rc
