"""A procedurally generated, labelled image set, so that tests on a CPU can prove learning.

Each class is a shape or a texture (disc, ring, square, triangle, cross, stripes, checkerboard,
dots), drawn at a random position, size, rotation and phase, in a foreground colour on a
background colour drawn from a small palette shared by all classes, with pixel noise. Colour, the
easiest cue for a random network, carries no class information, so a randomly initialised encoder's kNN accuracy stays low while an encoder
trained to ignore colour jitter and crops (MoCo's augmentations) separates the classes.

Deterministic: the same (n, size, seed) gives the same images. `write_folder` stores a set as an
image folder (<root>/<train|test>/<class>/<i>.png) that `passkit validate --eval` reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CLASSES = ("disc", "ring", "square", "triangle", "cross", "stripes", "checker", "dots")


@dataclass(frozen=True, slots=True)
class LabelledSet:
    """uint8 images [N,3,S,S] with int64 labels, split into train (kNN memory, probe fit) and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float mask in [0, 1] of shape [S, S] for one class instance."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # [0,1)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    r = rng.uniform(0.22, 0.36)
    th = rng.uniform(0, math.pi)
    x, y = xx - cx, yy - cy
    u, v = x * math.cos(th) + y * math.sin(th), -x * math.sin(th) + y * math.cos(th)  # rotated coords
    d = np.sqrt(x**2 + y**2)
    if kind == "disc":
        return (d < r).astype(np.float32)
    if kind == "ring":
        return ((d < r) & (d > r * 0.6)).astype(np.float32)
    if kind == "square":
        return ((np.abs(u) < r * 0.8) & (np.abs(v) < r * 0.8)).astype(np.float32)
    if kind == "triangle":
        # equilateral triangle: inside three half-planes
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = th + k * 2 * math.pi / 3
            inside &= (x * math.cos(a) + y * math.sin(a)) < r * 0.5
        return inside.astype(np.float32)
    if kind == "cross":
        w = r * 0.3
        return (((np.abs(u) < w) & (np.abs(v) < r)) | ((np.abs(v) < w) & (np.abs(u) < r))).astype(np.float32)
    freq = rng.uniform(3.0, 5.0)
    phase = rng.uniform(0, 2 * math.pi)
    if kind == "stripes":
        return (np.sin(2 * math.pi * freq * u + phase) > 0).astype(np.float32)
    if kind == "checker":
        return ((np.sin(2 * math.pi * freq * u + phase) > 0) ^ (np.sin(2 * math.pi * freq * v) > 0)).astype(np.float32)
    if kind == "dots":
        su, sv = np.sin(2 * math.pi * freq * u + phase), np.sin(2 * math.pi * freq * v + phase)
        return ((su > 0.5) & (sv > 0.5)).astype(np.float32)
    raise ValueError(f"unknown synthetic class {kind!r}")


PALETTE = np.array([[230, 60, 50], [40, 160, 70], [50, 90, 220], [240, 200, 40], [30, 30, 30], [225, 225, 225]],
                   dtype=np.float64)


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground from a small shared palette (slightly shifted), so that colour
    neither names the class nor singles out an image: instances differ by shape, size and place."""
    i, j = rng.choice(len(PALETTE), 2, replace=False)
    shift = rng.normal(0, 10, 3)
    return PALETTE[i] + shift, PALETTE[j] + shift


def generate(n: int, size: int = 32, seed: int = 0, classes: tuple[str, ...] = CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8 [n,3,S,S]) and labels, classes balanced and interleaved."""
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, 3, size, size), dtype=np.uint8)
    labels = np.arange(n) % len(classes)
    for i in range(n):
        m = _mask(classes[labels[i]], size, rng)[None]
        bg, fg = _colours(rng)
        img = bg[:, None, None] * (1 - m) + fg[:, None, None] * m
        img += rng.normal(0, 12, img.shape)
        imgs[i] = np.clip(img, 0, 255).astype(np.uint8)
    return torch.from_numpy(imgs), torch.from_numpy(labels.astype(np.int64))


def labelled_set(n_train: int = 800, n_test: int = 400, size: int = 32, seed: int = 0) -> LabelledSet:
    """Train and test images from disjoint random streams."""
    xtr, ytr = generate(n_train, size, seed * 2 + 1000)
    xte, yte = generate(n_test, size, seed * 2 + 1001)
    return LabelledSet(xtr, ytr, xte, yte, CLASSES, f"synthetic(n_train={n_train}, n_test={n_test}, size={size}, seed={seed})")


def write_folder(root: Path, ls: LabelledSet) -> Path:
    """Store a labelled set as <root>/<train|test>/<class>/<i>.png (readable by evaluate.load_labelled)."""
    from PIL import Image

    root = Path(root)
    for split, xs, ys in (("train", ls.train_images, ls.train_labels), ("test", ls.test_images, ls.test_labels)):
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            d = root / split / ls.classes[int(y)]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x.permute(1, 2, 0).numpy()).save(d / f"{i:06d}.png")
    return root
