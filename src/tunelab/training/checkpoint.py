"""Training checkpoints that resume exactly.

A checkpoint folder `checkpoints/step-N/` holds:
    trainable.safetensors   the trainable parameters only (all of them for full fine-tuning; the
                            adapter for PEFT, so a LoRA checkpoint is megabytes, not the whole base)
    optimizer.pt            optimizer state keyed by parameter name (tensors and numbers; weights_only)
    sharded/                under FSDP, instead of the two files above: the trainable parameters and the
                            optimizer state as `torch.distributed.checkpoint` shards, each process writing
                            its own slice (nothing is gathered onto one process); it resumes under FSDP on
                            any number of processes, or without FSDP (`load_sharded_state` reshards)
    scheduler.pt            LR scheduler state (weights_only)
    rng.pt                  torch CPU/CUDA generator states (weights_only)
    state.json              step, epoch, batch position inside the epoch, loss history so far
It is written into a temporary folder and renamed, so a crash mid-write leaves the previous one intact.
Only tunelab's own checkpoints are loaded this way; no arbitrary pickles are read (the sharded format
stores tensors and plain values; its metadata file is read by torch's own checkpoint reader).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunelab.errors import TrainingError
from tunelab.io import staged_dir
from tunelab.testing import fault_point
from tunelab.training.distributed import (
    SHARDED,
    load_optimizer_state,
    load_sharded_state,
    load_trainable_state,
    save_sharded_state,
)
from tunelab.training.finite import non_finite_names

_STEP = re.compile(r"^step-(\d+)$")


@dataclass
class TrainingState:
    step: int
    epoch: int
    batch_in_epoch: int  # micro-batches of the current epoch already consumed
    history: dict[str, Any]
    rng: dict[str, Any] | None = None  # applied by the loop once its data iterator exists


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(
    folder: Path,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler,
    state: TrainingState,
    keep_last: int = 2,
) -> Path:
    """Write a checkpoint from whole tensors (`whole_trainable_state`, `whole_optimizer_state`); main process only."""
    final = folder / f"step-{state.step}"
    bad = non_finite_names(weights.items())
    if bad:
        raise TrainingError(f"refusing to write checkpoint {final}: non-finite values in {', '.join(bad)}")
    with staged_dir(final, "checkpoint", _what_is_kept(folder)) as stage:
        save_file(weights, str(stage / "trainable.safetensors"))
        torch.save(optimizer_state, stage / "optimizer.pt")
        fault_point("checkpoint-write", state.step)
        _write_schedule_and_position(stage, scheduler, state)
    _prune(folder, keep_last)
    return final


def save_sharded_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler,
    state: TrainingState,
    accelerator,
    keep_last: int = 2,
) -> Path:
    """Write a checkpoint of an FSDP-sharded model: every process writes its own shards into the folder the
    main process stages (a collective: all processes call it). The caller has checked the weights are finite."""
    from accelerate.utils import broadcast_object_list

    final = folder / f"step-{state.step}"
    main = accelerator.is_main_process
    if main:
        with staged_dir(final, "checkpoint", _what_is_kept(folder)) as stage:
            broadcast_object_list([str(stage)])
            save_sharded_state(stage / SHARDED, model, optimizer)
            fault_point("checkpoint-write", state.step)
            _write_schedule_and_position(stage, scheduler, state)
        _prune(folder, keep_last)
    else:
        where: list[Any] = [None]
        broadcast_object_list(where)
        save_sharded_state(Path(where[0]) / SHARDED, model, optimizer)
    accelerator.wait_for_everyone()
    return final


def _what_is_kept(folder: Path) -> str:
    previous = latest_checkpoint(folder)
    return (
        f"the previous checkpoint {previous} is intact (free some space, then continue with --resume)"
        if previous
        else "no earlier checkpoint exists"
    )


def _write_schedule_and_position(stage: Path, scheduler, state: TrainingState) -> None:
    torch.save(scheduler.state_dict(), stage / "scheduler.pt")
    rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, stage / "rng.pt")
    (stage / "state.json").write_text(
        json.dumps(
            {"step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "history": state.history}
        )
    )


def _prune(folder: Path, keep_last: int) -> None:
    for old in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name)) and (p / "state.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    ckpts = list_checkpoints(folder)
    return ckpts[-1] if ckpts else None


def remove_incomplete(folder: Path) -> None:
    if folder.is_dir():
        for p in [*folder.glob(".step-*.tmp"), *folder.glob(".best.*.tmp")]:
            shutil.rmtree(p, ignore_errors=True)


BEST = "best"  # checkpoints/best/: the trainable weights of the best validation evaluation (training.select_by)


def save_best(folder: Path, weights: dict[str, torch.Tensor]) -> None:
    with staged_dir(folder / BEST, "best weights") as stage:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(stage / "trainable.safetensors"))


def load_best(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / BEST / "trainable.safetensors"
    if not path.is_file():
        raise TrainingError(f"{path} is missing: the best weights of this run cannot be restored")
    return load_file(str(path))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler) -> TrainingState:
    if (path / SHARDED).is_dir():
        load_sharded_state(path / SHARDED, model, optimizer)
    else:
        _load_whole(path, model, optimizer)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    raw = json.loads((path / "state.json").read_text())
    return TrainingState(
        raw["step"], raw["epoch"], raw["batch_in_epoch"], raw["history"], torch.load(path / "rng.pt", weights_only=True)
    )


def _load_whole(path: Path, model: torch.nn.Module, optimizer) -> None:
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unexpected = [n for n in weights if n not in params]
    if missing or unexpected:
        raise TrainingError(
            f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    bad = non_finite_names(weights.items())
    if bad:
        from tunelab.training.finite import latest_finite_checkpoint

        good = latest_finite_checkpoint(path.parent)
        raise TrainingError(
            f"checkpoint {path} holds non-finite weights ({', '.join(bad)}); "
            + (
                f"the last finite one is {good}: remove the newer ones to resume from it"
                if good
                else "no finite checkpoint exists"
            )
        )
    load_trainable_state(model, weights)
    load_optimizer_state(model, optimizer, torch.load(path / "optimizer.pt", weights_only=True))
