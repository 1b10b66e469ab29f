"""Training checkpoints that resume exactly.

A checkpoint folder `checkpoints/step-N/` holds:
    trainable.safetensors   the trainable parameters only (all of them for full fine-tuning; the
                            adapter for PEFT, so a LoRA checkpoint is megabytes, not the whole base)
    optimizer.pt            optimizer state keyed by parameter name (tensors and numbers; weights_only),
                            whole tensors also under FSDP, so a checkpoint resumes with or without it
    scheduler.pt            LR scheduler state (weights_only)
    rng.pt                  torch CPU/CUDA generator states (weights_only)
    state.json              step, epoch, batch position inside the epoch, loss history so far
It is written into a temporary folder and renamed, so a crash mid-write leaves the previous one intact.
Only tunelab's own checkpoints are loaded this way; no arbitrary pickles are read.
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
from tunelab.training.distributed import load_optimizer_state, load_trainable_state
from tunelab.testing import fault_point
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


def save_checkpoint(folder: Path, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any], scheduler,
                    state: TrainingState, keep_last: int = 2) -> Path:
    """Write a checkpoint from whole tensors (`whole_trainable_state`, `whole_optimizer_state`)."""
    final = folder / f"step-{state.step}"
    bad = non_finite_names(weights.items())
    if bad:
        raise TrainingError(f"refusing to write checkpoint {final}: non-finite values in {', '.join(bad)}")
    previous = latest_checkpoint(folder)
    kept = (f"the previous checkpoint {previous} is intact (free some space, then continue with --resume)"
            if previous else "no earlier checkpoint exists")
    with staged_dir(final, "checkpoint", kept) as stage:
        save_file(weights, str(stage / "trainable.safetensors"))
        torch.save(optimizer_state, stage / "optimizer.pt")
        fault_point("checkpoint-write", state.step)
        torch.save(scheduler.state_dict(), stage / "scheduler.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, stage / "rng.pt")
        (stage / "state.json").write_text(json.dumps({"step": state.step, "epoch": state.epoch,
                                                      "batch_in_epoch": state.batch_in_epoch,
                                                      "history": state.history}))
    for old in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name)) and (p / "state.json").is_file()]
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
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unexpected = [n for n in weights if n not in params]
    if missing or unexpected:
        raise TrainingError(f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    bad = non_finite_names(weights.items())
    if bad:
        from tunelab.training.finite import latest_finite_checkpoint

        good = latest_finite_checkpoint(path.parent)
        raise TrainingError(f"checkpoint {path} holds non-finite weights ({', '.join(bad)}); "
                            + (f"the last finite one is {good}: remove the newer ones to resume from it"
                               if good else "no finite checkpoint exists"))
    load_trainable_state(model, weights)
    load_optimizer_state(model, optimizer, torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    raw = json.loads((path / "state.json").read_text())
    return TrainingState(raw["step"], raw["epoch"], raw["batch_in_epoch"], raw["history"],
                         torch.load(path / "rng.pt", weights_only=True))
