"""The training loss: mean cross-entropy over completion tokens (labels != -100).

For causal models the vocabulary projection is the largest single matmul of a small model and its output
(positions x vocab floats, kept in bf16 and fp32 with their gradients) dominates activation memory, yet the loss
needs it only where a completion token is predicted. transformers' `logits_to_keep` takes a boolean
(batch, positions) mask and projects just those hidden states (flattened to tokens x hidden), so the logits hold
exactly the completion tokens of the batch, whatever the rows' lengths and padding. Models whose forward cannot
take such a mask (older transformers, custom code) get the last K columns instead: from the earliest completion
start in the batch to the end. Same loss either way as the full computation (tested), less time and memory.

Where the output head is a plain projection (Llama-style models, no softcapping or scaling of the logits) and the
model is called directly (one process, no DDP/FSDP wrapper), the loss goes one step further: the backbone's
hidden states at those positions are projected and scored a chunk of tokens at a time, each chunk recomputed in the
backward pass (torch.utils.checkpoint), so the fp32 logits, their log-softmax and gradients exist for one chunk at
a time instead of for every completion token at once: the same loss up to summation order, and SmolLM2-135M
LoRA's peak on the demo's batch 1.69 -> 1.58 GiB (1.50 -> 1.40 with frozen weights in bf16) at the same step time
(bench/results/methods.md). A soft prompt (prompt tuning, p-tuning) is prepended here exactly as PEFT's forward
prepends it, so it takes the chunked path too; prefix tuning, whose virtual tokens live in the key/value cache,
does not.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunelab.data.encoding import IGNORE_INDEX
from tunelab.modeling import Arch, base_model, forward_accepts, unwrap_parallel

CHUNK_LOGITS = 1 << 22  # logits per chunk of the chunked loss (~85 tokens of a 49k vocabulary: 16 MiB in fp32)
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma3_text"})


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
    if _plain_head(model):
        return _chunked_head_loss(model, inputs, labels)
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


def _chunked_head_loss(model: torch.nn.Module, inputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
    """The backbone's hidden states at the positions that predict a completion token, projected and scored one
    chunk at a time; the head's weight is cast once to the autocast precision (as autocast would per matmul)."""
    base = base_model(model)
    if prepended_positions(model):
        inputs, labels = _with_soft_prompt(model, inputs, labels)
    hidden = base.get_decoder()(**inputs).last_hidden_state
    predicts = labels[:, 1:] != IGNORE_INDEX
    hidden, targets = hidden[:, :-1][predicts], labels[:, 1:][predicts]
    weight = base.get_output_embeddings().weight
    if torch.is_autocast_enabled(hidden.device.type):
        weight = weight.to(torch.get_autocast_dtype(hidden.device.type))
    chunk = max(1, CHUNK_LOGITS // weight.shape[0])
    sums = [
        checkpoint(_summed_cross_entropy, hidden[i : i + chunk], weight, targets[i : i + chunk], use_reentrant=False)
        for i in range(0, len(targets), chunk)
    ]
    return torch.stack(sums).sum() / len(targets)


def _with_soft_prompt(
    model: Any, inputs: dict[str, Any], labels: torch.Tensor
) -> tuple[dict[str, Any], torch.Tensor]:  # model: a PEFT prompt-learning model
    """What PEFT's prompt-learning forward hands the base model: the learned prompt's embeddings in front of the
    input's (in their dtype), the attention mask (if any) widened with ones, and ignored labels under the prompt.
    Like PEFT, explicit position ids are dropped: positions count from the first virtual token."""
    inputs = {k: v for k, v in inputs.items() if k != "position_ids"}
    ids = inputs.pop("input_ids")
    embeds = model.word_embeddings(ids)
    prompt = model.get_prompt(batch_size=ids.shape[0]).to(embeds.dtype)
    inputs["inputs_embeds"] = torch.cat((prompt, embeds), dim=1)
    rows, virtual = ids.shape[0], prompt.shape[1]
    if inputs.get("attention_mask") is not None:
        ones = inputs["attention_mask"].new_ones(rows, virtual)
        inputs["attention_mask"] = torch.cat((ones, inputs["attention_mask"]), dim=1)
    ignored = labels.new_full((rows, virtual), IGNORE_INDEX)
    return inputs, torch.cat((ignored, labels), dim=1)


def _summed_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")


def _plain_head(model: torch.nn.Module) -> bool:
    """Whether the loss may call the backbone and project the hidden states itself: a model called directly (no
    DDP/FSDP wrapper, whose hooks run in the model's own forward; of the prompt-learning methods, which change the
    inputs inside PEFT's forward, only a soft prompt that `_with_soft_prompt` prepends the same way) whose logits
    are a plain projection of the last hidden state."""
    from tunelab.training.distributed import is_sharded

    if unwrap_parallel(model) is not model or is_sharded(model):
        return False
    peft_cfg = getattr(model, "active_peft_config", None)
    if peft_cfg is not None and peft_cfg.is_prompt_learning and not prepended_positions(model):
        return False
    base = base_model(model)
    cfg = getattr(base, "config", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return (
        getattr(cfg, "model_type", None) in PLAIN_HEAD_MODELS
        and getattr(cfg, "final_logit_softcapping", None) is None
        and type(head) is torch.nn.Linear
        and head.bias is None
        and hasattr(base, "get_decoder")
    )


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
