"""A PEFT method's frozen linear weights stored in the compute precision while it trains (issue #15).

Under bf16 (or fp16) autocast every matmul casts its fp32 weight to the compute precision, again in each forward
and in each recomputation, so a frozen weight is only ever used rounded. Storing it rounded gives the same losses
to the last bit and drops half of the base model's bytes, and the fp32 checkpoint's pages no longer have to stay
resident (bench/results/methods.md: LoRA's peak 1.69 -> 1.50 GiB on the demo's batch, compiled). Evaluation and
the log-likelihood benchmarks after training must still see the base as loaded, so the fp32 values are read back
from the base model's safetensors checkpoint when training ends. Only weights that match their checkpoint tensor
are stored rounded (a base changed in memory keeps fp32), never a weight that another module shares (tied output
embeddings) and never one that trains.

A base quantized to 4 bits (QLoRA) goes further, as QLoRA's recipe loads the model (`whole_base`): every frozen
floating weight of it, the embeddings and norms too, is stored in the compute precision. The residual stream then
runs in it, which is not the same computation (the losses differ by rounding: +0.19% validation loss on the study's
QLoRA sweep trial, bench/results/methods.md), but its 4-bit base is an approximation made for memory in the first
place, and it halves what QLoRA keeps besides that base.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from tunelab.modeling import base_model
from tunelab.models.loading import release_checkpoint_mapping


@dataclass
class RoundedWeights:
    """The weights that were stored in the compute precision, and where their originals are."""

    weights: list[tuple[torch.nn.Parameter, Path, str]]  # (weight, checkpoint file, tensor key)
    whole_base: bool = False  # every frozen floating weight of a 4-bit base, not only linear ones

    def restore(self) -> None:
        """Read each weight back from its checkpoint, in the dtype it was loaded in (fp32)."""
        from safetensors import safe_open

        with ExitStack() as stack:
            files = {
                path: stack.enter_context(safe_open(str(path), framework="pt"))
                for path in {p for _, p, _ in self.weights}
            }
            for weight, path, key in self.weights:
                weight.data = files[path].get_tensor(key).to(weight.device, torch.float32)


def checkpoint_files(source: str | Path) -> list[Path]:
    """The safetensors files of a base model's checkpoint: a local folder, or a hub model already in the local
    cache (nothing is downloaded); empty where there are none (e.g. a GGUF source)."""
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(source), local_files_only=True))
        except Exception:  # not cached, or not a hub id: nothing to read back from
            return []
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def store_frozen_rounded(model: torch.nn.Module, dtype: torch.dtype, source: str | Path) -> RoundedWeights | None:
    """Store the frozen linear weights of `model` (of a 4-bit base, every frozen floating weight) in `dtype` where
    their fp32 originals can be read back from the checkpoint at `source`; None where none can."""
    from safetensors import safe_open

    whole_base = bool(getattr(base_model(model), "is_loaded_in_4bit", False))
    candidates = dict(_frozen_weights(model) if whole_base else _frozen_linear_weights(model))
    files = checkpoint_files(source) if candidates else []
    if not files:
        return None
    rounded: list[tuple[torch.nn.Parameter, Path, str]] = []
    with ExitStack() as stack:
        handles = [(path, stack.enter_context(safe_open(str(path), framework="pt"))) for path in files]
        keys = {key: (path, handle) for path, handle in handles for key in handle.keys()}  # noqa: SIM118
        for name, weight in candidates.items():
            found = next((k for k in _checkpoint_keys(name) if k in keys), None)
            if found is None:
                continue
            path, handle = keys[found]
            if not _same_as_checkpoint(weight.data, handle.get_slice(found)):
                continue  # changed since it was loaded: the checkpoint could not give it back
            weight.data = weight.data.to(dtype)
            rounded.append((weight, path, found))
    if not rounded:
        return None
    release_checkpoint_mapping(model)
    return RoundedWeights(rounded, whole_base)


def _frozen_linear_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """The weights of plain linear layers of the base model that are frozen, fp32 and not shared with another
    module."""
    base = base_model(model)
    uses: dict[int, int] = {}
    for _, p in base.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    for name, module in base.named_modules():
        if type(module) is not torch.nn.Linear:  # subclasses (quantized, adapter-carrying) compute differently
            continue
        weight = module.weight
        if weight.requires_grad or weight.dtype != torch.float32 or uses[id(weight)] > 1:
            continue
        yield f"{name}.weight", cast(torch.nn.Parameter, weight)


def _frozen_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """Every frozen fp32 weight of the base model (a shared one once); quantized weights are not floating."""
    for name, weight in base_model(model).named_parameters():
        if not weight.requires_grad and weight.dtype == torch.float32:
            yield name, weight


def _same_as_checkpoint(weight: torch.Tensor, stored) -> bool:
    """Shape and the first and last rows equal the checkpoint's (reading the whole tensor would fault the file in
    twice over: this catches a base merged with an adapter or re-initialised, which change every row); a vector
    (a norm's weight) is compared whole."""
    if tuple(stored.get_shape()) != tuple(weight.shape) or weight.ndim not in (1, 2) or weight.shape[0] == 0:
        return False
    if weight.ndim == 1:
        return torch.equal(stored[:].to(weight.device, torch.float32), weight)
    rows = torch.cat([stored[:1], stored[-1:]]).to(weight.device, torch.float32)
    return torch.equal(rows, weight[[0, -1]])


def _checkpoint_keys(weight_name: str) -> list[str]:
    """Where a weight sits in its checkpoint: PEFT inserts `base_layer` under the layers it adapts."""
    key = weight_name.replace(".base_layer", "")
    return [key, key.split(".", 1)[1]] if "." in key else [key]
