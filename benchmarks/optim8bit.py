"""8-bit vs 32-bit AdamW: optimizer-state bytes per parameter and step time.

    .venv/bin/python benchmarks/optim8bit.py [--model resnet50|resnet18] [--runs 3] [--steps 5] [--device cpu]

Runs torch.optim.AdamW (32-bit), passkit's pure-PyTorch AdamW (8-bit) and bitsandbytes' AdamW8bit
(when installed) on the parameters of a torchvision ResNet with synthetic gradients (the optimizer
step alone is timed, not the network). Prints medians of --runs runs; the last line is the
passkit 8-bit state size the issue asks for.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from passkit.recipes.optim import OptimConfig, bnb_available, build_optimizer, state_report


def bench(model: torch.nn.Module, cfg: OptimConfig, steps: int, device: torch.device) -> tuple[float, float]:
    params = [p for p in model.parameters()]
    opt = build_optimizer(params, cfg)
    g = torch.Generator(device=device).manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, device=device) * 1e-3
    opt.step()  # state is created lazily: keep it out of the timing
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps, state_report(opt).bytes_per_param


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50", choices=["resnet18", "resnet50"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    model = getattr(torchvision.models, a.model)(weights=None).to(dev)
    n = sum(p.numel() for p in model.parameters())
    variants = {"torch.optim.AdamW (32-bit)": OptimConfig(name="adamw", lr=1e-3, bits=32),
                "passkit AdamW 8-bit (pure PyTorch)": OptimConfig(name="adamw", lr=1e-3, bits=8, backend="torch")}
    if bnb_available():
        variants["bitsandbytes AdamW8bit"] = OptimConfig(name="adamw", lr=1e-3, bits=8, backend="bnb")
    print(f"{a.model}: {n / 1e6:.1f} M parameters on {dev}; {a.runs} runs x {a.steps} steps (median)")
    results = {}
    for name, cfg in variants.items():
        times, bpp = [], 0.0
        for _ in range(a.runs):
            t, bpp = bench(model, cfg, a.steps, dev)
            times.append(t)
        results[name] = (statistics.median(times), bpp)
    base = results["torch.optim.AdamW (32-bit)"][0]
    for name, (t, bpp) in results.items():
        print(f"{name:38s} step {t * 1e3:8.1f} ms  ({t / base:5.2f}x torch.optim.AdamW)  state {bpp:5.2f} bytes/param")
    print(f"adamw8bit state bytes/param: {results['passkit AdamW 8-bit (pure PyTorch)'][1]:.2f}")


if __name__ == "__main__":
    main()
