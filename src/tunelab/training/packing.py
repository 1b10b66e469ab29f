"""Padding-free causal training (`training.padding_free`; `auto`: on wherever it applies).

A padded batch pays for its padding in every matrix product, and its attention for the longest row squared in
every row. Here a causal batch's examples are laid end to end in one row with no padding (data/collate.py), their
positions restarting at 0 (so rotary embeddings see each example as if alone), and attention runs example by
example: on a CPU, one operator running sdpa's causal flash-attention kernel on each example (opaque to
torch.compile, as sdpa's kernel is, so compiled decoder blocks stay one graph); elsewhere, or with attention dropout
or tunelab's matmul attention, the model's own attention function on each example's slice. No example attends to
another, and the loss and gradients are those of the padded batch up to summation order (tested). TRL and
transformers call this padding-free packing (`DataCollatorWithFlattening`), but build on FlashAttention's
variable-length kernel, which a CPU does not have; with sdpa, transformers builds a block-diagonal
(tokens x tokens) mask and attends over all of it.

Where the examples come from is unchanged (the same batches), so a run trains on the same examples in the same order
either way. What it saves is the padding: with random batches (31% padding) a compiled bf16 step of SmolLM2-135M
takes 0.71-0.84x the time; length-grouped batches of a real data set carry ~1% and there it is within noise
(bench/results/padding_free.md).

It applies to causal models attending through sdpa whose attention is plain causal self-attention (the model types
in PLAIN_CAUSAL_MODELS, no sliding window), with a method that leaves the input sequence as it is (not prompt
tuning, p-tuning or prefix tuning, whose virtual tokens belong to one row), in one process (a DDP batch is split by
rows). The attention implementation is switched for the training run only; a packed batch reaching a model
outside it (the final validation loss) is attended through transformers' block-diagonal mask, still exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any, Literal

import torch

from tunelab.errors import TrainingError
from tunelab.modeling import Arch, base_model
from tunelab.training.attention import SDPA_ONLY, attending_through, attention_implementation

IMPLEMENTATION = "tunelab_padding_free"
# Model types whose decoder layers attend with plain causal self-attention and pass `position_ids` on to the
# attention function (transformers 5.x).
PLAIN_CAUSAL_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def example_bounds(position_ids: torch.Tensor) -> list[int]:
    """Where each example of a packed row starts (its position is 0), and where the last one ends."""
    starts = (position_ids.reshape(-1) == 0).nonzero().flatten().tolist()
    return [*starts, position_ids.shape[-1]]


# On a CPU, a packed row's plain causal attention is one operator, opaque to torch.compile (as sdpa's own kernel
# is), so a compiled decoder block stays one graph: it runs sdpa's CPU flash-attention kernel on each example (the
# kernel takes grouped-query heads as they are) and keeps each example's log-sum-exp for the backward pass, which
# runs the kernel's backward on each example.
@torch.library.custom_op("tunelab::causal_attention_by_example", mutates_args=())
def _by_example(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, position_ids: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    pieces = [
        flash(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], 0.0, True, scale=scale)
        for s, e in pairwise(example_bounds(position_ids))
    ]
    # (batch, length, heads, head_dim), as transformers' attention interface returns it
    outputs = torch.cat([out.transpose(1, 2) for out, _ in pieces], dim=1)
    return outputs, torch.cat([lse for _, lse in pieces], dim=2)


@_by_example.register_fake
def _(query, key, value, position_ids, scale):
    batch, heads, length, head_dim = query.shape
    return query.new_empty(batch, length, heads, head_dim), query.new_empty(batch, heads, length, dtype=torch.float32)


@torch.library.custom_op("tunelab::causal_attention_by_example_backward", mutates_args=())
def _by_example_backward(
    grad: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    position_ids: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    # Given strided slices (an offset into a longer row), the kernel's backward returned wrong gradients (torch 2.13):
    # each example's tensors go in dense.
    pieces = []
    for s, e in pairwise(example_bounds(position_ids)):
        example = (grad[:, s:e].transpose(1, 2), query[:, :, s:e], key[:, :, s:e], value[:, :, s:e])
        saved = (out[:, s:e].transpose(1, 2), lse[:, :, s:e])
        pieces.append(backward(*(t.contiguous() for t in (*example, *saved)), 0.0, True, scale=scale))
    return tuple(torch.cat([piece[i] for piece in pieces], dim=2) for i in range(3))  # type: ignore[return-value]


@_by_example_backward.register_fake
def _(grad, query, key, value, out, lse, position_ids, scale):
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape)


def _save_for_backward(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    query, key, value, position_ids, scale = inputs
    ctx.save_for_backward(query, key, value, *output, position_ids)
    ctx.scale = scale


def _backward(ctx: Any, grad: torch.Tensor, _grad_lse: torch.Tensor) -> tuple[Any, ...]:
    query, key, value, out, lse, position_ids = ctx.saved_tensors
    dq, dk, dv = _by_example_backward(grad, query, key, value, out, lse, position_ids, ctx.scale)
    return dq, dk, dv, None, None


_by_example.register_autograd(_backward, setup_context=_save_for_backward)


def _plain(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kwargs: dict[str, Any]) -> bool:
    """Whether a packed row's attention is plain causal self-attention that the CPU operator computes."""
    return (
        query.device.type == "cpu"
        and not kwargs.get("dropout")
        and all(kwargs.get(name) is None for name in SDPA_ONLY)
        and query.shape[-1] == key.shape[-1] == value.shape[-1]
    )


