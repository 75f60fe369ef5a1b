"""Test helper: a tiny open_clip CLIP whose image tower is timm's ConvNeXt-atto, with random weights,
saved as a weights file the way a real checkpoint is given to passkit's OpenClipScorer (no download).

The real scorer is open_clip's convnext_base_w (a timm ConvNeXt trunk too); this one has the same
structure (open_clip's TimmModel around a timm ConvNeXt, a small text tower beside it), a few
hundred thousand weights, and an input size of 128 px (a 4 x 4 feature grid at ConvNeXt's stride 32).
"""

from __future__ import annotations

import json
from pathlib import Path

ARCH = "passkit-tiny-convnext"
IMAGE_SIZE = 128
DIM = 320  # convnext_atto's last-stage width

CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "timm_drop": 0.0, "timm_drop_path": 0.0, "image_size": IMAGE_SIZE},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def register(folder: Path) -> str:
    """Make ARCH known to open_clip (a config file in `folder`); returns its name."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{ARCH}.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    open_clip.add_model_config(folder / f"{ARCH}.json")
    return ARCH


def tiny_convnext_clip(folder: Path, fmt: str = "safetensors", seed: int = 0) -> Path:
    """Build the tiny model with random weights and save its whole state dict to `folder` (safetensors
    or a torch .bin, the two forms open_clip checkpoints come in); returns the weights file."""
    import open_clip
    import torch

    register(folder)
    torch.manual_seed(seed)
    model = open_clip.create_model(ARCH, pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = folder / "open_clip_model.safetensors"
        save_file(state, str(path))
    else:
        path = folder / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    return path
