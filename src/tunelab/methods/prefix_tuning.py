"""Prefix tuning (Li & Liang, 2021) through PEFT: trainable key/value prefixes in every attention layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tunelab.methods.base import Method, MethodConfigBase, ModelContext, peft_task_type

if TYPE_CHECKING:  # torch and peft load when a method runs, not when a config is read
    import torch


class PrefixTuningMethodConfig(MethodConfigBase):
    name: Literal["prefix_tuning"] = "prefix_tuning"
    num_virtual_tokens: int = Field(20, gt=0)
    prefix_projection: bool = False


def prepare(model: torch.nn.Module, cfg: PrefixTuningMethodConfig, ctx: ModelContext) -> torch.nn.Module:
    from peft import PrefixTuningConfig, get_peft_model

    peft_cfg = PrefixTuningConfig(
        task_type=peft_task_type(ctx.arch),
        num_virtual_tokens=cfg.num_virtual_tokens,
        prefix_projection=cfg.prefix_projection,
    )
    return get_peft_model(model, peft_cfg)


def generate_recomputing(model, batch: dict[str, torch.Tensor], gen: dict) -> torch.Tensor:
    """Greedy decoding that recomputes the whole sequence each step. Used for causal prefix tuning, where
    PEFT's generate (cached or not) diverges from the model's own forward pass with transformers 5 (tested);
    slower, but it decodes exactly what the trained model scores."""
    import torch

    from tunelab.data.collate import position_ids_from_mask

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


METHOD = Method(
    name="prefix_tuning",
    config_cls=PrefixTuningMethodConfig,
    prepare=prepare,
    is_peft=True,
    peft_type="PREFIX_TUNING",
    causal_generate=generate_recomputing,
    supports_gradient_checkpointing=False,
    supports_compile=False,
)
