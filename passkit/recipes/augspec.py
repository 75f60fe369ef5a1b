"""What one view's augmentation is, read from the recipe's own torchvision transform.

The device pipeline (passkit.recipes.device_augment) does not keep a second copy of each
recipe's augmentation settings: `view_specs` reads them off the transform the CPU path runs
(augment.moco_v2_augment, multicrop._crop, mae.mae_transform), so the two cannot drift apart.
A step it does not know, or steps in an order it cannot reproduce, raise: a device pipeline
that silently skipped a step would train on other data than the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchvision.transforms import v2

# The order the device pipeline applies the photometric steps in. Flip commutes with each of them
# (pointwise, or a symmetric kernel with reflect padding), so it may sit anywhere in the reference.
ORDER = ("jitter", "gray", "blur", "solarize")


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """One view: the crop, then flip, colour jitter, grayscale, blur and solarize, each with its
    probability (0: never). Jitter ranges are torchvision's (factor ranges; hue as an offset)."""

    size: tuple[int, int]  # (h, w) out
    scale: tuple[float, float]
    ratio: tuple[float, float]
    interpolation: str = "bilinear"  # the reference's; the device resamples bilinearly, area-averaged
    flip_p: float = 0.0
    jitter_p: float = 0.0
    brightness: tuple[float, float] | None = None
    contrast: tuple[float, float] | None = None
    saturation: tuple[float, float] | None = None
    hue: tuple[float, float] | None = None
    gray_p: float = 0.0
    blur_p: float = 0.0
    blur_kernel: int = 0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 128.0  # on the uint8 scale, as the reference applies it


def _pair(v: Any) -> tuple[float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]))


def view_spec(compose: Any) -> ViewSpec:
    """The ViewSpec of one reference view (a v2.Compose whose first step is RandomResizedCrop)."""
    steps = list(getattr(compose, "transforms", [compose]))
    crop = steps[0]
    if not isinstance(crop, v2.RandomResizedCrop):
        raise ValueError(f"the device pipeline needs RandomResizedCrop first, got {type(crop).__name__}")
    kw: dict[str, Any] = {"size": (int(crop.size[0]), int(crop.size[-1])), "scale": _pair(crop.scale),
                          "ratio": _pair(crop.ratio), "interpolation": str(getattr(crop.interpolation, "value", crop.interpolation))}
    seen: list[str] = []
    for step in steps[1:]:
        p = 1.0
        if isinstance(step, v2.RandomApply):
            if len(step.transforms) != 1:
                raise ValueError("the device pipeline reads RandomApply of one transform only")
            p, step = float(step.p), step.transforms[0]
        if isinstance(step, v2.RandomHorizontalFlip):
            kw["flip_p"] = float(step.p) * p
        elif isinstance(step, v2.ColorJitter):
            kw.update(jitter_p=p, brightness=_pair(step.brightness), contrast=_pair(step.contrast),
                      saturation=_pair(step.saturation), hue=_pair(step.hue))
            seen.append("jitter")
        elif isinstance(step, v2.RandomGrayscale):
            kw["gray_p"] = float(step.p) * p
            seen.append("gray")
        elif isinstance(step, v2.GaussianBlur):
            if step.kernel_size[0] != step.kernel_size[1] or step.sigma[0] > step.sigma[1]:
                raise ValueError(f"the device pipeline needs a square blur kernel, got {step.kernel_size}")
            kw.update(blur_p=p, blur_kernel=int(step.kernel_size[0]), blur_sigma=_pair(step.sigma))
            seen.append("blur")
        elif isinstance(step, v2.RandomSolarize):
            kw.update(solarize_p=float(step.p) * p, solarize_threshold=float(step.threshold))
            seen.append("solarize")
        elif type(step).__name__ == "_ToUint8":
            continue  # a dtype change; the device pipeline works in float throughout
        else:
            raise ValueError(f"the device pipeline cannot run {type(step).__name__}")
    if seen != sorted(seen, key=ORDER.index):
        raise ValueError(f"the device pipeline applies {ORDER} in that order; the reference has {seen}")
    return ViewSpec(**kw)


def view_specs(transform: Any) -> tuple[ViewSpec, ...]:
    """One ViewSpec per view of a recipe's transform (augment.MultiView of v2.Compose), or the
    one view of a v2.Compose."""
    if isinstance(transform, v2.Compose):
        return (view_spec(transform),)
    return tuple(view_spec(t) for t in transform.transforms)
