"""The training loss: mean cross-entropy over completion tokens (labels != -100).

For causal models the vocabulary projection is the largest single matmul of a small model and its output
(positions x vocab floats, kept in bf16 and fp32 with their gradients) dominates activation memory, yet the loss
needs it only where a completion token is predicted. transformers' `logits_to_keep` takes a boolean
(batch, positions) mask and projects just those hidden states (flattened to tokens x hidden), so the logits hold
exactly the completion tokens of the batch, whatever the rows' lengths and padding. Models whose forward cannot
take such a mask (older transformers, custom code) get the last K columns instead: from the earliest completion
start in the batch to the end. Same loss either way as the full computation (tested), less time and memory.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.data.encoding import IGNORE_INDEX
from tunelab.modeling import Arch, base_model, forward_accepts, unwrap_parallel


def completion_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], arch: Arch) -> torch.Tensor:
    # No key/value cache: a loss forward never reads it back, and building one costs time and memory (and makes a
    # compiled block recompile for each layer's cache slot, training/compiling.py).
    no_cache = {"use_cache": False} if forward_accepts(model, "use_cache") else {}
    if arch == "seq2seq":
        return model(**batch, **no_cache).loss  # decoder logits cover only the target already
    labels = batch["labels"]
    inputs: dict[str, Any] = {**{k: v for k, v in batch.items() if k != "labels"}, **no_cache}
    if not forward_accepts(model, "logits_to_keep"):
        return model(**inputs, labels=labels).loss
    if takes_position_mask(model):
        return _masked_positions_loss(model, inputs, labels)
    return _last_columns_loss(model, inputs, labels)


def _masked_positions_loss(model: torch.nn.Module, inputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
    """Logits only at the positions that predict a completion token (position t predicts label t + 1)."""
    predicts = labels[:, 1:] != IGNORE_INDEX
    prepended = prepended_positions(model)  # a soft prompt's virtual tokens come before the input
    keep = torch.zeros(labels.shape[0], prepended + labels.shape[1], dtype=torch.bool, device=labels.device)
    keep[:, prepended : prepended + labels.shape[1] - 1] = predicts
    logits = model(**inputs, logits_to_keep=keep).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:][predicts])


def _last_columns_loss(model: torch.nn.Module, inputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
    has_label = (labels != IGNORE_INDEX).any(dim=0)
    first = max(int(has_label.nonzero()[0]), 1) if has_label.any() else labels.shape[1] - 1  # column 0: no prediction
    keep = labels.shape[1] - first + 1  # positions first-1 .. end predict labels first .. end
    logits = model(**inputs, logits_to_keep=keep).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, labels.shape[1] - keep + 1 :]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def prepended_positions(model: torch.nn.Module) -> int:
    """Positions a PEFT prompt-learning method adds in front of the input (prompt tuning, p-tuning); prefix
    tuning adds its virtual tokens to the key/value cache instead, not to the positions."""
    cfg = getattr(unwrap_parallel(model), "active_peft_config", None)
    if cfg is None or cfg.peft_type.value not in {"PROMPT_TUNING", "P_TUNING"}:
        return 0
    return int(cfg.num_virtual_tokens)


def takes_position_mask(model: torch.nn.Module) -> bool:
    """Whether the model's forward slices its hidden states with transformers' `slice_logits_to_keep` and that
    helper takes a boolean (batch, positions) mask (transformers 5.x since late 2026)."""
    for cls in type(base_model(model)).__mro__:  # FSDP2 wraps the model's class in a subclass of its own
        helper = getattr(sys.modules.get(cls.__module__), "slice_logits_to_keep", None)
        if helper is not None:
            return _slices_by_mask(helper)
    return False


@functools.cache
def _slices_by_mask(helper: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    hidden = torch.arange(4.0).reshape(1, 4, 1)
    try:
        kept = helper(hidden, torch.tensor([[False, True, False, True]]))
    except (IndexError, RuntimeError, TypeError):
        return False
    return tuple(kept.shape) == (2, 1) and kept.flatten().tolist() == [1.0, 3.0]
