"""FSDP (fully sharded data parallel) on accelerate, and whole tensors out of a sharded model.

tunelab uses FSDP2 (`torch.distributed.fsdp.fully_shard`) as accelerate prepares it. Two additions:

* accelerate turns FSDP on only for accelerators; on CPU it silently falls back to DDP. torch's FSDP2
  runs on CPU with gloo, so when a launch asks for FSDP (`ACCELERATE_USE_FSDP=true`, set by
  `accelerate launch --config_file configs/accelerate/fsdp_cpu.yaml`) tunelab switches the accelerator
  state to FSDP there. This is how FSDP is tested on CPU; on GPUs accelerate does it itself.
* A sharded model's parameters are DTensors, each process holding a slice. Training checkpoints stay
  sharded (`save_sharded_state`: torch.distributed.checkpoint, each process writes its slices); the
  final artefacts (saved model or adapter) need whole tensors: `whole_trainable_state` gathers them.
  Every process must call these (they are collectives); only the main process writes whole tensors.

After training the model stays sharded: evaluation runs on all processes in lockstep (generation
with `synced_gpus`), so a model too large for one device never has to be whole on one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from tunelab.errors import TrainingError
from tunelab.modeling import base_model


def is_sharded(model: torch.nn.Module) -> bool:
    """True when FSDP shards the model's parameters over processes."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def reshard(model: torch.nn.Module) -> None:
    """Return FSDP modules to their sharded parameters. FSDP2 keeps the root module's parameters whole
    after a forward pass that no backward follows (evaluation); state-dict and optimizer code expects
    the sharded ones."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def unshard_root(model: torch.nn.Module) -> None:
    """Gather the parameters FSDP keeps in the root group (embeddings, final norms). `generate` of a
    seq2seq model calls the encoder directly, bypassing the root's forward hook that would gather
    them; the per-layer groups still gather themselves as they run. Undone by `reshard`."""
    from torch.distributed.fsdp import FSDPModule

    root = next((m for m in model.modules() if isinstance(m, FSDPModule)), None)
    if root is not None:
        root.unshard()


def fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp(accelerator: Accelerator, mixed_precision: str) -> bool:
    """Make the accelerator shard with FSDP2 when the launch asked for FSDP; returns whether FSDP is on."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    state = accelerator.state
    if state.distributed_type == DistributedType.MULTI_CPU and fsdp_requested():
        plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* environment variables
        if mixed_precision != "no":
            plugin.set_mixed_precision(mixed_precision)
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = plugin
    if state.distributed_type != DistributedType.FSDP:
        return False
    if state.fsdp_plugin.fsdp_version != 2:
        raise TrainingError(
            "tunelab supports FSDP version 2 only: set `fsdp_version: 2` in the accelerate config "
            "(see configs/accelerate/fsdp.yaml)"
        )
    return True


def check_fsdp_supported(model: torch.nn.Module, has_regularizer: bool) -> None:
    """FSDP covers full fine-tuning and the PEFT methods that keep the model's own generate (LoRA, IA3)."""
    peft_cfg = getattr(model, "active_peft_config", None)
    if peft_cfg is not None and peft_cfg.is_prompt_learning:
        raise TrainingError(
            f"FSDP is not supported with {peft_cfg.peft_type.value.lower()}: its parameters are a few "
            "thousand, so use data-parallel training (configs/accelerate/ddp_*.yaml)"
        )
    if any(type(m).__name__ == "Linear4bit" for m in model.modules()):
        raise TrainingError("FSDP is not supported with QLoRA's 4-bit base in tunelab; use data-parallel training")
    if has_regularizer:
        raise TrainingError(
            "training.regularization (L2-SP / EWC) is not supported under FSDP: its reference "
            "weights would have to be sharded like the model; use data-parallel training"
        )


