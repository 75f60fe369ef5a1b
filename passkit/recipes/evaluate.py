"""Evaluation of a pretrained encoder: kNN, linear probe, RankMe, alignment and uniformity, and
the positive/negative similarity histograms recorded during training.

- kNN (Wu et al. 2018, as used by DINO/MoCo monitors): cosine similarity to the training set's
  l2-normalised features, the k nearest vote with weight exp(sim / T); k=20, T=0.07 and k=200, T=0.1.
- Linear probe: a softmax classifier on frozen, standardised features (full-batch L-BFGS).
- RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of an
  embedding matrix; near 1 means collapse, up to min(N, D) means full rank.
- Alignment and uniformity (Wang & Isola 2020) of l2-normalised embeddings of two views.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from passkit.recipes.augment import eval_transform, normalize
from passkit.recipes.synthetic import LabelledSet

KNN_SETTINGS: tuple[tuple[int, float], ...] = ((20, 0.07), (200, 0.1))
HIST_BINS = 50
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@torch.no_grad()
def extract(features: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: torch.device | str,
            batch_size: int = 256, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """float32 features of uint8 images [N,3,H,W], batched, on the CPU."""
    out = []
    dev = torch.device(device)
    for i in range(0, len(images), batch_size):
        x = normalize(images[i: i + batch_size].to(dev))
        with torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else torch.autocast(dev.type, enabled=False):
            out.append(features(x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, t: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> float:
    """Top-1 accuracy of temperature-weighted kNN on cosine similarity."""
    c = int(num_classes or int(max(train_y.max(), test_y.max())) + 1)
    k = min(k, len(train_f))
    tr, te = F.normalize(train_f.float(), dim=1), F.normalize(test_f.float(), dim=1)
    correct = 0
    for i in range(0, len(te), chunk):
        sim = te[i: i + chunk] @ tr.T
        w, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(w), c).scatter_add_(1, train_y[idx], (w / t).exp())
        correct += int((votes.argmax(1) == test_y[i: i + chunk]).sum())
    return correct / len(te)


def linear_probe(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                 *, weight_decay: float = 1e-4, max_iter: int = 200) -> float:
    """Top-1 test accuracy of multinomial logistic regression on standardised frozen features."""
    mean, std = train_f.mean(0), train_f.std(0).clamp(min=1e-6)
    xtr, xte = (train_f - mean) / std, (test_f - mean) / std
    c = int(max(train_y.max(), test_y.max())) + 1
    lin = torch.nn.Linear(xtr.shape[1], c)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), train_y) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((lin(xte).argmax(1) == test_y).float().mean())


@torch.no_grad()
def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank of embeddings z [N, D]."""
    s = torch.linalg.svdvals(z.float().cpu())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """E ||f(x) - f(y)||^alpha over positive pairs of l2-normalised embeddings (lower: better aligned)."""
    x, y = F.normalize(x.float(), dim=1), F.normalize(y.float(), dim=1)
    return float((x - y).norm(dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over all pairs (lower: more uniform on the sphere)."""
    x = F.normalize(x.float(), dim=1)
    return float(torch.pdist(x).pow(2).mul(-t).exp().mean().log())


def similarity_histogram(pos: torch.Tensor, neg: torch.Tensor, bins: int = HIST_BINS) -> dict[str, Any]:
    """Counts of positive and negative cosine similarities over [-1, 1]."""
    p = torch.histc(pos.detach().float().cpu(), bins=bins, min=-1, max=1)
    n = torch.histc(neg.detach().float().cpu(), bins=bins, min=-1, max=1)
    return {"bins": bins, "pos": p.int().tolist(), "neg": n.int().tolist(),
            "pos_mean": float(pos.float().mean()), "neg_mean": float(neg.float().mean())}


def load_labelled(spec: str | Path, size: int, seed: int = 0) -> LabelledSet:
    """A labelled evaluation set: "synthetic" (or "synthetic:N_TRAIN:N_TEST"), or an image folder.

    A folder is either <root>/<train|test>/<class>/<image> or <root>/<class>/<image>, where every
    fifth image of each class (sorted by name) goes to test. Images are resized (shorter side) and
    centre-cropped to `size`.
    """
    from passkit.recipes.synthetic import labelled_set

    s = str(spec)
    if s == "synthetic" or s.startswith("synthetic:"):
        parts = s.split(":")[1:]
        n_train, n_test = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (800, 400)
        return labelled_set(n_train, n_test, size=size, seed=seed)
    root = Path(spec)
    if not root.is_dir():
        raise FileNotFoundError(f"evaluation set {spec!r} is neither 'synthetic' nor a folder of class folders")
    from PIL import Image

    t = eval_transform(size)

    def read(folder: Path) -> dict[str, list[Path]]:
        return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
                for d in sorted(folder.iterdir()) if d.is_dir()}

    if (root / "train").is_dir() and (root / "test").is_dir():
        tr, te = read(root / "train"), read(root / "test")
    else:
        allc = read(root)
        tr = {c: [p for i, p in enumerate(ps) if i % 5 != 4] for c, ps in allc.items()}
        te = {c: [p for i, p in enumerate(ps) if i % 5 == 4] for c, ps in allc.items()}
    classes = tuple(sorted(set(tr) | set(te)))
    if len(classes) < 2 or not any(te.values()) or not any(tr.values()):
        raise ValueError(f"{root}: need at least two class folders with images in both train and test")

    def tensors(split: dict[str, list[Path]]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for c, paths in split.items():
            for p in paths:
                with Image.open(p) as im:
                    xs.append(t(im.convert("RGB")))
                ys.append(classes.index(c))
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)

    xtr, ytr = tensors(tr)
    xte, yte = tensors(te)
    return LabelledSet(xtr, ytr, xte, yte, classes, str(root))


def evaluate_features(features: Callable[[torch.Tensor], torch.Tensor], ls: LabelledSet, device: torch.device | str,
                      *, probe: bool = True, amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """kNN accuracies (both settings), linear-probe accuracy and RankMe of the test features."""
    ftr = extract(features, ls.train_images, device, amp_dtype=amp_dtype)
    fte = extract(features, ls.test_images, device, amp_dtype=amp_dtype)
    out: dict[str, Any] = {}
    for k, t in KNN_SETTINGS:
        out[f"knn_k{k}_t{t}"] = knn_accuracy(ftr, ls.train_labels, fte, ls.test_labels, k, t, ls.num_classes)
    if probe:
        out["linear_probe"] = linear_probe(ftr, ls.train_labels, fte, ls.test_labels)
    out["rankme"] = rankme(fte)
    return out
