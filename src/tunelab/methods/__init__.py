"""Fine-tuning methods, one module each (same shape: a config class and a `METHOD`)."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from tunelab.methods import full, ia3, lora, prefix_tuning, prompt_tuning, qlora
from tunelab.methods.base import Method, MethodConfigBase, ModelContext

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (full, lora, qlora, prompt_tuning, ia3, prefix_tuning)}

MethodConfig = Annotated[
    Union[
        full.FullConfig,
        lora.LoraMethodConfig,
        qlora.QLoraConfig,
        prompt_tuning.PromptTuningMethodConfig,
        ia3.IA3MethodConfig,
        prefix_tuning.PrefixTuningMethodConfig,
    ],
    Field(discriminator="name"),
]


def get_method(name: str) -> Method:
    return METHODS[name]


__all__ = ["METHODS", "Method", "MethodConfig", "MethodConfigBase", "ModelContext", "get_method"]
