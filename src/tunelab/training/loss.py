"""The training loss: mean cross-entropy over completion tokens (labels != -100).

For causal models the vocabulary projection is the largest single matmul of a small model and its
output (batch x positions x vocab floats) dominates activation memory, yet the loss needs it only at
completion positions. Completions end their rows, and length-grouped batches hold rows of similar length,
so `logits_to_keep` asks the model for logits of the last K columns only, from the earliest completion
start in the batch to the end (+1 for the shift). Same loss as the full computation (tested), less time
and memory.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from tunelab.data.encoding import IGNORE_INDEX
from tunelab.modeling import Arch, forward_accepts


def completion_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], arch: Arch) -> torch.Tensor:
    if arch == "seq2seq":
        return model(**batch).loss  # decoder logits cover only the target already
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if not forward_accepts(model, "logits_to_keep"):
        return model(**inputs, labels=labels).loss
    has_label = (labels != IGNORE_INDEX).any(dim=0)
    first = max(int(has_label.nonzero()[0]), 1) if has_label.any() else labels.shape[1] - 1  # column 0: no prediction
    keep = labels.shape[1] - first + 1  # positions first-1 .. end predict labels first .. end
    logits = model(**inputs, logits_to_keep=keep).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, labels.shape[1] - keep + 1 :]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
