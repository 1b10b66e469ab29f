"""What a method costs: trainable parameters, and bytes on disk of its artefact vs a full checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunelab.modeling import Model


def parameter_counts(model: Model) -> dict[str, Any]:
    """Trainable and total parameters (PEFT's count, which also unpacks 4-bit weights)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    return {
        "trainable_parameters": int(trainable),
        "total_parameters": int(total),
        "trainable_percent": 100.0 * trainable / total if total else 0.0,
    }


def full_checkpoint_bytes(model: torch.nn.Module, counts: dict[str, Any], is_peft: bool) -> int:
    """Bytes a full checkpoint of the model takes in its float dtype (4-bit bases counted unpacked)."""
    base_params = counts["total_parameters"] - (counts["trainable_parameters"] if is_peft else 0)
    float_dtypes = [p.dtype for p in model.parameters() if p.dtype.is_floating_point]
    element = torch.finfo(float_dtypes[0]).bits // 8 if float_dtypes else 4
    return int(base_params * element)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def weight_file_bytes(path: Path) -> int:
    """Bytes of the weight files (safetensors) in a saved artefact folder."""
    return sum(f.stat().st_size for f in Path(path).rglob("*.safetensors"))
