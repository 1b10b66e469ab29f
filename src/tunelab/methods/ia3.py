"""IA3 (Liu et al., 2022) through PEFT: learned vectors that rescale keys, values and feed-forward activations.

`target_modules` / `feedforward_modules: null` take PEFT's per-architecture defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tunelab.methods.base import Method, MethodConfigBase, ModelContext, peft_task_type

if TYPE_CHECKING:  # torch and peft load when a method runs, not when a config is read
    import torch


class IA3MethodConfig(MethodConfigBase):
    name: Literal["ia3"] = "ia3"
    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None


def prepare(model: torch.nn.Module, cfg: IA3MethodConfig, ctx: ModelContext) -> torch.nn.Module:
    from peft import IA3Config, get_peft_model

    peft_cfg = IA3Config(
        task_type=peft_task_type(ctx.arch),
        target_modules=cfg.target_modules,
        feedforward_modules=cfg.feedforward_modules,
    )
    return get_peft_model(model, peft_cfg)


METHOD = Method(name="ia3", config_cls=IA3MethodConfig, prepare=prepare, is_peft=True, peft_type="IA3")
