"""Finiteness guards: no optimizer step is taken on a non-finite gradient, and no checkpoint or artefact
is written from non-finite weights."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def all_finite(tensors: Iterable[torch.Tensor], accelerator=None) -> bool:
    """True when every value of every tensor is finite; under data parallelism (sharded tensors), on every process."""
    maxima = [_local(t).detach().abs().amax().float() for t in tensors if _local(t).numel()]
    ok = torch.stack(maxima).isfinite().all() if maxima else torch.tensor(True)
    if accelerator is not None and accelerator.num_processes > 1:
        bad = accelerator.reduce((~ok).float().reshape(1).to(accelerator.device), "sum")
        return bool(bad.item() == 0)
    return bool(ok)


def non_finite_names(named: Iterable[tuple[str, torch.Tensor]], limit: int = 3) -> list[str]:
    return [name for name, t in named if not bool(torch.isfinite(t).all())][:limit]


def checkpoint_is_finite(path: Path) -> bool:
    from safetensors import safe_open

    from tunelab.training.distributed import SHARDED, read_sharded_weights

    if (path / SHARDED).is_dir():
        return all(bool(torch.isfinite(t).all()) for t in read_sharded_weights(path / SHARDED).values())
    with safe_open(str(path / "trainable.safetensors"), framework="pt") as f:
        return all(bool(torch.isfinite(f.get_tensor(k)).all()) for k in f.keys())


def latest_finite_checkpoint(folder: Path | None) -> Path | None:
    """The newest checkpoint whose weights are all finite (older tunelab versions could write NaN ones)."""
    from tunelab.training.checkpoint import list_checkpoints

    if folder is None:
        return None
    for ckpt in reversed(list_checkpoints(folder)):
        if checkpoint_is_finite(ckpt):
            return ckpt
    return None


def stop_message(what: str, step: int, checkpoint_dir: Path | None) -> str:
    last = latest_finite_checkpoint(checkpoint_dir)
    where = (
        f"; last finite checkpoint: {last} (continue from it with --resume, e.g. with a lower training.lr)"
        if last
        else "; no finite checkpoint was written before it"
    )
    return f"{what} at optimizer step {step}; training stopped, nothing was saved from it{where}"
