"""Optimizers for the recipes: SGD, AdamW, LARS and Lion, in 32-bit or 8-bit, from one factory.

    opt = build_optimizer(model, OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05, bits=8))
    print(state_report(opt).bytes_per_param)    # ~2.03 for 8-bit AdamW, 8.0 for 32-bit

8-bit state follows Dettmers et al. (block-wise dynamic quantization, blocks of 256): the moments
are stored as uint8 codes plus one float32 absmax per block, dequantized to float32 for the update
and quantized again after it, so the arithmetic is 32-bit and only storage is 8-bit. Two backends:

- ``bnb``: bitsandbytes' fused optimizers (AdamW8bit, SGD8bit, Lion8bit; CUDA and, since 0.50, CPU);
- ``torch``: passkit's own pure-PyTorch implementation below (passkit.recipes.quant), used when
  bitsandbytes is missing, and always for LARS: bitsandbytes' LARS8bit is not block-wise and clips
  the update norm instead of applying LARS's trust ratio.

Tensors under `min_8bit_size` (4096) elements and every 1-D parameter (biases, norms) keep 32-bit
state in both backends: they cost little and are the most sensitive to rounding. Weight decay (and
LARS adaptation) skip 1-D parameters via `param_groups`.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from passkit.recipes.quant import BLOCKSIZE, dequantize_blockwise, dynamic_map, quantize_blockwise

ALGORITHMS = ("sgd", "adamw", "lars", "lion")
BACKENDS = ("auto", "bnb", "torch")
MIN_8BIT_SIZE = 4096


class OptimError(ValueError):
    pass


@dataclass(slots=True)
class OptimConfig:
    """What `build_optimizer` builds. `bits` is 32 or 8; `backend` matters only for 8 bits."""

    name: str = "sgd"
    lr: float = 0.03
    weight_decay: float = 1e-4
    bits: int = 32
    backend: str = "auto"
    momentum: float = 0.9  # sgd, lars
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # adamw; lion uses (0.9, 0.99) unless set
    eps: float = 1e-8
    eta: float = 0.001  # lars trust coefficient
    min_8bit_size: int = MIN_8BIT_SIZE
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.name not in ALGORITHMS:
            raise OptimError(f"unknown optimizer {self.name!r}; choose one of {', '.join(ALGORITHMS)}")
        if self.bits not in (8, 32):
            raise OptimError(f"bits must be 8 or 32, not {self.bits!r}")
        if self.backend not in BACKENDS:
            raise OptimError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.lr <= 0:
            raise OptimError(f"lr must be positive, got {self.lr}")


def bnb_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def resolve_backend(cfg: OptimConfig) -> str:
    """'torch32', 'passkit8' or 'bnb8': which implementation `build_optimizer` will use."""
    cfg.check()
    if cfg.bits == 32:
        return "torch32"
    if cfg.backend == "torch" or cfg.name == "lars":
        return "passkit8"
    if cfg.backend == "bnb" and not bnb_available():
        raise OptimError("backend='bnb' needs bitsandbytes>=0.50: pip install -c constraints.txt bitsandbytes")
    return "bnb8" if bnb_available() else "passkit8"


def param_groups(params: nn.Module | Iterable[Any], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: >=2-D weights with weight decay; 1-D parameters (biases, norms) without weight
    decay and without LARS adaptation. Explicit group dicts pass through unchanged."""
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    items = list(params)
    if items and isinstance(items[0], dict):
        return items
    decay = [p for p in items if p.ndim > 1]
    flat = [p for p in items if p.ndim <= 1]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "lars_exclude": False})
    if flat:
        groups.append({"params": flat, "weight_decay": 0.0, "lars_exclude": True})
    return groups


# ----------------------------------------------------------------------------- passkit's optimizers


