"""The two kinds of model tunelab handles, and how to reach the plain model inside the wrappers around it.
Light: no torch, transformers or peft import (config validation and data code use `Arch`)."""

from __future__ import annotations

import inspect
from typing import Any, Literal

Arch = Literal["causal", "seq2seq"]

# A transformers PreTrainedModel, or a PEFT PeftModel around one. Loosely typed on purpose: tunelab drives
# the API both share by duck typing (generate, save_pretrained, get_input_embeddings, config...), which
# neither library declares as one protocol, and nn.Module's typing would see those as tensors.
Model = Any


def unwrap_parallel(model: Any) -> Any:
    """The model inside a DistributedDataParallel / FSDP wrapper (itself when not wrapped)."""
    return getattr(model, "module", model)


def base_model(model: Any) -> Any:
    """The transformers model under the parallel and PEFT wrappers."""
    model = unwrap_parallel(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def forward_accepts(model: Any, name: str) -> bool:
    """Whether the underlying model's forward takes argument `name` (e.g. `logits_to_keep`)."""
    return name in inspect.signature(base_model(model).forward).parameters


def chat_template_in_use(tokenizer: Any, arch: Arch, cfg: Any) -> bool:
    """Whether prompts are wrapped in the tokenizer's chat template (causal instruct models); `cfg`: ModelConfig."""
    from tunelab.errors import ModelError

    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if cfg.chat_template == "on" and not has_chat:
        raise ModelError(f"model.chat_template is 'on' but the tokenizer of {cfg.name!r} has no chat template")
    return arch == "causal" and (cfg.chat_template == "on" or (cfg.chat_template == "auto" and has_chat))