def share_embedding_modules(model: torch.nn.Module) -> None:
    """Seq2seq models (T5) use one embedding matrix in three Embedding modules (shared, encoder and
    decoder embed_tokens). FSDP2 shards per module and refuses a parameter seen by two groups, so the
    three names are pointed at one module: same weight, same forward, one FSDP group."""
    base = base_model(model)
    shared = base.get_input_embeddings()
    for stack in (getattr(base, "encoder", None), getattr(base, "decoder", None)):
        embed = getattr(stack, "embed_tokens", None)
        if (
            stack is not None
            and embed is not None
            and embed is not shared
            and getattr(embed, "weight", None) is shared.weight
        ):
            stack.embed_tokens = shared


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def whole_trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters as whole CPU tensors (a collective under FSDP)."""
    return {n: _full(p.detach()).cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def whole_model_state(model: torch.nn.Module) -> dict[str, Any]:
    """The whole state dict on the main process (a collective under FSDP; other processes get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wrapper


def whole_optimizer_state(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """Optimizer state keyed by parameter name, whole tensors, on the main process (a collective under
    FSDP). The same format with and without FSDP, so a checkpoint resumes under either."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, _inner(optimizer), options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_trainable_state(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into the (possibly sharded) trainable parameters; each process keeps its slice."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            p = params[name]
            if isinstance(p, DTensor):
                tensor = distribute_tensor(tensor.to(p.dtype), p.device_mesh, p.placements)
            p.copy_(tensor)


def load_optimizer_state(model: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if any(isinstance(k, int) for k in state.get("state", {})):
        raise TrainingError(
            "the checkpoint's optimizer state is keyed by position (torch's Optimizer.state_dict(); "
            "tunelab's checkpoints key it by parameter name since FSDP support), so it cannot be "
            "matched to the parameters: start the run again"
        )
    set_optimizer_state_dict(
        model, _inner(optimizer), optim_state_dict=state, options=StateDictOptions(full_state_dict=is_sharded(model))
    )


SHARDED = "sharded"  # a checkpoint's torch.distributed.checkpoint folder under FSDP


def _trainable_model_state(model: torch.nn.Module) -> dict[str, Any]:
    """The trainable entries of the model's state dict, sharded as the model is (DTensors under FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in get_model_state_dict(model).items() if k in trainable}


def save_sharded_state(folder: Path, model: torch.nn.Module, optimizer: Any) -> None:
    """Trainable parameters and optimizer state as torch.distributed.checkpoint shards: each process writes
    its own slices, so no process ever holds the whole state (a collective under FSDP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save(
        {"model": _trainable_model_state(model), "optim": get_optimizer_state_dict(model, _inner(optimizer))},
        checkpoint_id=str(folder),
    )


def load_sharded_state(folder: Path, model: torch.nn.Module, optimizer: Any) -> None:
    """Load `save_sharded_state`'s shards into the model and optimizer as they are sharded now: under FSDP
    on any number of processes, or whole in one process (torch's loader reshards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    inner = _inner(optimizer)
    weights, optim = _trainable_model_state(model), get_optimizer_state_dict(model, inner)
    try:
        dcp.load({"model": weights, "optim": optim}, checkpoint_id=str(folder))  # fills both in place
    except Exception as e:  # torch raises CheckpointException, listing every rank's failure
        raise TrainingError(f"checkpoint {folder.parent} does not match the model or cannot be read: {e}") from None
    set_model_state_dict(model, weights, options=StateDictOptions(strict=False))
    set_optimizer_state_dict(model, inner, optim_state_dict=optim)


def read_sharded_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The whole trainable weights of a sharded checkpoint, in one process (for checks and inspection)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = FileSystemReader(str(folder))
    meta = reader.read_metadata().state_dict_metadata
    weights = {
        k: torch.empty(m.size, dtype=m.properties.dtype)
        for k, m in meta.items()
        if k.startswith("model.") and isinstance(m, TensorStorageMetadata)
    }
    dcp.load(weights, storage_reader=reader)
    return {k.removeprefix("model."): v for k, v in weights.items()}
