"""LoRA (Hu et al., 2021) through PEFT, with the rsLoRA and DoRA switches.

`target_modules: null` takes PEFT's per-architecture default (q/v projections for T5 and Llama-style
models); `all-linear` adapts every linear layer except the output head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tunelab.methods.base import Method, MethodConfigBase, ModelContext, peft_task_type

if TYPE_CHECKING:  # torch and peft load when a method runs, not when a config is read
    import torch
    from peft import LoraConfig


class LoraSettings(MethodConfigBase):
    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    use_dora: bool = False


class LoraMethodConfig(LoraSettings):
    name: Literal["lora"] = "lora"


def peft_lora_config(cfg: LoraSettings, ctx: ModelContext) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        task_type=peft_task_type(ctx.arch),
        r=cfg.r,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # PEFT says int; scaling = alpha / r takes any number
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        bias=cfg.bias,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
    )


def prepare(model: torch.nn.Module, cfg: LoraMethodConfig, ctx: ModelContext) -> torch.nn.Module:
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(cfg, ctx))


METHOD = Method(name="lora", config_cls=LoraMethodConfig, prepare=prepare, is_peft=True, peft_type="LORA")
