"""The training loop, on `accelerate`.

Why an accelerate loop rather than `transformers.Trainer`: tunelab needs a few things inside the step
(length-grouped batches over pre-tokenized examples, token counts for throughput, peak-memory samples,
a hard stop on a non-finite loss) and stays small enough to read in one sitting; accelerate still
supplies device placement, mixed precision, gradient accumulation, DDP and FSDP (see distributed.py).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from tunelab.config.schema import TrainingConfig
from tunelab.data.collate import LengthGroupedBatches, TrainCollator
from tunelab.data.encoding import IGNORE_INDEX, Encoded
from tunelab.errors import TrainingError
from tunelab.modeling import Arch, base_model
from tunelab.models.precision import resolve_precision
from tunelab.testing import fault_point
from tunelab.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from tunelab.training.finite import all_finite, stop_message
from tunelab.training.distributed import (
    check_fsdp_supported,
    enable_fsdp,
    reshard,
    share_embedding_modules,
    whole_optimizer_state,
    whole_trainable_state,
)
from tunelab.training.loss import completion_loss
from tunelab.training.memory import PeakMemory


@dataclass
class TrainResult:
    steps: int
    epochs: float
    seconds: float
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last log)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    completion_tokens: int = 0
    padded_tokens: int = 0
    memory: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["completion_tokens_per_second"] = self.tokens_per_second
        d["padded_tokens_per_second"] = self.padded_tokens / self.seconds if self.seconds else 0.0
        d["seconds_per_step"] = self.seconds / self.steps if self.steps else None
        return d


def mixed_precision(cfg: TrainingConfig, device: torch.device) -> str:
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[resolve_precision(cfg.precision, device)]


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    base = base_model(model)
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # with a frozen embedding the checkpointed blocks would get inputs without grad: make them require it
    if hasattr(base, "enable_input_require_grads"):
        base.enable_input_require_grads()


def disable_gradient_checkpointing(model: torch.nn.Module) -> None:
    base = base_model(model)
    (getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable)()


def _fresh_accelerator_state(precision: str) -> None:
    """accelerate keeps one process-wide AcceleratorState and refuses a second Accelerator with another
    mixed precision; a notebook or a comparison trains several models in one process, so the
    (non-distributed) state is reset between trainings. The process group itself is kept."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def total_optimizer_steps(cfg: TrainingConfig, batches_per_epoch: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * batches_per_epoch / cfg.grad_accum))


