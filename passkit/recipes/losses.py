"""The recipes' objectives as functions of tensors: no modules, no state, no schedules.

The recipes (moco.py, swav.py, dino.py, mae.py) own the networks and whatever moves between steps
(MoCo's queue, SwAV's queue and prototypes, DINO's centre and temperature schedule, MAE's mask);
they hand the tensors to these functions. Kept apart so each objective can be tested on hand-made
inputs (tests/recipes/test_losses.py) and read in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from passkit.recipes.engine import is_distributed


def info_nce(pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's InfoNCE: each query must pick its key (index 0) out of 1 + K candidates.

    pos [B, 1]: similarity of each query to its key; neg [B, K]: to the K negatives. Returns
    (loss, logits [B, 1 + K]); the logits are returned for the accuracy the recipe logs.
    """
    logits = torch.cat([pos, neg], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels), logits


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Soft codes [B, K] from prototype scores [B, K]: rows sum to 1, columns share the batch equally.

    Under DDP the column sums are all-reduced, so B is the global batch (as in SwAV's code).
    """
    q = torch.exp((scores.float() - scores.float().max()) / eps).T  # K x B; max-shift for stability
    world = dist.get_world_size() if is_distributed() else 1
    b = q.shape[1] * world
    k = q.shape[0]
    total = q.sum()
    if world > 1:
        dist.all_reduce(total)
    q /= total
    for _ in range(iters):
        rows = q.sum(dim=1, keepdim=True)
        if world > 1:
            dist.all_reduce(rows)
        q /= rows
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).T


def swapped_prediction(scores: Sequence[torch.Tensor], codes: Sequence[torch.Tensor],
                       temperature: float) -> torch.Tensor:
    """SwAV's loss: every view predicts the codes of each other view that has codes.

    scores: one [B, K] tensor of prototype scores per view; codes: Sinkhorn codes [B, K] of the
    first len(codes) views (the large crops). Cross-entropy of softmax(scores / T) to the codes,
    averaged over the predicting views, then over the coded ones.
    """
    loss = torch.zeros((), device=scores[0].device)
    for c, q in enumerate(codes):
        sub = 0.0
        for v in range(len(scores)):
            if v != c:
                sub = sub - (q * F.log_softmax(scores[v] / temperature, dim=1)).sum(1).mean()
        loss = loss + sub / (len(scores) - 1)
    return loss / len(codes)


def dino_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], center: torch.Tensor,
              student_temp: float, teacher_temp: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DINO's cross-entropy of the centred, sharpened teacher to the student, over views v != t.

    student: head outputs per view [B, K]; teacher: the teacher's outputs for the first
    len(teacher) views (the large crops), without gradient; center [1, K]. Returns (loss, the
    teacher distributions softmax((t - center) / teacher_temp)), the latter for the entropy the
    recipe logs.
    """
    t_prob = [F.softmax((t - center) / teacher_temp, dim=-1) for t in teacher]
    loss = torch.zeros((), device=student[0].device)
    terms = 0
    for iq, q in enumerate(t_prob):
        for v, s in enumerate(student):
            if v == iq:
                continue
            loss = loss - (q * F.log_softmax(s / student_temp, dim=-1)).sum(-1).mean()
            terms += 1
    return loss / terms, t_prob


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """MAE's loss: mean squared error of predicted patches, over the masked patches only.

    pred, target [B, N, D] (patches, target in pixels); mask [B, N] with 1 = masked. With
    norm_pix, each target patch is first normalised by its own mean and variance (norm_pix_loss).
    """
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


def quality_weights(fg1: torch.Tensor, fg2: torch.Tensor, bg1: torch.Tensor, bg2: torch.Tensor,
                    gamma: float = 1.0) -> torch.Tensor:
    """GenView's per-pair weights: w = B * softmax(gamma * (cos(fg1, fg2) - cos(bg1, bg2))), detached.

    fg*, bg* [B, D]: each view's foreground and background features (passkit.views.foreground.pooled).
    A pair whose foregrounds agree more than its backgrounds is a better positive and weighs more; the
    weights average to 1, so the loss keeps its scale, and carry no gradient, so the scoring network
    is never trained through them.
    """
    quality = F.cosine_similarity(fg1.float(), fg2.float(), dim=-1) - F.cosine_similarity(bg1.float(), bg2.float(), dim=-1)
    return (quality.shape[0] * F.softmax(gamma * quality, dim=0)).detach()


def weighted_info_nce(pos: torch.Tensor, neg: torch.Tensor, temperature: float,
                      weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """info_nce with each query's term multiplied by its weight [B] (mean of w_i * l_i); without
    weights it is info_nce."""
    if weights is None:
        return info_nce(pos, neg, temperature)
    logits = torch.cat([pos, neg], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    per = F.cross_entropy(logits, labels, reduction="none")
    return (per * weights.to(per)).mean(), logits