def example_by_example(inner: Callable[..., tuple[torch.Tensor, Any]]) -> Callable[..., tuple[torch.Tensor, None]]:
    """transformers' attention-function interface: a packed row (one row, no mask, positions restarting at 0 for
    each example) attends example by example, on a CPU through one operator running sdpa's flash kernel per example
    (where `inner` is sdpa's, or the fast-dropout attention without dropout, which is sdpa's), else through `inner`
    on each example's slice; anything else goes to `inner` as it is."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from tunelab.training.dropout import fast_dropout_attention

    plain_inner = inner in (sdpa_attention_forward, fast_dropout_attention)

    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        positions = kwargs.pop("position_ids", None)
        packed = (
            attention_mask is None and positions is not None and query.shape[0] == 1 and key.shape[2] == query.shape[2]
        )
        if not packed:
            return inner(module, query, key, value, attention_mask, **kwargs)
        if plain_inner and _plain(query, key, value, kwargs):
            scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
            device = query.device.type  # as autocast casts sdpa's inputs (it leaves custom operators alone)
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
            out, _ = _by_example(query.to(dtype), key.to(dtype), value.to(dtype), positions, scale)
            return out, None
        return _each_example(inner, module, query, key, value, positions, kwargs)

    return attention


@torch.compiler.disable  # compiled decoder blocks break here: the split depends on the batch's data
def _each_example(
    inner: Callable[..., tuple[torch.Tensor, Any]],
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    positions: torch.Tensor,
    kwargs: dict[str, Any],
) -> tuple[torch.Tensor, None]:
    bounds = example_bounds(positions)
    lengths = [e - s for s, e in pairwise(bounds)]
    kwargs = {**kwargs, "is_causal": True}
    outputs = [
        inner(module, q, k, v, None, **kwargs)[0]
        for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2), strict=True)
    ]
    return torch.cat(outputs, dim=1), None  # (batch, length, heads, head_dim)


def causal_only_mask(*, attention_mask: torch.Tensor | None, q_length: int, kv_length: int, **kwargs: Any) -> Any:
    """The mask function for `IMPLEMENTATION`: none where attention is causal self-attention without padding (the
    attention function splits a packed row by example itself), else sdpa's."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and q_length == kv_length:
        return None
    return sdpa_mask(attention_mask=attention_mask, q_length=q_length, kv_length=kv_length, **kwargs)


def padding_free_problem(model: torch.nn.Module, arch: Arch, processes: int) -> str | None:
    """Why this training cannot run padding-free, or None."""
    config = getattr(base_model(model), "config", None)
    model_type = getattr(config, "model_type", None)
    if arch != "causal":
        return "it applies to causal models (a seq2seq encoder attends both ways over its padded inputs)"
    if processes > 1:
        return "not supported for training on several processes (DDP/FSDP split a batch by rows) yet"
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return "a prompt-learning method's virtual tokens belong to one example per row"
    if model_type not in PLAIN_CAUSAL_MODELS:
        return f"model type {model_type!r} is not one known to attend as plain causal self-attention"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "the model attends through a sliding window"
    if attention_implementation(model) != "sdpa":
        return f"the model attends through {attention_implementation(model)!r}, not 'sdpa'"
    return None


def decide_padding_free(setting: bool | Literal["auto"], model: torch.nn.Module, arch: Arch, processes: int) -> bool:
    """`training.padding_free`: False, True (an error naming the reason where it cannot apply), or `auto`: on
    wherever it applies."""
    if setting is False:
        return False
    problem = padding_free_problem(model, arch, processes)
    if setting is True and problem:
        raise TrainingError(f"training.padding_free: {problem}; set training.padding_free: false")
    return problem is None


@contextlib.contextmanager
def padding_free_attention(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Inside the block, `model` attends example by example over packed rows, through the attention function it
    used on entering; after it, as before."""
    if not enabled:
        yield
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    inner = ALL_ATTENTION_FUNCTIONS[attention_implementation(model)]
    with attending_through(model, IMPLEMENTATION, example_by_example(inner), mask=causal_only_mask):
        yield
