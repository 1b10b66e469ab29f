"""Batched generation: prompts sorted by length (less padding), left-padded for causal models,
greedy by default, outputs returned in input order."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from tunelab.data.collate import generation_batch
from tunelab.data.encoding import Encoded
from tunelab.methods import method_of
from tunelab.modeling import Arch, Model
from tunelab.models.precision import autocast, resolve_precision
from tunelab.training.distributed import is_sharded, reshard, unshard_root


@torch.no_grad()
def generate_texts(
    model: Model,
    tokenizer,
    prompts: Sequence[Encoded],
    arch: Arch,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 96,
    num_beams: int = 1,
    desc: str = "generate",
    show_progress: bool = True,
    precision: str = "fp32",
) -> list[str]:
    device = next(p for p in model.parameters()).device
    # under FSDP each forward pass gathers parameters from all processes: they decode in lockstep
    synced = {"synced_gpus": True} if is_sharded(model) else {}
    if synced:
        unshard_root(model)
    amp = resolve_precision(precision, device)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].input_ids))
    outputs: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(prompts), desc=desc, unit="ex", disable=not show_progress, leave=False) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = {
                    k: v.to(device)
                    for k, v in generation_batch([prompts[i] for i in idx], tokenizer.pad_token_id, arch).items()
                }
                gen = {
                    "max_new_tokens": max_new_tokens,
                    "num_beams": num_beams,
                    "do_sample": False,
                    "pad_token_id": tokenizer.pad_token_id,
                    "eos_token_id": tokenizer.eos_token_id,
                }
                with autocast(device, amp):
                    method = method_of(model) if arch == "causal" else None
                    if method is not None and method.causal_generate is not None:
                        new_tokens = method.causal_generate(model, batch, gen)
                    else:
                        out = model.generate(**batch, **gen, **synced)
                        new_tokens = out if arch == "seq2seq" else out[:, batch["input_ids"].shape[1] :]
                for i, row in zip(idx, new_tokens, strict=True):
                    outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
                bar.update(len(idx))
    finally:
        if synced:
            reshard(model)
        model.train(was_training)
    return outputs


def generate_texts_sharded(model: Model, tokenizer, prompts: Sequence[Encoded], arch: Arch, **kwargs) -> list[str]:
    """`generate_texts` over all processes of a distributed run: each takes a contiguous shard of the
    prompts and the predictions are gathered back in input order (one process: plain generation).
    Under FSDP the shards are padded to equal length, so all processes run the same number of batches."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    if state.num_processes == 1:
        return generate_texts(model, tokenizer, prompts, arch, **kwargs)
    with state.split_between_processes(list(range(len(prompts))), apply_padding=is_sharded(model)) as mine:
        local = generate_texts(
            model,
            tokenizer,
            [prompts[i] for i in mine],
            arch,
            **{**kwargs, "show_progress": kwargs.get("show_progress", True) and state.is_main_process},
        )
        pairs = list(zip(mine, local))
    gathered = gather_object(pairs)
    by_index = dict(gathered)
    return [by_index[i] for i in range(len(prompts))]