class BlockwiseOptimizer(torch.optim.Optimizer):
    """Base of passkit's optimizers: float32 updates on states that are stored 8-bit where eligible.

    Subclasses list their states in `STATES` as (name, signed) and implement `_update`. With
    bits=32 every state is float32 (that is also how LARS and Lion run in 32-bit).
    """

    STATES: tuple[tuple[str, bool], ...] = ()

    def __init__(self, params: Any, defaults: dict[str, Any], bits: int = 8,
                 min_8bit_size: int = MIN_8BIT_SIZE, blocksize: int = BLOCKSIZE):
        if bits not in (8, 32):
            raise OptimError(f"bits must be 8 or 32, not {bits!r}")
        self.bits = bits
        self.min_8bit_size = min_8bit_size
        self.blocksize = blocksize
        super().__init__(params, defaults)

    def quantized(self, p: torch.Tensor) -> bool:
        """Whether p's state is stored in 8 bits."""
        return self.bits == 8 and p.ndim > 1 and p.numel() >= self.min_8bit_size

    def _init_state(self, p: torch.Tensor, st: dict[str, Any]) -> None:
        st["step"] = torch.zeros((), dtype=torch.float32)
        for name, _signed in self.STATES:
            if self.quantized(p):
                nblocks = math.ceil(p.numel() / self.blocksize)
                st[f"{name}_q"] = torch.zeros(p.shape, dtype=torch.uint8, device=p.device)
                st[f"{name}_absmax"] = torch.zeros(nblocks, dtype=torch.float32, device=p.device)
            else:
                st[name] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)

    def _load(self, p: torch.Tensor, st: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        for name, signed in self.STATES:
            if f"{name}_q" in st:
                out[name] = dequantize_blockwise(st[f"{name}_q"], st[f"{name}_absmax"],
                                                 dynamic_map(signed, p.device), self.blocksize)
            else:
                out[name] = st[name]
        return out

    def _store(self, p: torch.Tensor, st: dict[str, Any], values: dict[str, torch.Tensor]) -> None:
        for name, signed in self.STATES:
            if f"{name}_q" in st:
                quantize_blockwise(values[name], dynamic_map(signed, p.device), self.blocksize,
                                   out=st[f"{name}_q"], absmax_out=st[f"{name}_absmax"])
            elif values[name] is not st[name]:
                st[name].copy_(values[name])

    def _update(self, p32: torch.Tensor, g: torch.Tensor, s: dict[str, torch.Tensor],
                group: dict[str, Any], step: int) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise OptimError(f"{type(self).__name__} does not support sparse gradients")
                st = self.state[p]
                if not st:
                    self._init_state(p, st)
                st["step"] += 1
                s = self._load(p, st)
                p32 = p.detach().float() if p.dtype != torch.float32 else p.detach()
                self._update(p32, p.grad.detach().float(), s, group, int(st["step"].item()))
                if p32 is not p:
                    p.copy_(p32)
                self._store(p, st, s)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch casts floating state to the parameter's dtype on load, which would turn uint8
        codes into floats: restore every state tensor's saved dtype afterwards."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params, strict=True):
            if pid in saved:
                for k, v in saved[pid].items():
                    if torch.is_tensor(v):
                        self.state[p][k] = v.to(device=p.device if k != "step" else "cpu", copy=True)


class AdamW(BlockwiseOptimizer):
    """AdamW (decoupled weight decay), same arithmetic as torch.optim.AdamW."""

    STATES = (("exp_avg", True), ("exp_avg_sq", False))

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, **kw: Any):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}, **kw)

    def _update(self, p, g, s, group, step):  # type: ignore[no-untyped-def]
        b1, b2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        if wd:
            p.mul_(1 - lr * wd)
        denom = (v.sqrt() / math.sqrt(1 - b2**step)).add_(group["eps"])
        p.addcdiv_(m, denom, value=-lr / (1 - b1**step))


class SGD(BlockwiseOptimizer):
    """SGD with momentum (torch.optim.SGD semantics: coupled weight decay, first step copies g)."""

    STATES = (("momentum_buffer", True),)

    def __init__(self, params: Any, lr: float = 0.03, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False, dampening: float = 0.0, **kw: Any):
        if momentum <= 0:
            raise OptimError("8-bit SGD stores a momentum buffer: momentum must be > 0 (use 32-bit otherwise)")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "nesterov": nesterov, "dampening": dampening}, **kw)

    def _update(self, p, g, s, group, step):  # type: ignore[no-untyped-def]
        if group["weight_decay"]:
            g = g.add(p, alpha=group["weight_decay"])
        buf = s["momentum_buffer"]
        if step == 1:
            buf.copy_(g)
        else:
            buf.mul_(group["momentum"]).add_(g, alpha=1 - group["dampening"])
        d = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
        p.add_(d, alpha=-group["lr"])


class LARS(BlockwiseOptimizer):
    """LARS (You et al. 2017) as used by SimCLR/BYOL/Barlow Twins: SGD momentum whose step for
    each weight is scaled by eta * ||w|| / ||g + wd*w||; groups with lars_exclude skip both."""

    STATES = (("momentum_buffer", True),)

    def __init__(self, params: Any, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-6,
                 eta: float = 0.001, **kw: Any):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "eta": eta, "lars_exclude": False}, **kw)

    def _update(self, p, g, s, group, step):  # type: ignore[no-untyped-def]
        if not group.get("lars_exclude", False):
            if group["weight_decay"]:
                g = g.add(p, alpha=group["weight_decay"])
            pn, gn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
            one = torch.ones_like(pn)
            trust = torch.where(pn > 0, torch.where(gn > 0, group["eta"] * pn / gn, one), one)
            g = g * trust
        buf = s["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(g)
        p.add_(buf, alpha=-group["lr"])


class Lion(BlockwiseOptimizer):
    """Lion (Chen et al. 2023): sign of an interpolated momentum; one state, decoupled weight decay."""

    STATES = (("exp_avg", True),)

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, **kw: Any):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay}, **kw)

    def _update(self, p, g, s, group, step):  # type: ignore[no-untyped-def]
        b1, b2 = group["betas"]
        m = s["exp_avg"]
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(torch.sign(m * b1 + g * (1 - b1)), alpha=-group["lr"])
        m.mul_(b2).add_(g, alpha=1 - b2)


