"""Which input pipeline a training run uses: `passkit validate --loader auto|cpu|device|dali`.

auto picks the device pipeline where the model trains on CUDA (there the CPU loader, decoding and
augmenting in workers, is what limits the speed) and the CPU loader elsewhere (on a CPU the
"device" is the same cores, and the CPU loader's cropped reduced-scale decode is cheaper).
dali (only when asked: `pip install 'passkit[dali]'`) runs NVIDIA DALI's reader, decoder and
augmentations (passkit.stream.dali): on the GPU, or as a CPU-only DALI pipeline without one.
"""

from __future__ import annotations

import importlib.util

import torch

LOADERS = ("auto", "cpu", "device", "dali")


class LoaderUnavailable(ValueError):
    """The input pipeline asked for cannot run here; the message says what to do instead."""


def resolve_loader(mode: str, device: torch.device) -> str:
    """"cpu", "device" or "dali" for `mode` on `device`; LoaderUnavailable for what cannot run here."""
    if mode == "auto":
        return "device" if device.type == "cuda" else "cpu"
    if mode in ("cpu", "device"):
        return mode
    if mode == "dali":
        if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
            raise LoaderUnavailable("--loader dali needs NVIDIA DALI, which is not installed (pip install "
                                    "'passkit[dali]': its wheels for CUDA 12/13 install with pip); --loader "
                                    "device decodes and augments on the GPU without it")
        return "dali"  # without a GPU too: DALI runs the same graph as a CPU-only pipeline
    raise LoaderUnavailable(f"unknown loader {mode!r}; choose one of {', '.join(LOADERS)}")