@torch.no_grad()
def evaluation_loss(model: torch.nn.Module, loader: DataLoader, arch: Arch,
                    accelerator: Accelerator | None = None) -> float:
    """Mean token-level loss over a data set (each token weighs the same, whatever its batch or process)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for batch in loader:
        n = int((batch["labels"] != IGNORE_INDEX).sum())
        sums += torch.tensor([float(completion_loss(model, batch, arch)) * n, n], dtype=torch.float64)
    reshard(model)
    model.train(was_training)
    if accelerator is not None and accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    return float(sums[0] / max(sums[1], 1))


def train_model(model: torch.nn.Module, tokenizer, arch: Arch, train_set: Sequence[Encoded],
                eval_set: Sequence[Encoded] | None, cfg: TrainingConfig, *, seed: int, device: torch.device,
                log_dir: Path | None = None, checkpoint_dir: Path | None = None, resume_from: Path | None = None,
                regularizer: Callable[[], torch.Tensor] | None = None,
                show_progress: bool = True) -> TrainResult:
    """Train `model` in place. With `checkpoint_dir` and `cfg.save_every`, checkpoints are written every
    N optimizer steps; `resume_from` continues from one exactly (weights, optimizer, scheduler, RNG,
    data position and loss history), giving the same result as an uninterrupted run."""
    if not train_set:
        raise TrainingError("the training set is empty")
    set_seed(seed)
    amp = mixed_precision(cfg, device)
    _fresh_accelerator_state(amp)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=amp,
                              cpu=device.type == "cpu", dataloader_config=DataLoaderConfiguration(split_batches=True))
    if enable_fsdp(accelerator, amp):
        check_fsdp_supported(model, regularizer is not None)
        share_embedding_modules(model)
    collator = TrainCollator(tokenizer.pad_token_id, arch)
    # split_batches: `batch_size` is the global batch; under DDP each process takes its slice of it.
    batches = LengthGroupedBatches([e.length for e in train_set], cfg.batch_size, seed, cfg.group_by_length)
    loader = DataLoader(list(train_set), batch_sampler=batches, collate_fn=collator)
    eval_loader = (DataLoader(list(eval_set), batch_size=cfg.batch_size, collate_fn=collator) if eval_set else None)

    total_steps = total_optimizer_steps(cfg, len(loader))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP replaces them with sharded ones
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    result = TrainResult(steps=0, epochs=0.0, seconds=0.0, precision=resolve_precision(cfg.precision, device))
    step, epoch, skip = 0, 0, 0
    window = {"loss": 0.0, "n": 0}
    pending_rng = None
    if resume_from is not None:
        state = load_checkpoint(resume_from, accelerator.unwrap_model(model), optimizer, scheduler)
        step, epoch, skip, pending_rng = state.step, state.epoch, state.batch_in_epoch, state.rng
        h = state.history
        result.train_loss = [tuple(x) for x in h["train_loss"]]
        result.eval_loss = [tuple(x) for x in h["eval_loss"]]
        result.completion_tokens, result.padded_tokens = h["completion_tokens"], h["padded_tokens"]
        result.seconds = h["seconds"]
        window = h["window"]

    writer = None
    if log_dir is not None and accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir), purge_step=step + 1 if resume_from is not None else None)
    memory = PeakMemory(device)
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step",
               disable=not show_progress or not accelerator.is_main_process)
    t0 = time.perf_counter() - result.seconds

    def checkpoint(batch_in_epoch: int) -> None:
        if checkpoint_dir is None:
            return
        history = {"train_loss": result.train_loss, "eval_loss": result.eval_loss, "window": window,
                   "completion_tokens": result.completion_tokens, "padded_tokens": result.padded_tokens,
                   "seconds": time.perf_counter() - t0}
        unwrapped = accelerator.unwrap_model(model)
        weights, optimizer_state = whole_trainable_state(unwrapped), whole_optimizer_state(unwrapped, optimizer)
        if accelerator.is_main_process:
            save_checkpoint(checkpoint_dir, weights, optimizer_state, scheduler,
                            TrainingState(step, epoch, batch_in_epoch, history))
        accelerator.wait_for_everyone()
        fault_point("after-checkpoint", step)

    while step < total_steps:
        # accelerate's loader calls set_epoch(<its own iteration count>) on the batch sampler whenever it is
        # iterated, and that count restarts at 0 after a resume: set both to tunelab's epoch.
        loader.set_epoch(epoch)
        batches.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        iterator = iter(epoch_loader)
        first = next(iterator, None)  # starting an epoch's iterator draws from the RNG (DataLoader seeding)
        if pending_rng is not None:  # so a resumed run restores the RNG after that draw, as it was saved
            restore_rng(pending_rng)
            pending_rng = None
        batch_in_epoch = skip
        for batch in itertools.chain([first] if first is not None else [], iterator):
            batch_in_epoch += 1
            with accelerator.accumulate(model):
                loss = completion_loss(model, batch, arch)
                memory.sample()
                if not torch.isfinite(loss):
                    raise TrainingError(stop_message(f"non-finite training loss ({loss.item()})", step + 1,
                                                     checkpoint_dir))
                total = loss + regularizer() if regularizer is not None else loss
                accelerator.backward(total)
                memory.sample()
                if accelerator.sync_gradients:
                    # a non-finite gradient would turn every weight it touches into NaN: stop before the step
                    if cfg.max_grad_norm:
                        norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                        finite_grads = bool(torch.isfinite(norm))
                    else:
                        finite_grads = all_finite([p.grad for p in params if p.grad is not None], accelerator)
                    if not finite_grads and accelerator.scaler is None:  # fp16's loss scaler skips such steps itself
                        raise TrainingError(stop_message("non-finite gradient", step + 1, checkpoint_dir))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients and not all_finite(params, accelerator):
                    raise TrainingError(stop_message("non-finite weights after the update", step + 1,
                                                     checkpoint_dir))
            padded = batch["input_ids"].numel() + (batch["labels"].numel() if arch == "seq2seq" else 0)
            stats = torch.tensor([float(loss.detach()), float((batch["labels"] != IGNORE_INDEX).sum()), float(padded)],
                                 device=accelerator.device)
            if accelerator.num_processes > 1:  # loss: mean over processes; token counts: their sum
                stats = accelerator.reduce(stats, "sum") / torch.tensor([accelerator.num_processes, 1, 1],
                                                                       device=accelerator.device)
            logged, completion, padded = stats.tolist()
            result.completion_tokens += int(completion)
            result.padded_tokens += int(padded)
            window["loss"] += logged
            window["n"] += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == total_steps:
                mean = window["loss"] / window["n"]
                result.train_loss.append((step, mean))
                bar.set_postfix(loss=f"{mean:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if writer:
                    writer.add_scalar("train/loss", mean, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                window = {"loss": 0.0, "n": 0}
            if eval_loader is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                result.eval_loss.append((step, evaluation_loss(model, eval_loader, arch, accelerator)))
                if writer:
                    writer.add_scalar("eval/loss", result.eval_loss[-1][1], step)
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                checkpoint(batch_in_epoch)
            if step >= total_steps:
                break
        epoch += 1
        skip = 0
    result.seconds = time.perf_counter() - t0
    bar.close()
    if eval_loader is not None:
        result.eval_loss.append((step, evaluation_loss(model, eval_loader, arch, accelerator)))
        if writer:
            writer.add_scalar("eval/loss", result.eval_loss[-1][1], step)
    if writer:
        writer.close()
    result.steps = step
    result.epochs = step * cfg.grad_accum / max(len(loader), 1)
    result.memory = memory.as_dict()
    accelerator.wait_for_everyone()
    # accelerate patched forward() with autocast for mixed precision; restore the caller's model as it was.
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if cfg.gradient_checkpointing:
        disable_gradient_checkpointing(model)
    return result
