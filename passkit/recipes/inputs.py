"""Which input pipeline a training run uses: `passkit validate --loader auto|cpu|device|dali`.

auto picks the device pipeline where the model trains on CUDA (there the CPU loader, decoding and
augmenting in workers, is what limits the speed) and the CPU loader elsewhere (on a CPU the
"device" is the same cores, and the CPU loader's cropped reduced-scale decode is cheaper).
"""

from __future__ import annotations

import importlib.util

import torch

LOADERS = ("auto", "cpu", "device", "dali")


class LoaderUnavailable(ValueError):
    """The input pipeline asked for cannot run here; the message says what to do instead."""


def resolve_loader(mode: str, device: torch.device) -> str:
    """"cpu" or "device" for `mode` on `device`; LoaderUnavailable for what cannot run here."""
    if mode == "auto":
        return "device" if device.type == "cuda" else "cpu"
    if mode in ("cpu", "device"):
        return mode
    if mode == "dali":
        if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
            raise LoaderUnavailable("--loader dali needs NVIDIA DALI, which is not installed (its wheels for CUDA "
                                    "12/13 install with pip from NVIDIA's index); --loader device decodes and "
                                    "augments on the GPU without it")
        raise LoaderUnavailable("NVIDIA DALI is installed, but this passkit has no DALI reader yet; "
                                "use --loader device (decode and augment on the GPU) or --loader cpu")
    raise LoaderUnavailable(f"unknown loader {mode!r}; choose one of {', '.join(LOADERS)}")
