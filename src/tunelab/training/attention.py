"""Causal self-attention as two batched matrix products while a causal model trains (`training.matmul_attention`,
off by default).

A training batch of a causal model carries no attention mask (right padding, data/collate.py), so every layer's
attention is plain causal self-attention, which transformers hands to sdpa. On a CPU, sdpa's flash-attention kernel
spends ~30% of a bf16 step on ~5% of its FLOPs (bench/results/profile_step.md), while bf16 batched matrix products
run near the GEMM peak. Here the scores are one product per key/value head, with the query heads that share it
(grouped-query attention) stacked as extra rows (no copies of the keys and values), masked and normalised in fp32
(one fused loop when compiled), and multiplied with the values: the arithmetic of transformers' `eager` attention
under autocast (scores rounded to the autocast precision, softmax in fp32), without its materialised mask and
repeated keys. Measured on a 2-core AMD EPYC without AMX (bench/results/attention.md), SmolLM2-135M's compiled bf16
step takes 0.93x the time, but the (length x length) scores and probabilities that a flash kernel never
materialises raise the peak memory by ~1.2x, and rounding the scores to bf16 moves the loss by up to ~0.02; in fp32
sdpa's kernel is the faster one. So it is a switch for a machine where it pays (with AMX the bf16 products are
~5x faster again), not the default.

Anything else (a mask, a key/value cache, dropout, sliding windows, soft-capping, position biases) goes to sdpa as
before, and masks are built exactly as for sdpa. The model's attention implementation is switched for the training
run only: evaluation, generation and saving see the model as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from tunelab.errors import TrainingError
from tunelab.modeling import Arch, base_model

IMPLEMENTATION = "tunelab_matmul_causal"
# Keyword arguments that change what attention computes; with any of them set, sdpa computes it.
SDPA_ONLY = ("position_bias", "softcap", "sliding_window", "s_aux")


def matmul_causal_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface: (batch, heads, length, head_dim) in, (batch, length, heads,
    head_dim) out. Unmasked causal self-attention in train mode by matrix products; everything else by sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, head_dim = query.shape
    plain_causal = (
        module.training  # validation during training attends as evaluation does
        and attention_mask is None
        and is_causal is not False
        and getattr(module, "is_causal", True)
        and key.shape[2] == length > 1
        and not dropout
        and all(kwargs.get(name) is None for name in SDPA_ONLY)
    )
    if not plain_causal:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = head_dim**-0.5 if scaling is None else scaling
    scores = torch.matmul(query.reshape(batch, kv_heads, group * length, head_dim), key.transpose(-1, -2))
    scores = scores.view(batch, kv_heads, group, length, length).float() * scale
    positions = torch.arange(length, device=query.device)
    future = positions.view(1, length) > positions.view(length, 1)
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1).to(value.dtype)
    out = torch.matmul(probs.view(batch, kv_heads, group * length, length), value)
    return out.view(batch, heads, length, head_dim).transpose(1, 2).contiguous(), None


def attention_implementation(model: torch.nn.Module) -> str | None:
    config = getattr(base_model(model), "config", None)
    return getattr(config, "_attn_implementation", None)


def check_matmul_attention(model: torch.nn.Module, arch: Arch) -> None:
    """`training.matmul_attention: true` where it cannot apply is an error naming why."""
    implementation = attention_implementation(model)
    problem = None
    if arch != "causal":
        problem = "it applies to causal models (a seq2seq model's attention is not causal self-attention only)"
    elif implementation != "sdpa":
        problem = f"the model attends through {implementation!r}, not 'sdpa'"
    if problem:
        raise TrainingError(f"training.matmul_attention: {problem}; set training.matmul_attention: false")


@contextlib.contextmanager
def attending_through(
    model: torch.nn.Module, name: str, function: Callable[..., Any], mask: Callable[..., Any] | None = None
) -> Iterator[None]:
    """Inside the block, `model` attends through `function` (transformers' attention-function interface, registered
    as `name`, its masks built by `mask`, by default as sdpa's); after it, through what it attended through before."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, mask or sdpa_mask)
    hf_model = base_model(model)
    before = attention_implementation(model)
    hf_model.set_attn_implementation(name)
    try:
        yield
    finally:
        hf_model.set_attn_implementation(before)


@contextlib.contextmanager
def matmul_attention(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """The model attends through `matmul_causal_attention` inside the block, as before after it."""
    if not enabled:
        yield
        return
    with attending_through(model, IMPLEMENTATION, matmul_causal_attention):
        yield