# ----------------------------------------------------------------------------- factory


def _bnb_optimizer(cfg: OptimConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    common = {"min_8bit_size": cfg.min_8bit_size}
    if cfg.name == "adamw":
        cls, kw = bnb.optim.AdamW8bit, {"betas": cfg.betas, "eps": cfg.eps}
    elif cfg.name == "sgd":
        cls, kw = bnb.optim.SGD8bit, {"momentum": cfg.momentum, "nesterov": cfg.nesterov}
    elif cfg.name == "lion":
        cls, kw = bnb.optim.Lion8bit, {"betas": cfg.extra.get("lion_betas", (0.9, 0.99))}
    else:
        raise OptimError(f"no bitsandbytes backend for {cfg.name!r}")
    return _keep_1d_in_32bit(cls)(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw, **common)


def _keep_1d_in_32bit(cls: type) -> type:
    """A subclass of a bitsandbytes optimizer whose 1-D parameters keep 32-bit state.

    bitsandbytes' own way (`GlobalOptimManager.override_config`) is a process-wide singleton keyed
    by `id(p)` and by (group, index): overrides leak into every later optimizer, and a freed bias's
    id reused by a new weight silently turns that weight's state to 32-bit. The per-instance
    `get_config` hook keeps the rule local to this optimizer.
    """

    class Keep1D(cls):  # type: ignore[misc, valid-type]
        def get_config(self, gindex: int, pindex: int, group: dict[str, Any]) -> dict[str, Any]:
            config = super().get_config(gindex, pindex, group)
            if self.param_groups[gindex]["params"][pindex].ndim <= 1:
                config["optim_bits"] = 32
            return config

    Keep1D.__name__ = Keep1D.__qualname__ = cls.__name__
    return Keep1D


def build_optimizer(params: nn.Module | Iterable[Any], cfg: OptimConfig | None = None,
                    **overrides: Any) -> torch.optim.Optimizer:
    """The optimizer `cfg` names, over `param_groups(params, cfg.weight_decay)`.

    The returned optimizer has `.passkit_backend` ('torch32', 'passkit8' or 'bnb8').
    """
    cfg = cfg or OptimConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise OptimError(f"unknown optimizer option {k!r}")
        setattr(cfg, k, v)
    backend = resolve_backend(cfg)
    groups = param_groups(params, cfg.weight_decay)
    if not groups:
        raise OptimError("no trainable parameters were given to the optimizer")
    lion_betas = cfg.extra.get("lion_betas", (0.9, 0.99))
    opt: torch.optim.Optimizer
    if backend == "bnb8":
        opt = _bnb_optimizer(cfg, groups)
    else:
        bits = 8 if backend == "passkit8" else 32
        kw = {"bits": bits, "min_8bit_size": cfg.min_8bit_size}
        if cfg.name == "lars":
            opt = LARS(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.eta, **kw)
        elif cfg.name == "lion":
            opt = Lion(groups, lr=cfg.lr, betas=lion_betas, weight_decay=cfg.weight_decay, **kw)
        elif bits == 32 and cfg.name == "adamw":
            opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        elif bits == 32 and cfg.name == "sgd":
            opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                  nesterov=cfg.nesterov)
        elif cfg.name == "adamw":
            opt = AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **kw)
        else:
            opt = SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                      nesterov=cfg.nesterov, **kw)
    opt.passkit_backend = backend  # type: ignore[attr-defined]
    return opt


# ----------------------------------------------------------------------------- memory report


@dataclass(frozen=True, slots=True)
class StateReport:
    """Optimizer-state memory: what the 8-bit optimizers save."""

    params: int  # trainable parameters
    state_bytes: int  # bytes of every tensor in the optimizer state (codes, absmax, maps, steps)
    quantized_params: int  # parameters whose state is 8-bit
    backend: str

    @property
    def bytes_per_param(self) -> float:
        return self.state_bytes / max(self.params, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "state_bytes": self.state_bytes, "quantized_params": self.quantized_params,
                "bytes_per_param": round(self.bytes_per_param, 4), "backend": self.backend}


def state_report(opt: torch.optim.Optimizer) -> StateReport:
    """Count the optimizer's state tensors (call after at least one step: state is lazy)."""
    params = sum(p.numel() for g in opt.param_groups for p in g["params"])
    total = 0
    quantized = 0
    for p, st in opt.state.items():
        is_q = False
        for v in st.values():
            if torch.is_tensor(v):
                total += v.numel() * v.element_size()
                is_q |= v.dtype == torch.uint8
        quantized += p.numel() if is_q else 0
    return StateReport(params, total, quantized, getattr(opt, "passkit_backend", type(opt).__name__))
