"""The Stable unCLIP img2img pipeline as generation uses it: loaded from a local folder with diffusers'
own loader, its CLIP image encoder's patch tokens, and variations at per-image noise levels and seeds.

diffusers and transformers are imported here only (`pip install passkit[genview]`), so nothing else
pays for them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

STEPS = 20  # denoising steps: the pipeline's default, which the reference keeps


class GenViewUnavailable(RuntimeError):
    """diffusers/transformers are missing, or the folder is not an unCLIP img2img checkpoint."""


def load_pipeline(model_dir: Path, device: str = "cpu") -> Any:
    """The StableUnCLIPImg2ImgPipeline saved in `model_dir` (model_index.json and its component
    folders), on `device`, fp16 on CUDA (as the reference runs it), progress bars off."""
    try:
        from diffusers import StableUnCLIPImg2ImgPipeline
    except ImportError as e:
        raise GenViewUnavailable(f"views generate needs diffusers and transformers: pip install "
                                 f"'passkit[genview]' ({e})") from None
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise GenViewUnavailable(f"{model_dir} has no model_index.json: give the folder of a diffusers "
                                 f"StableUnCLIPImg2ImgPipeline checkpoint (e.g. stable-diffusion-2-1-unclip)")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def describe(pipe: Any, model_dir: Path) -> dict[str, Any]:
    """What the manifest and each sample record about the model: its folder's name, its class, and
    a digest of its model_index.json and weight files' names and sizes (cheap, and changes with them)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256((model_dir / "model_index.json").read_bytes())
    for p in sorted(model_dir.rglob("*")):
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"):
            h.update(f"{p.relative_to(model_dir)}:{p.stat().st_size}".encode())
    return {"name": model_dir.name, "pipeline": type(pipe).__name__, "fingerprint": h.hexdigest()[:16]}


@torch.no_grad()
def patch_tokens(pipe: Any, images: list[Image.Image]) -> torch.Tensor:
    """[B, N, D] patch tokens (class token dropped) of the pipeline's own CLIP image encoder, float32 on CPU."""
    enc = pipe.image_encoder
    pixels = pipe.feature_extractor(images=images, return_tensors="pt").pixel_values
    out = enc(pixel_values=pixels.to(enc.device, enc.dtype))
    return out.last_hidden_state[:, 1:].float().cpu()


def sample_seed(seed: int, key: str) -> int:
    """A sample's own seed: the same for the same (run seed, key) whatever batch it falls in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") >> 1


@torch.no_grad()
def vary(pipe: Any, images: list[Image.Image], levels: list[int], seeds: list[int], steps: int = STEPS
         ) -> list[Image.Image]:
    """One variation per image: images sharing a noise level go through the pipeline together, each
    with its own generator, so a variation depends only on its image, level and seed."""
    out: list[Image.Image | None] = [None] * len(images)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, level in enumerate(levels):
        groups[level].append(i)
    device = pipe.device
    gen_device = "cpu" if device.type == "mps" else device
    for level, idx in sorted(groups.items()):
        gens = [torch.Generator(gen_device).manual_seed(seeds[i]) for i in idx]
        result = pipe(image=[images[i] for i in idx], prompt=[""] * len(idx), noise_level=level,
                      num_inference_steps=steps, generator=gens)
        for i, im in zip(idx, result.images, strict=True):
            out[i] = im
    return [im for im in out if im is not None]
