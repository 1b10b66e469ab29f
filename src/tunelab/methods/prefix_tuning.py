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

    peft_cfg = PrefixTuningConfig(task_type=peft_task_type(ctx.arch), num_virtual_tokens=cfg.num_virtual_tokens,
                                  prefix_projection=cfg.prefix_projection)
    return get_peft_model(model, peft_cfg)


METHOD = Method(name="prefix_tuning", config_cls=PrefixTuningMethodConfig, prepare=prepare, is_peft=True)
