"""The recipes' objectives (passkit.recipes.losses) on hand-made inputs whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from passkit.recipes.losses import dino_loss, info_nce, masked_mse, sinkhorn, swapped_prediction


def test_info_nce_is_cross_entropy_with_the_positive_first() -> None:
    torch.manual_seed(0)
    pos, neg = torch.randn(5, 1), torch.randn(5, 7)
    loss, logits = info_nce(pos, neg, temperature=0.5)
    want = F.cross_entropy(torch.cat([pos, neg], 1) / 0.5, torch.zeros(5, dtype=torch.long))
    assert torch.allclose(loss, want) and logits.shape == (5, 8)
    assert torch.allclose(logits[:, 0], pos[:, 0] / 0.5)


def test_info_nce_near_zero_for_aligned_pairs_and_large_for_swapped_ones() -> None:
    eye = torch.eye(8)
    q = k = eye[:4]  # each query is its key; the negatives are the 4 orthogonal directions
    negatives = eye[4:].T  # [D, K], the queue's layout
    aligned, _ = info_nce((q * k).sum(1, keepdim=True), q @ negatives, temperature=0.05)
    assert float(aligned) < 1e-6
    swapped = k.roll(1, dims=0)  # every query paired with another query's key: orthogonal
    wrong, _ = info_nce((q * swapped).sum(1, keepdim=True), q @ negatives, temperature=0.05)
    assert float(wrong) == pytest.approx(math.log(5), rel=1e-5)  # no better than chance over 1 + K
    hard = -k  # each key turned to point away from its query
    worst, _ = info_nce((q * hard).sum(1, keepdim=True), q @ negatives, temperature=0.05)
    assert float(worst) > 19


def test_sinkhorn_marginals() -> None:
    torch.manual_seed(0)
    b, k = 48, 12
    scores = 0.1 * torch.randn(b, k) + torch.linspace(0, 0.5, k)  # later prototypes favoured by every sample
    q = sinkhorn(scores, eps=0.05, iters=50)
    assert torch.allclose(q.sum(1), torch.ones(b), atol=1e-5)  # rows: one distribution per sample
    assert torch.allclose(q.sum(0), torch.full((k,), b / k), rtol=1e-3)  # columns: B/K each
    three = sinkhorn(scores, eps=0.05, iters=3)  # SwAV's 3 iterations: rows exact, columns close
    assert torch.allclose(three.sum(1), torch.ones(b), atol=1e-5)
    assert float(three.sum(0).max() / three.sum(0).min()) < 1.5


def test_swapped_prediction_is_ln_k_for_uniform_predictions_and_low_for_matching_ones() -> None:
    b, k = 6, 10
    codes = [torch.full((b, k), 1 / k)] * 2
    flat = [torch.zeros(b, k)] * 4
    assert float(swapped_prediction(flat, codes, temperature=0.1)) == pytest.approx(math.log(k))
    onehot = F.one_hot(torch.arange(b) % k, k).float()
    sharp = [onehot * 10.0] * 4  # every view scores the coded prototype highest
    assert float(swapped_prediction(sharp, [onehot, onehot], temperature=0.1)) < 1e-6
    wrong = [onehot.roll(1, dims=1) * 10.0] * 4
    assert float(swapped_prediction(wrong, [onehot, onehot], temperature=0.1)) > 50


def test_dino_loss_ln_k_for_uniform_and_zero_for_identical_one_hot() -> None:
    b, k = 4, 16
    center = torch.zeros(1, k)
    uniform = [torch.zeros(b, k)] * 4
    loss, t_prob = dino_loss(uniform, uniform[:2], center, student_temp=0.1, teacher_temp=0.04)
    assert float(loss) == pytest.approx(math.log(k))
    assert all(torch.allclose(p, torch.full((b, k), 1 / k)) for p in t_prob)
    onehot = F.one_hot(torch.arange(b), k).float() * 2.0
    same = [onehot] * 4
    loss, _ = dino_loss(same, same[:2], center, student_temp=0.1, teacher_temp=0.04)
    assert float(loss) < 1e-6
    other = [onehot.roll(1, dims=1)] * 4  # the student sure of the wrong output
    loss, _ = dino_loss(other, same[:2], center, student_temp=0.1, teacher_temp=0.04)
    assert float(loss) > 19


def test_dino_loss_subtracts_the_centre_before_sharpening() -> None:
    b, k = 4, 8
    teacher = [F.one_hot(torch.zeros(b, dtype=torch.long), k).float()] * 2  # all on output 0
    student = [torch.zeros(b, k)] * 3
    _, plain = dino_loss(student, teacher, torch.zeros(1, k), 0.1, 0.04)
    _, centred = dino_loss(student, teacher, teacher[0][:1], 0.1, 0.04)  # centre = the teacher's mean
    assert float(plain[0][:, 0].min()) > 0.99  # sharpened onto output 0
    assert torch.allclose(centred[0], torch.full((b, k), 1 / k))  # centring removed the preference


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_mse_counts_only_masked_patches(norm_pix: bool) -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 12), torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 0, 0, 1, 1]], dtype=torch.float)
    loss = masked_mse(pred, target, mask, norm_pix)
    changed = target.clone()
    changed[mask == 0] += 5.0 * torch.randn_like(changed[mask == 0])  # only visible patches change
    assert torch.allclose(masked_mse(pred, changed, mask, norm_pix), loss)
    changed[0, 0, 0] += 1.0  # one pixel of a masked patch
    assert not torch.allclose(masked_mse(pred, changed, mask, norm_pix), loss)


def test_masked_mse_is_the_mean_over_masked_patches() -> None:
    pred = torch.zeros(1, 4, 3)
    target = torch.tensor([[[1.0] * 3, [2.0] * 3, [3.0] * 3, [4.0] * 3]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert float(masked_mse(pred, target, mask, norm_pix=False)) == pytest.approx((1 + 9) / 2)
    # norm_pix: each patch normalised by its own statistics; a constant patch becomes 0
    assert float(masked_mse(pred, target, mask, norm_pix=True)) == pytest.approx(0.0)


def test_quality_weights_by_hand() -> None:
    from passkit.recipes.losses import quality_weights

    # pair 0: foregrounds equal (cos 1), backgrounds orthogonal (cos 0): quality 1
    # pair 1: foregrounds orthogonal (0), backgrounds equal (1): quality -1
    # pair 2: both equal: quality 0
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    fg1 = torch.stack([e1, e1, e1])
    fg2 = torch.stack([2 * e1, e2, e1])
    bg1 = torch.stack([e1, e2, e2])
    bg2 = torch.stack([e2, 3 * e2, e2])
    gamma = 2.0
    w = quality_weights(fg1, fg2, bg1, bg2, gamma=gamma)
    z = math.exp(2) + math.exp(-2) + 1
    want = [3 * math.exp(2) / z, 3 * math.exp(-2) / z, 3 / z]
    assert w.tolist() == pytest.approx(want, rel=1e-6)
    assert float(w.mean()) == pytest.approx(1.0)


def test_quality_weights_are_detached_and_flat_at_gamma_zero() -> None:
    from passkit.recipes.losses import quality_weights

    torch.manual_seed(0)
    f1, f2, b1, b2 = (torch.randn(6, 4, requires_grad=True) for _ in range(4))
    w = quality_weights(f1, f2, b1, b2, gamma=5.0)
    assert not w.requires_grad and w.grad_fn is None
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-6)
    assert float(w.std()) > 0.1  # random pairs differ in quality
    assert torch.allclose(quality_weights(f1, f2, b1, b2, gamma=0.0), torch.ones(6))


def test_weighted_info_nce_by_hand() -> None:
    from passkit.recipes.losses import weighted_info_nce

    torch.manual_seed(0)
    pos, neg = torch.randn(4, 1), torch.randn(4, 5)
    w = torch.tensor([0.5, 1.5, 1.0, 1.0])
    loss, logits = weighted_info_nce(pos, neg, 0.2, w)
    per = [F.cross_entropy(logits[i : i + 1], torch.zeros(1, dtype=torch.long)) for i in range(4)]
    assert float(loss) == pytest.approx(float(sum(wi * p for wi, p in zip(w, per, strict=True)) / 4), rel=1e-6)
    plain, _ = info_nce(pos, neg, 0.2)
    assert float(weighted_info_nce(pos, neg, 0.2, torch.ones(4))[0]) == pytest.approx(float(plain), rel=1e-6)
    assert float(weighted_info_nce(pos, neg, 0.2)[0]) == pytest.approx(float(plain))
