"""Log-likelihood scoring of continuations, for causal and seq2seq models.

Causal: the context and continuation are tokenized as one string and split where the context's tokens
end (as lm-evaluation-harness does, trailing context spaces moving to the continuation); the score is
the sum of the continuation tokens' log-probabilities. Batches are left-padded so only the last
positions' logits are computed. Seq2seq: the context goes to the encoder, the continuation is scored
by the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tunelab.data.collate import pad_sequences, padding_mask, position_ids_from_mask
from tunelab.methods import is_prompt_learning
from tunelab.modeling import Arch, forward_accepts


@dataclass(frozen=True)
class Request:
    context: list[int]
    continuation: list[int]


def encode_pair(tokenizer, context: str, continuation: str, arch: Arch) -> Request:
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if arch == "seq2seq":
        return Request(tokenizer(context)["input_ids"], tokenizer(continuation, add_special_tokens=False)["input_ids"])
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    if whole[: len(ctx)] != ctx:  # the tokenizer merged across the boundary: encode separately
        return Request(ctx, tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return Request(ctx, whole[len(ctx) :])


@torch.no_grad()
def _causal_batch(model, reqs: Sequence[Request], pad_id: int, max_length: int | None, return_last: bool = False):
    seqs = [(r.context + r.continuation)[:-1] for r in reqs]
    if max_length:
        seqs = [s[-max_length:] for s in seqs]
    ids, mask = pad_sequences(seqs, pad_id, left=True), padding_mask(seqs, left=True)
    device = next(model.parameters()).device
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if not is_prompt_learning(model):
        inputs["position_ids"] = position_ids_from_mask(mask).to(device)
    keep = max(len(r.continuation) for r in reqs)
    if forward_accepts(model, "logits_to_keep"):
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[:, -keep:]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for row, r in enumerate(reqs):
        n = len(r.continuation)
        target = torch.tensor(r.continuation, device=logprobs.device)
        out.append(float(logprobs[row, keep - n :, :].gather(-1, target[:, None]).sum()))
    # log-probabilities at the position that predicts a one-token continuation, for shared contexts
    return (out, logprobs[:, -1, :]) if return_last else out


@torch.no_grad()
def _seq2seq_batch(model, reqs: Sequence[Request], pad_id: int, max_length: int | None) -> list[float]:
    device = next(model.parameters()).device
    ctx = [r.context[-max_length:] if max_length else r.context for r in reqs]
    labels = pad_sequences([r.continuation for r in reqs], -100).to(device)
    logits = model(
        input_ids=pad_sequences(ctx, pad_id).to(device), attention_mask=padding_mask(ctx).to(device), labels=labels
    ).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return [float(v) for v in (picked * (labels != -100)).sum(-1)]


def loglikelihoods(
    model,
    tokenizer,
    arch: Arch,
    requests: Sequence[Request],
    batch_size: int = 8,
    max_length: int | None = None,
    desc: str = "loglik",
    show_progress: bool = True,
) -> list[float]:
    """Sum of log-probabilities of each request's continuation given its context.

    Causal requests with one-token continuations that share a context (MMLU's " A".." D") are scored
    from a single forward pass of that context, as lm-evaluation-harness does."""
    was_training = model.training
    model.eval()
    scores = [0.0] * len(requests)
    groups: dict[tuple[int, ...], list[int]] = {}
    if arch == "causal":
        for i, r in enumerate(requests):
            if len(r.continuation) == 1:
                groups.setdefault(tuple(r.context), []).append(i)
    shared = {i for members in groups.values() if len(members) > 1 for i in members}
    # one representative request per shared context; its last-position log-probabilities serve them all
    work = [i for i in range(len(requests)) if i not in shared] + [
        members[0] for members in groups.values() if len(members) > 1
    ]
    order = sorted(work, key=lambda i: -len(requests[i].context) - len(requests[i].continuation))
    fn = _causal_batch if arch == "causal" else _seq2seq_batch
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=not show_progress):
            idx = order[start : start + batch_size]
            batch = [requests[i] for i in idx]
            if arch == "causal":
                rows, last = _causal_batch(model, batch, tokenizer.pad_token_id, max_length, return_last=True)
            else:
                rows, last = fn(model, batch, tokenizer.pad_token_id, max_length), None
            for k, (i, s) in enumerate(zip(idx, rows)):
                scores[i] = s
                if i in shared:
                    for j in groups[tuple(requests[i].context)]:
                        scores[j] = float(last[k, requests[j].continuation[0]])
    finally:
        model.train(was_training)
    return scores


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    conf = torch.tensor(confidences, dtype=torch.float64)
    corr = torch.tensor([float(c) for c in correct], dtype=torch.float64)
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += float(in_bin.double().mean() * (conf[in_bin].mean() - corr[in_bin].mean()).abs())
    return ece
