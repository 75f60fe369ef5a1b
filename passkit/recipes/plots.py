"""Plots of a validation run (matplotlib, no display): loss, similarity histograms, kNN bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def loss_curve(history: list[dict[str, Any]], chance: float | None, path: Path) -> Path:
    """The training loss, the chance level where the loss has one, and DINO's KL term when logged."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], label="loss")
    if all("kl" in h for h in history) and history:
        ax.plot(steps, [h["kl"] for h in history], label="KL(teacher || student)")
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", label=f"chance: {chance:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    return _save(plt, fig, path)


def similarity_histograms(hists: list[dict[str, Any]], path: Path) -> Path:
    """One panel per recorded point in training: positive vs negative cosine similarities."""
    plt = _plt()
    n = max(1, len(hists))
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 2.8), sharey=False, squeeze=False)
    for ax, h in zip(axes[0], hists, strict=False):
        edges = np.linspace(-1, 1, h["bins"] + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        for key, colour in (("pos", "tab:green"), ("neg", "tab:red")):
            c = np.asarray(h[key], dtype=float)
            ax.plot(centres, c / max(c.sum(), 1), color=colour, label=key)
        ax.set_title(f"step {h['step']}")
        ax.set_xlabel("cosine similarity")
    axes[0][0].legend()
    return _save(plt, fig, path)


def knn_bars(pre: dict[str, float], rnd: dict[str, float], path: Path) -> Path:
    plt = _plt()
    keys = [k for k in pre if k.startswith(("knn", "linear"))]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [rnd[k] for k in keys], 0.4, label="random init")
    ax.bar(x + 0.2, [pre[k] for k in keys], 0.4, label="pretrained")
    ax.set_xticks(x, keys, fontsize=8)
    ax.set_ylabel("top-1 accuracy")
    ax.legend()
    return _save(plt, fig, path)
