"""Dropout masks from cheaper random bits while a model trains (`training.fast_dropout`; `auto`: on a CPU).

torch's dropout draws one random number per element (`bernoulli_`, or inductor's per-element Philox when
compiled). On a CPU that is most of what dropout costs, and T5 drops out every attention probability: drawing the
masks took 24-30% of a compiled T5 training step (bench/results/profile_step.md). Here each 64-bit word of the
same generator (`random_`) gives four 16-bit draws, and an element is kept when its draw lies at or above the
threshold `round(p * 65536)`, scaled by `1 / (1 - p')` with `p' = round(p * 65536) / 65536` (the dropout rate to
1.5e-5): the same Bernoulli masks in distribution, from a quarter of the generator calls (bench/results/dropout.md).
The masks are drawn from torch's default generator, so seeding, exact resume and activation checkpointing's
recomputation (which restores the generator's state) behave as with torch's dropout; under `torch.compile` the
draw is an opaque operator (the mask's multiplication still fuses with its neighbours).

What it replaces, for the training run only: every `torch.nn.Dropout` module (T5's residual and feed-forward
dropout, LoRA's), and the dropout of attention probabilities for models that attend through sdpa. With dropout,
sdpa takes its math path anyway, so that attention is computed here with the same arithmetic (scores, additive
mask or position bias, fp32 softmax) and the fast mask; without dropout (evaluation, a rate of 0) it is sdpa's.
Models attending through another implementation keep their attention dropout; so does `training.matmul_attention`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch

from tunelab.training.attention import attending_through, attention_implementation

IMPLEMENTATION = "tunelab_fast_dropout"
_LEVELS = 1 << 16  # a draw is 16 bits: four per 64-bit word


def effective_rate(p: float) -> float:
    """The dropout rate the 16-bit threshold realises (within 1 / 131072 of `p`)."""
    return round(p * _LEVELS) / _LEVELS


@torch.library.custom_op("tunelab::dropout_keep_mask", mutates_args=())
def _keep_mask(like: torch.Tensor, dropped_levels: int) -> torch.Tensor:
    count = like.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=like.device)
    words.random_(-(1 << 63), (1 << 63) - 1)  # all 64 bits (`random_()` leaves the sign bit 0)
    draws = words.view(torch.int16)[:count].view(like.shape)
    return draws >= dropped_levels - (_LEVELS // 2)


@_keep_mask.register_fake
def _(like: torch.Tensor, dropped_levels: int) -> torch.Tensor:
    return torch.empty_like(like, dtype=torch.bool)


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A boolean mask of `like`'s shape, each element True (kept) with probability 1 - effective_rate(p)."""
    return _keep_mask(like.detach(), round(p * _LEVELS))


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`torch.nn.functional.dropout(x, p, training)` with masks from `keep_mask`."""
    rate = effective_rate(p)
    if not training or rate == 0:
        return x
    if rate >= 1:
        return x * 0
    return torch.where(keep_mask(x, p), x * (1 / (1 - rate)), 0)


class FastDropout(torch.nn.Dropout):
    """`torch.nn.Dropout` with masks from `keep_mask` (the class a Dropout module takes on while training)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return fast_dropout(input, self.p, self.training)


def fast_dropout_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    position_bias: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface, as sdpa's (`sdpa_attention_forward`), whose math path it
    computes where it would drop attention probabilities out: (batch, heads, length, head_dim) in, (batch, length,
    heads, head_dim) out."""
    from transformers.integrations.sdpa_attention import (
        create_position_bias_mask,
        repeat_kv,
        sdpa_attention_forward,
    )

    if not (module.training and effective_rate(dropout) > 0) or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            position_bias=position_bias,
            **kwargs,
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_length, kv_length = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_length > 1 and attention_mask is None and causal)
    if position_bias is not None:
        attention_mask = create_position_bias_mask(position_bias, attention_mask, causal, query, key)
        causal = False
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    if causal:
        future = torch.ones(q_length, kv_length, dtype=torch.bool, device=query.device).triu(kv_length - q_length + 1)
        scores = scores.masked_fill(future, float("-inf"))
    elif attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    elif attention_mask is not None:
        scores = scores + attention_mask
    probs = fast_dropout(torch.softmax(scores, dim=-1).to(value.dtype), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def decide_fast_dropout(setting: bool | Literal["auto"], device: torch.device) -> bool:
    """`training.fast_dropout`: `auto` is on a CPU, where drawing one random number per element is what dropout
    costs; a GPU draws them in the dropout kernel itself."""
    return device.type == "cpu" if setting == "auto" else setting


@contextlib.contextmanager
def fast_dropout_masks(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Inside the block, `model`'s dropout (its Dropout modules; its attention, if it attends through sdpa) draws
    its masks by `keep_mask`; after it, the model is as it was."""
    if not enabled:
        yield
        return
    swapped = [m for m in model.modules() if type(m) is torch.nn.Dropout]
    for module in swapped:
        module.__class__ = FastDropout
    try:
        with contextlib.ExitStack() as attention:
            if attention_implementation(model) == "sdpa":
                attention.enter_context(attending_through(model, IMPLEMENTATION, fast_dropout_attention))
            yield
    finally:
        for module in swapped:
            module.__class__ = torch.nn.Dropout
