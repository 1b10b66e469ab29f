"""Full fine-tuning: every weight of the base model is trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tunelab.methods.base import Method, MethodConfigBase, ModelContext

if TYPE_CHECKING:  # torch and peft load when a method runs, not when a config is read
    import torch


class FullConfig(MethodConfigBase):
    name: Literal["full"] = "full"


def prepare(model: torch.nn.Module, cfg: FullConfig, ctx: ModelContext) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHOD = Method(name="full", config_cls=FullConfig, prepare=prepare, is_peft=False)
