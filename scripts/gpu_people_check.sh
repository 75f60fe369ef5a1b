#!/usr/bin/env bash
# People filter on a GPU: which detectors run on CUDA here and how fast, next to the CPU in the same run.
#
#   bash scripts/gpu_people_check.sh            # on a machine with an NVIDIA GPU, from the repo root
#   PYTHON=.venv/bin/python IMAGES=256 bash scripts/gpu_people_check.sh
#
# Needs: torch with CUDA (MTCNN, torchvision run on it), onnxruntime-gpu for YOLOX-nano on CUDA
# (plain onnxruntime has no CUDAExecutionProvider: the script says so and measures the rest), and an
# OpenCV built with CUDA for YuNet / Yolo-Fastest on the GPU (opencv-python-headless is CPU-only: they
# are reported as "opencv-cpu"). Weights: $PASSKIT_MODELS (default ../shared/models). Images:
# ../shared/data/person_dev_coco when present, else synthetic 512 px images (speed only).
# Takes 1-3 minutes; prints a table and, last, the ratio GPU / CPU images/s of the default ensemble.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for c in .venv/bin/python python3 python; do
    if command -v "$c" >/dev/null 2>&1; then PY="$c"; break; fi
  done
fi
export PASSKIT_MODELS="${PASSKIT_MODELS:-$(cd .. && pwd)/shared/models}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
timeout "${TIMEOUT:-400}" "$PY" - <<'PYEOF'
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
coco = Path(os.environ["PASSKIT_MODELS"]).parent / "data" / "person_dev_coco"
if (coco / "labels.csv").is_file():
    from passkit import images
    from passkit.config import ImageSpec
    from passkit.filters.eval import read_labels
    ims = [images.check(p.read_bytes(), ImageSpec()).image for p, _ in read_labels(coco)[:n]]
    print(f"{len(ims)} images from {coco}")
else:
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)) for _ in range(n)]
    print(f"{len(ims)} synthetic images (no person_dev_coco found): speed only")

def rate(spec: PeopleSpec, runs: int = 3) -> tuple[float, str]:
    pf = PeopleFilter(spec, threads=max(1, (os.cpu_count() or 2) // 2))
    if not pf.detectors:
        return 0.0, "skipped: " + "; ".join(w for _, w in pf.skipped)
    pf.score(ims[:16])  # warm up (CUDA context, cuDNN autotune, ORT allocations)
    rs = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for i in range(0, len(ims), 16):
            pf.score(ims[i:i + 16])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rs.append(len(ims) / (time.perf_counter() - t0))
    backends = ", ".join(f"{d.name}: {getattr(d, 'providers', None) or getattr(d, 'backend', None) or getattr(d, 'device', 'cpu')}"
                         for d in pf.detectors)
    return statistics.median(rs), backends

rows = []
for name in ("yolox_nano", "yolo_fastest_body", "yunet", "mtcnn"):
    for device in ("cpu", "cuda"):
        spec = PeopleSpec(device=device, detectors=[DetectorSpec(name=name, threshold=0.5, required=False)])
        try:
            r, how = rate(spec)
        except Exception as e:  # noqa: BLE001 - report any failure and go on
            r, how = 0.0, f"error: {str(e)[:160]}"
        rows.append((name, device, r, how))
        print(f"{name:<18} {device:<5} {r:8.1f} img/s  {how}", flush=True)
ens = {}
for device in ("cpu", "cuda"):
    try:
        ens[device], how = rate(PeopleSpec(device=device))
    except Exception as e:  # noqa: BLE001 - report any failure and go on
        ens[device], how = 0.0, f"error: {str(e)[:200]}"
    print(f"{'default ensemble':<18} {device:<5} {ens[device]:8.1f} img/s  {how}", flush=True)
print(f"default ensemble GPU / CPU images/s: {ens['cuda'] / ens['cpu']:.2f}" if ens["cpu"] else "no CPU number")
PYEOF
