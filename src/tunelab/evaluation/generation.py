"""Batched generation: prompts sorted by length (less padding), left-padded for causal models,
greedy by default, outputs returned in input order."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from tunelab.data.collate import generation_batch, position_ids_from_mask
from tunelab.data.encoding import Encoded
from tunelab.modeling import Arch
from tunelab.models.precision import autocast, resolve_precision
from tunelab.training.distributed import is_sharded, reshard, unshard_root
from tunelab.training.loss import is_prompt_learning


def _is_prefix(model: torch.nn.Module) -> bool:
    cfg = getattr(model, "active_peft_config", None)
    return cfg is not None and cfg.peft_type.value == "PREFIX_TUNING"


def _greedy_recompute(model, batch: dict[str, torch.Tensor], gen: dict) -> torch.Tensor:
    """Greedy decoding that recomputes the whole sequence each step. Used for causal prefix tuning, where
    PEFT's generate (cached or not) diverges from the model's own forward pass with transformers 5 (tested);
    slower, but it decodes exactly what the trained model scores."""
    if gen["num_beams"] != 1:
        raise ValueError("beam search is not supported for prefix-tuned causal models; use num_beams: 1")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    new = []
    for _ in range(gen["max_new_tokens"]):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, -1]
        nxt = torch.where(done, torch.full_like(done, gen["pad_token_id"], dtype=torch.long), logits.argmax(-1))
        new.append(nxt)
        done |= nxt == gen["eos_token_id"]
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], 1)
        if done.all():
            break
    return torch.stack(new, 1)


def _generate_with_soft_prompt(model, batch: dict[str, torch.Tensor], gen: dict) -> torch.Tensor:
    """Causal soft-prompt generation: the learned virtual tokens are prepended as embeddings and the base
    model generates from `inputs_embeds`. (PEFT's own generate for prompt tuning loses the prompt once the
    KV cache is used with transformers 5: outputs differ from cache-free decoding; tested.)"""
    base = model.get_base_model()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    words = base.get_input_embeddings()(ids)
    prompt = model.get_prompt(batch_size=ids.shape[0]).to(words.dtype)
    embeds = torch.cat([prompt, words], dim=1)
    full_mask = torch.cat([torch.ones(ids.shape[0], prompt.shape[1], dtype=mask.dtype, device=mask.device), mask], 1)
    return base.generate(inputs_embeds=embeds, attention_mask=full_mask, **gen)  # only new tokens come back


@torch.no_grad()
def generate_texts(model: torch.nn.Module, tokenizer, prompts: Sequence[Encoded], arch: Arch, *, batch_size: int = 16,
                   max_new_tokens: int = 96, num_beams: int = 1, desc: str = "generate",
                   show_progress: bool = True, precision: str = "fp32") -> list[str]:
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
                idx = order[start:start + batch_size]
                batch = {k: v.to(device) for k, v in
                         generation_batch([prompts[i] for i in idx], tokenizer.pad_token_id, arch).items()}
                gen = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False,
                       "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
                with autocast(device, amp):
                    if arch == "causal" and is_prompt_learning(model):
                        new_tokens = _generate_with_soft_prompt(model, batch, gen)
                    elif arch == "causal" and _is_prefix(model):
                        new_tokens = _greedy_recompute(model, batch, gen)
                    else:
                        out = model.generate(**batch, **gen, **synced)
                        new_tokens = out if arch == "seq2seq" else out[:, batch["input_ids"].shape[1]:]
                for i, row in zip(idx, new_tokens, strict=True):
                    outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
                bar.update(len(idx))
    finally:
        if synced:
            reshard(model)
        model.train(was_training)
    return outputs


def generate_texts_sharded(model: torch.nn.Module, tokenizer, prompts: Sequence[Encoded], arch: Arch,
                           **kwargs) -> list[str]:
    """`generate_texts` over all processes of a distributed run: each takes a contiguous shard of the
    prompts and the predictions are gathered back in input order (one process: plain generation).
    Under FSDP the shards are padded to equal length, so all processes run the same number of batches."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    if state.num_processes == 1:
        return generate_texts(model, tokenizer, prompts, arch, **kwargs)
    with state.split_between_processes(list(range(len(prompts))), apply_padding=is_sharded(model)) as mine:
        local = generate_texts(model, tokenizer, [prompts[i] for i in mine], arch,
                               **{**kwargs, "show_progress": kwargs.get("show_progress", True) and state.is_main_process})
        pairs = list(zip(mine, local))
    gathered = gather_object(pairs)
    by_index = dict(gathered)
    return [by_index[i] for i in range(len(prompts))]
