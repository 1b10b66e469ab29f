"""The two kinds of model tunelab handles, and how to reach the plain model inside the wrappers around it.
Light: no torch, transformers or peft import (config validation and data code use `Arch`)."""

from __future__ import annotations

import inspect
from typing import Any, Literal

Arch = Literal["causal", "seq2seq"]


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
