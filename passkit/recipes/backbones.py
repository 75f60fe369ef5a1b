"""Backbones for the recipes: torchvision ResNet-18/50, randomly initialised, without the classifier.

`small_stem=True` replaces the 7x7/2 convolution and the max-pool with one 3x3/1 convolution (the
CIFAR stem), so 32-96 px images keep enough spatial resolution. `bn_splits>1` swaps BatchNorm for
SplitBatchNorm, which normalises each of `bn_splits` sub-batches on its own: in one process that
emulates the per-GPU batch statistics that MoCo's shuffled BN relies on (otherwise the key
encoder's batch statistics leak which sample is the positive).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

ARCHS = ("resnet18", "resnet50")


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from `num_splits` equal sub-batches."""

    def __init__(self, num_features: int, num_splits: int, **kw: object):
        super().__init__(num_features, **kw)  # type: ignore[arg-type]
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.num_splits
        if not self.training or s <= 1 or n % s or n // s < 2:
            return super().forward(x)
        rm = self.running_mean.repeat(s)  # type: ignore[union-attr]
        rv = self.running_var.repeat(s)  # type: ignore[union-attr]
        # reshape, not view: a channels-last batch (the device pipeline's) cannot be viewed so
        out = F.batch_norm(
            x.reshape(n // s, c * s, h, w), rm, rv, self.weight.repeat(s), self.bias.repeat(s),
            True, self.momentum or 0.1, self.eps,
        ).reshape(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(rm.view(s, c).mean(0))  # type: ignore[union-attr]
            self.running_var.copy_(rv.view(s, c).mean(0))  # type: ignore[union-attr]
        return out


def _split_bn(module: nn.Module, splits: int) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm):
            new = SplitBatchNorm(child.num_features, splits, eps=child.eps, momentum=child.momentum)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            _split_bn(child, splits)
    return module


class _ScaledResNet(torchvision.models.ResNet):
    """torchvision's ResNet with every stage's width scaled by width/64 (64: the standard network)."""

    def __init__(self, block: type, layers: list[int], width: int):
        self._width, self._first = width, True
        super().__init__(block, layers)  # type: ignore[arg-type]
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:  # type: ignore[override]
        if self._first:
            self.inplanes, self._first = self._width, False
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)  # type: ignore[arg-type]


def build_backbone(arch: str = "resnet50", *, small_stem: bool = False, bn_splits: int = 1,
                   width: int = 64) -> tuple[nn.Module, int]:
    """(backbone mapping float images [B,3,H,W] to features [B,D], D).

    width=64 is torchvision's network; smaller widths (e.g. 16, 1/16 of the FLOPs) keep the
    topology for CPU-sized experiments and tests.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
    if width < 8 or width % 8:
        raise ValueError(f"width must be a multiple of 8 (64 is the standard ResNet), got {width}")
    net: torchvision.models.ResNet
    if width == 64:
        net = getattr(torchvision.models, arch)(weights=None)
    else:
        block, layers = {"resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
                         "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3])}[arch]
        net = _ScaledResNet(block, layers, width)
    if small_stem:
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()  # type: ignore[assignment]
    dim = net.fc.in_features if width == 64 else width * 8 * net.layer4[-1].expansion
    net.fc = nn.Identity()  # type: ignore[assignment]
    if bn_splits > 1:
        _split_bn(net, bn_splits)
    return net, dim


def mlp_head(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """MoCo v2's projection head: Linear-ReLU-Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
