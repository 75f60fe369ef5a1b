"""CPU time per image of the device pipeline on CPU tensors, on the loader benchmark's photos.

    .venv/bin/python benchmarks/device_views.py dino full 32 [--prof]

Why: the device pipeline runs in the training process, so on a CPU its cost is the training
loop's; this times DeviceAugment (decode, crops, colour steps) on one thread for one batch of
640-1600 px photos (benchmarks/train_input.py's release, written there first if missing), CPU time
so that other users of a shared machine move the figure less. --prof prints cProfile's top lines.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from loader_vs_webdataset import load_average, make_release  # noqa: E402


def main(argv: list[str]) -> None:
    from passkit.recipes import presets
    from passkit.recipes.augparams import EncodedViews
    from passkit.recipes.augspec import view_specs
    from passkit.recipes.device_augment import DeviceAugment

    args = [a for a in argv if not a.startswith("--")]
    recipe, preset, n = (args + ["dino", "full", "32"][len(args):])[:3]
    torch.set_num_threads(1)
    root = make_release(Path(tempfile.gettempdir()) / "passkit-bench", 1000, 500)  # reused when there
    with tarfile.open(sorted((root / "shards").glob("*.tar"))[0]) as tf:
        datas = [tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".jpg")][:int(n)]  # type: ignore[union-attr]
    specs = view_specs(presets.get(preset, recipe).build_recipe().transform())
    random.seed(0)
    ev = EncodedViews(specs)
    batch = [ev(d) for d in datas]
    aug = DeviceAugment(specs)
    aug(batch[:4])  # warm up
    times = []
    for _ in range(3):
        t0 = time.process_time()
        aug(batch)
        times.append(time.process_time() - t0)
    print(f"{recipe} {preset} {sorted({s.size for s in specs})}: {min(times) * 1000 / len(batch):.1f} CPU-ms/img "
          f"(min of 3, {len(batch)} photos, one thread); load average {load_average():.2f}")
    if "--prof" in argv:
        pr = cProfile.Profile()
        pr.enable()
        aug(batch)
        pr.disable()
        pstats.Stats(pr).sort_stats("cumtime").print_stats(20)


if __name__ == "__main__":
    main(sys.argv[1:])
