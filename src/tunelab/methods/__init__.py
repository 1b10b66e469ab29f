"""Fine-tuning methods, one module each (same shape: a `*Config` class and a `METHOD`).

Adding a method is one new module in this package and its name in `BUILTIN` below: the config union that
validates `method:` and the error messages are derived from the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from tunelab.methods import full, ia3, lora, prefix_tuning, prompt_tuning, qlora
from tunelab.methods.base import Method, MethodConfigBase, ModelContext
from tunelab.modeling import unwrap_parallel

BUILTIN = (full, lora, qlora, prompt_tuning, ia3, prefix_tuning)
METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in BUILTIN}

# `method:` in a config: one of the registered methods' configs, chosen by its `name`. The union is built
# from the registry at run time; a static type checker sees the common base.
if TYPE_CHECKING:
    MethodConfig = MethodConfigBase
else:
    MethodConfig = Annotated[Union[tuple(m.config_cls for m in METHODS.values())], Field(discriminator="name")]


def get_method(name: str) -> Method:
    return METHODS[name]


def is_prompt_learning(model) -> bool:
    """Soft prompts prepended to the input (prompt tuning, p-tuning): PEFT ignores position ids there.
    Prefix tuning is not included: PEFT offsets given position ids past its prefix, so they are kept."""
    cfg = getattr(unwrap_parallel(model), "active_peft_config", None)
    return bool(cfg is not None and cfg.is_prompt_learning and cfg.peft_type.value != "PREFIX_TUNING")


def method_of(model) -> Method | None:
    """The registered method of a PEFT model's active adapter (None for a plain model)."""
    cfg = getattr(unwrap_parallel(model), "active_peft_config", None)
    kind = cfg.peft_type.value if cfg is not None else None
    return next((m for m in METHODS.values() if kind and m.peft_type == kind), None)


__all__ = [
    "METHODS",
    "Method",
    "MethodConfig",
    "MethodConfigBase",
    "ModelContext",
    "get_method",
    "is_prompt_learning",
    "method_of",
]
