"""8-bit optimizers: quantization error bounds, bitsandbytes agreement, 8- vs 32-bit parity,
the 32-bit exceptions, state_dict round trips and the memory report."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

from passkit.recipes import quant
from passkit.recipes.optim import OptimConfig, OptimError, build_optimizer, state_report

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")


def test_dynamic_maps_are_sorted_256_entries_in_range() -> None:
    s, u = quant.dynamic_map(True), quant.dynamic_map(False)
    assert s.shape == u.shape == (256,)
    assert torch.all(s[1:] >= s[:-1]) and torch.all(u[1:] >= u[:-1])
    assert s.min() >= -1 and s.max() == 1 and u.min() == 0 and u.max() == 1
    assert (s < 0).sum() > 100  # signed: about half negative
    assert quant.max_relative_step(False) < quant.max_relative_step(True)  # unsigned: finer


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", [256, 4096, 5000, 77])
def test_quantize_dequantize_error_is_bounded_per_block(signed: bool, n: int) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g) * torch.logspace(-4, 1, n)  # seven decades, like optimizer state
    if not signed:
        x = x.abs()
    qt = quant.quantize(x, signed=signed)
    assert qt.codes.dtype == torch.uint8 and qt.codes.shape == x.shape
    assert qt.absmax.numel() == -(-n // 256)
    y = quant.dequantize(qt)
    err = (y - x).abs()
    # each value rounds to the nearest code entry: error <= half the widest gap x its block's absmax
    bound = torch.repeat_interleave(qt.absmax, 256)[:n] * quant.max_relative_step(signed) + 1e-12
    assert torch.all(err <= bound * 1.0001)
    # and the block maximum itself is exact (code holds +-1)
    blocks = x.abs().reshape(-1)[: (n // 256) * 256].view(-1, 256) if n >= 256 else x.abs().view(1, -1)
    assert torch.allclose(qt.absmax[: len(blocks)], blocks.amax(1))


def test_unsigned_quantization_rejects_negatives() -> None:
    with pytest.raises(ValueError, match="signed=True"):
        quant.quantize(torch.tensor([-1.0, 2.0]), signed=False)


@needs_bnb
def test_pure_pytorch_quantization_agrees_with_bitsandbytes() -> None:
    from bitsandbytes import functional as bf

    for signed in (True, False):
        assert torch.equal(quant.dynamic_map(signed), bf.create_dynamic_map(signed=signed))
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0)) * 3
    code = quant.dynamic_map(True)
    q, absmax = quant.quantize_blockwise(x, code)
    qb, st = bf.quantize_blockwise(x, code=code, blocksize=256)
    assert torch.allclose(absmax, st.absmax)
    diff = (q.int() - qb.int()).abs()
    assert diff.max() <= 1  # only ties at code midpoints may round the other way
    assert (diff > 0).float().mean() < 0.01
    assert torch.allclose(quant.dequantize_blockwise(qb, st.absmax, code), bf.dequantize_blockwise(qb, st), atol=1e-6)


def _train(name: str, bits: int, backend: str = "auto", steps: int = 150) -> tuple[float, nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 64, generator=g)
    y = (x @ torch.randn(64, 10, generator=g)).argmax(1)
    lr = {"adamw": 1e-3, "sgd": 0.05, "lars": 0.5, "lion": 3e-4}[name]
    opt = build_optimizer(net, OptimConfig(name=name, lr=lr, weight_decay=1e-4, bits=bits, backend=backend))
    for _ in range(steps):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(net(x), y)), net, opt


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars", "lion"])
def test_8bit_reaches_the_32bit_loss_within_1_percent(name: str) -> None:
    l32, _, o32 = _train(name, 32)
    l8, _, o8 = _train(name, 8, "torch")
    assert o8.passkit_backend == "passkit8" and o32.passkit_backend == "torch32"
    first = float(nn.functional.cross_entropy(torch.zeros(1, 10), torch.zeros(1, dtype=torch.long)))
    assert l32 < first * 0.5, "the network must actually train for the comparison to mean anything"
    assert abs(l8 - l32) <= 0.01 * l32 + 1e-3, (name, l8, l32)


@needs_bnb
@pytest.mark.parametrize("name", ["adamw", "sgd", "lion"])
def test_bitsandbytes_and_pure_pytorch_8bit_agree(name: str) -> None:
    lt, nt, _ = _train(name, 8, "torch", steps=50)
    lb, nb, ob = _train(name, 8, "bnb", steps=50)
    assert ob.passkit_backend == "bnb8"
    assert abs(lt - lb) <= 0.01 * lt + 1e-3
    # step by step the two implementations are the same arithmetic; the few values that sit on a
    # code midpoint may round the other way (then e.g. Lion's sign flips), so compare in aggregate
    _, nt, _ = _train(name, 8, "torch", steps=3)
    _, nb, _ = _train(name, 8, "bnb", steps=3)
    _, n0, _ = _train(name, 8, "torch", steps=0)
    for pt, pb, p0 in zip(nt.parameters(), nb.parameters(), n0.parameters(), strict=True):
        moved = (pt - p0).abs().mean()
        assert moved > 0
        assert (pt - pb).abs().mean() <= 0.01 * moved
        assert ((pt - pb).abs() > 0.05 * moved).float().mean() < 0.05


@pytest.mark.parametrize("backend", ["torch", pytest.param("bnb", marks=needs_bnb)])
def test_small_and_1d_tensors_keep_32bit_state(backend: str) -> None:
    net = nn.Sequential(nn.Linear(128, 64), nn.BatchNorm1d(64), nn.Linear(64, 8))  # 8192, 64, 512 elements
    opt = build_optimizer(net, OptimConfig(name="adamw", lr=1e-3, bits=8, backend=backend))
    net(torch.randn(4, 128)).sum().backward()
    opt.step()
    for p in net.parameters():
        dtypes = {v.dtype for k, v in opt.state[p].items() if torch.is_tensor(v) and v.numel() == p.numel()}
        expect = torch.uint8 if (p.ndim > 1 and p.numel() >= 4096) else torch.float32
        assert dtypes == {expect}, (tuple(p.shape), dtypes)


@needs_bnb
def test_bnb_rule_is_local_to_each_optimizer() -> None:
    """A large 1-D parameter keeps 32-bit state, and nothing is left in bitsandbytes' process-wide
    override table (ids of freed tensors are reused, so leftovers flip later weights to 32-bit)."""
    import bitsandbytes as bnb

    mng = bnb.optim.GlobalOptimManager.get_instance()
    before = (dict(mng.pid2config), dict(mng.index2config))
    net = nn.Sequential(nn.Linear(64, 8192), nn.LayerNorm(8192), nn.Linear(8192, 4))
    opt = build_optimizer(net, OptimConfig(name="adamw", lr=1e-3, bits=8, backend="bnb"))
    net(torch.randn(2, 64)).sum().backward()
    opt.step()
    assert (dict(mng.pid2config), dict(mng.index2config)) == before
    for p in net.parameters():
        dtypes = {v.dtype for v in opt.state[p].values() if torch.is_tensor(v) and v.numel() == p.numel()}
        assert dtypes == ({torch.uint8} if p.ndim > 1 else {torch.float32}), tuple(p.shape)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars", "lion"])
def test_state_dict_round_trips(name: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(96, 96), nn.Linear(96, 4))
    cfg = OptimConfig(name=name, lr=1e-3, bits=8, backend="torch")
    opt = build_optimizer(net, cfg)
    data = [torch.randn(8, 96) for _ in range(6)]

    def step(n: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> None:
        o.zero_grad()
        n(x).pow(2).mean().backward()
        o.step()

    for x in data[:3]:
        step(net, opt, x)
    net2 = copy.deepcopy(net)
    opt2 = build_optimizer(net2, OptimConfig(name=name, lr=1e-3, bits=8, backend="torch"))
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for k, v in opt.state[net[0].weight].items():
        assert opt2.state[net2[0].weight][k].dtype == v.dtype
    for x in data[3:]:
        step(net, opt, x)
        step(net2, opt2, x)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_memory_report_adamw_8bit_under_2_1_bytes_per_param() -> None:
    net = nn.Sequential(nn.Linear(512, 1024), nn.Linear(1024, 512))
    reports = {}
    for bits in (32, 8):
        opt = build_optimizer(net, OptimConfig(name="adamw", lr=1e-3, bits=bits, backend="torch"))
        net(torch.randn(2, 512)).sum().backward()
        opt.step()
        reports[bits] = state_report(opt)
    assert reports[32].bytes_per_param == pytest.approx(8.0, abs=0.01)
    assert reports[8].bytes_per_param <= 2.1
    assert reports[8].quantized_params == 2 * 512 * 1024


def test_factory_errors_are_clear() -> None:
    net = nn.Linear(4, 4)
    with pytest.raises(OptimError, match="choose one of"):
        build_optimizer(net, OptimConfig(name="adam"))
    with pytest.raises(OptimError, match="8 or 32"):
        build_optimizer(net, OptimConfig(bits=4))
