"""A PEFT method's frozen linear weights stored in the compute precision while it trains (issue #15).

Under bf16 (or fp16) autocast every matmul casts its fp32 weight to the compute precision, again in each forward
and in each recomputation, so a frozen weight is only ever used rounded. Storing it rounded gives the same losses
to the last bit and drops half of the base model's bytes, and the fp32 checkpoint's pages no longer have to stay
resident (bench/results/methods.md: LoRA's peak 1.69 -> 1.50 GiB on the demo's batch, compiled). Evaluation and
the log-likelihood benchmarks after training must still see the base as loaded, so the fp32 values are read back
from the base model's safetensors checkpoint when training ends. Only weights that match their checkpoint tensor
are stored rounded (a base changed in memory keeps fp32), never a weight that another module shares (tied output
embeddings) and never one that trains.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from tunelab.modeling import base_model
from tunelab.models.loading import release_checkpoint_mapping


@dataclass
class RoundedWeights:
    """The linear layers whose weights were stored in the compute precision, and where their originals are."""

    layers: list[tuple[torch.nn.Linear, Path, str]]  # (layer, checkpoint file, tensor key)

    def restore(self) -> None:
        """Read each weight back from its checkpoint, in the dtype it was loaded in (fp32)."""
        from safetensors import safe_open

        with ExitStack() as stack:
            files = {
                path: stack.enter_context(safe_open(str(path), framework="pt"))
                for path in {p for _, p, _ in self.layers}
            }
            for layer, path, key in self.layers:
                layer.weight.data = files[path].get_tensor(key).to(layer.weight.device, torch.float32)


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
    """Store the frozen linear weights of `model` in `dtype` where their fp32 originals can be read back from the
    checkpoint at `source`; None where none can."""
    from safetensors import safe_open

    candidates = dict(_frozen_linear_layers(model))
    files = checkpoint_files(source) if candidates else []
    if not files:
        return None
    rounded: list[tuple[torch.nn.Linear, Path, str]] = []
    with ExitStack() as stack:
        handles = [(path, stack.enter_context(safe_open(str(path), framework="pt"))) for path in files]
        keys = {key: (path, handle) for path, handle in handles for key in handle.keys()}  # noqa: SIM118
        for name, layer in candidates.items():
            found = next((k for k in _checkpoint_keys(name) if k in keys), None)
            if found is None:
                continue
            path, handle = keys[found]
            if not _same_as_checkpoint(layer.weight.data, handle.get_slice(found)):
                continue  # changed since it was loaded: the checkpoint could not give it back
            layer.weight.data = layer.weight.data.to(dtype)
            rounded.append((layer, path, found))
    if not rounded:
        return None
    release_checkpoint_mapping(model)
    return RoundedWeights(rounded)


def _frozen_linear_layers(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear]]:
    """Plain linear layers of the base model with a frozen fp32 weight that no other module shares."""
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
        yield name, module


def _same_as_checkpoint(weight: torch.Tensor, stored) -> bool:
    """Shape and the first and last rows equal the checkpoint's (reading the whole tensor would fault the file in
    twice over: this catches a base merged with an adapter or re-initialised, which change every row)."""
    if tuple(stored.get_shape()) != tuple(weight.shape) or weight.ndim != 2 or weight.shape[0] == 0:
        return False
    rows = torch.cat([stored[:1], stored[-1:]]).to(weight.device, torch.float32)
    return torch.equal(rows, weight[[0, -1]])


def _checkpoint_keys(module_name: str) -> list[str]:
    """Where a layer's weight sits in its checkpoint: PEFT inserts `base_layer` under the layers it adapts."""
    key = module_name.replace(".base_layer", "") + ".weight"
    return [key, key.split(".", 1)[1]] if "." in key else [key]
