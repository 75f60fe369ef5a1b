"""Block-wise dynamic 8-bit quantization of optimizer state, in pure PyTorch.

Dettmers et al., "8-bit Optimizers via Block-wise Quantization" (ICLR 2022): a state tensor is cut
into blocks of 256 values; each block is scaled by its own absolute maximum into [-1, 1] and every
value is stored as the index (uint8) of the nearest entry of a 256-entry *dynamic* code, whose
entries are spread over seven decades so that both tiny and large values keep ~3 significant bits.
One outlier can then only spoil its own block. The signed code is used for first moments
(momentum), the unsigned code (twice the resolution, non-negative) for second moments.

The code and the rounding match `bitsandbytes.functional.create_dynamic_map` and
`quantize_blockwise`, so passkit's pure-PyTorch optimizers and bitsandbytes agree (tested), and a
machine without bitsandbytes still gets 8-bit optimizers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

BLOCKSIZE = 256


@cache
def _dynamic_map_cpu(signed: bool, max_exponent_bits: int = 7, total_bits: int = 8) -> torch.Tensor:
    data: list[float] = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        n = 2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        bounds = torch.linspace(0.1, 1, int(n), dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        scale = 10 ** (-(max_exponent_bits - 1) + i)
        data += (scale * means).tolist()  # float32 products, exactly as bitsandbytes rounds them
        if signed:
            data += (-scale * means).tolist()
    if additional_items > 0:  # never for the 8-bit, 7-exponent-bit map; kept for other layouts
        bounds = torch.linspace(0.1, 1, additional_items + 1, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        scale = 10 ** (-(max_exponent_bits - 1) + max_exponent_bits - 1)
        data += (scale * means).tolist()
        if signed:
            data += (-scale * means).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (2**total_bits - len(data))
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def dynamic_map(signed: bool, device: torch.device | str | None = None) -> torch.Tensor:
    """The 256-entry dynamic quantization code, sorted ascending (signed: [-1, 1]; unsigned: [0, 1])."""
    m = _dynamic_map_cpu(bool(signed))
    return m if device is None else m.to(device)


@dataclass(slots=True)
class Quantized:
    """A tensor held as uint8 code indices plus one float32 absmax per block."""

    codes: torch.Tensor  # uint8, the original shape
    absmax: torch.Tensor  # float32, ceil(numel / blocksize)
    signed: bool
    blocksize: int = BLOCKSIZE

    @property
    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size() + self.absmax.numel() * self.absmax.element_size()


def _blocks(x: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, int]:
    flat = x.reshape(-1)
    pad = (-flat.numel()) % blocksize
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, blocksize), pad


def quantize_blockwise(
    x: torch.Tensor, code: torch.Tensor, blocksize: int = BLOCKSIZE,
    out: torch.Tensor | None = None, absmax_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-code uint8 indices of x / blockwise absmax, and the absmax per block.

    Writes into `out` / `absmax_out` when given (the optimizer reuses its state buffers).
    """
    blocks, pad = _blocks(x.detach().float(), blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = (blocks / absmax.clamp(min=1e-38).unsqueeze(1)).clamp_(-1, 1).reshape(-1)
    if pad:
        scaled = scaled[: x.numel()]
    bounds = (code[:-1] + code[1:]) / 2
    q = torch.bucketize(scaled, bounds.to(scaled.device), out_int32=True).to(torch.uint8).view(x.shape)
    if out is not None:
        out.copy_(q)
        q = out
    if absmax_out is not None:
        absmax_out.copy_(absmax)
        absmax = absmax_out
    return q, absmax


def dequantize_blockwise(
    q: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int = BLOCKSIZE
) -> torch.Tensor:
    """float32 tensor of q's shape: code[q] * absmax of its block."""
    values = code.to(q.device)[q.reshape(-1).long()]
    blocks, pad = _blocks(values, blocksize)
    out = (blocks * absmax.unsqueeze(1)).reshape(-1)
    if pad:
        out = out[: q.numel()]
    return out.view(q.shape)


def quantize(x: torch.Tensor, signed: bool = True, blocksize: int = BLOCKSIZE) -> Quantized:
    code = dynamic_map(signed, x.device)
    if not signed and bool((x < 0).any()):
        raise ValueError("unsigned 8-bit quantization got negative values; use signed=True for first moments")
    q, absmax = quantize_blockwise(x, code, blocksize)
    return Quantized(q, absmax, signed, blocksize)


def dequantize(qt: Quantized) -> torch.Tensor:
    return dequantize_blockwise(qt.codes, qt.absmax, dynamic_map(qt.signed, qt.codes.device), qt.blocksize)


def max_relative_step(signed: bool) -> float:
    """Half the largest gap between neighbouring code entries: the worst-case rounding error of a
    value scaled into [-1, 1] (times the block's absmax gives an absolute bound)."""
    m = dynamic_map(signed)
    return float((m[1:] - m[:-1]).max() / 2)
