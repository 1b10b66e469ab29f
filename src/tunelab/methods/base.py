"""The shape every fine-tuning method has: a pydantic config and a function that prepares the model.

Adding a method is one new module in this package that defines a `*Config` (with a `name` literal)
and a `METHOD = Method(...)`, plus one line in `methods/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from tunelab.modeling import Arch
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # torch and peft load when a method runs, not when a config is read
    import torch


class MethodConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


@dataclass(frozen=True)
class ModelContext:
    """What a method needs to know about the model it adapts."""

    arch: Arch
    model_path: str  # local folder or hub id of the base (used e.g. to initialise soft prompts from text)
    instruction: str = ""  # the task instruction, for text-initialised soft prompts


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfigBase]
    prepare: Callable[[torch.nn.Module, Any, ModelContext], torch.nn.Module]
    is_peft: bool
    # Extra keyword arguments for `from_pretrained` (e.g. 4-bit quantization for QLoRA).
    load_kwargs: Callable[[Any], dict[str, Any]] = field(default=lambda cfg: {})
    peft_type: str | None = None  # PEFT's name for the adapter type, to find the method of a loaded model
    # How a causal model with this method's adapter generates, where PEFT's `generate` cannot be used:
    # (model, batch, generation kwargs) -> new token ids. None: `model.generate`.
    causal_generate: Callable[[Any, dict[str, Any], dict[str, Any]], Any] | None = None
    # False where recomputing activations breaks the method (prefix tuning: transformers drops the key/value
    # cache that carries the prefix when checkpointing); `gradient_checkpointing: auto` then stays off.
    supports_gradient_checkpointing: bool = True
    # False where compiled blocks cannot share one graph (prefix tuning: every block updates its own slot of the
    # key/value cache that carries the prefix); `training.compile: auto` then stays off.
    supports_compile: bool = True


def peft_task_type(arch: Arch):
    from peft import TaskType

    return TaskType.CAUSAL_LM if arch == "causal" else TaskType.SEQ_2_SEQ_LM
