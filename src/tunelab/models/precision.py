"""Numeric precision: `auto` takes bf16 autocast wherever the hardware multiplies bf16 natively (CUDA
GPUs with bf16, CPUs with AVX512-BF16 or AMX), else fp32. Weights stay fp32; autocast runs the
matmuls in bf16 (measured 3-4x faster than fp32 on an AVX512-BF16 CPU, bench/throughput.py)."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:  # older torch
            return False
    return False


def resolve_precision(requested: str, device: torch.device) -> Precision:
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return requested  # type: ignore[return-value]


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast computes matmuls in; None for fp32 (no autocast)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, precision: Precision):
    dtype = autocast_dtype(precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
