"""The training loop, on `accelerate`.

Why an accelerate loop rather than `transformers.Trainer`: tunelab needs a few things inside the step
(length-grouped batches over pre-tokenized examples, token counts for throughput, peak-memory samples,
a hard stop on a non-finite loss) and stays small enough to read in one sitting; accelerate still
supplies device placement, mixed precision, gradient accumulation, DDP and FSDP (see distributed.py).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from tunelab.config.schema import TrainingConfig
from tunelab.data.collate import LengthGroupedBatches, TrainCollator, as_dataset
from tunelab.data.encoding import IGNORE_INDEX, Encoded
from tunelab.errors import TrainingError
from tunelab.methods import method_of
from tunelab.modeling import Arch, base_model
from tunelab.models.precision import autocast_dtype, resolve_precision
from tunelab.testing import fault_point
from tunelab.training.attention import check_matmul_attention, matmul_attention
from tunelab.training.dropout import decide_fast_dropout, fast_dropout_masks
from tunelab.training.packing import decide_padding_free, padding_free_attention
from tunelab.training.compiling import compiled_for_training, decide_compile
from tunelab.training.checkpoint import (
    TrainingState,
    load_best,
    load_checkpoint,
    restore_rng,
    save_best,
    save_checkpoint,
    save_sharded_checkpoint,
)
from tunelab.training.frozen import RoundedWeights, store_frozen_rounded
from tunelab.training.finite import all_finite, stop_message
from tunelab.training.distributed import (
    check_fsdp_supported,
    enable_fsdp,
    is_sharded,
    load_trainable_state,
    reshard,
    share_embedding_modules,
    whole_optimizer_state,
    whole_trainable_state,
)
from tunelab.training.loss import completion_loss
from tunelab.training.memory import PeakMemory, checkpointing_pays, release_freed_memory
from tunelab.training.regularization import AnchoredPenalty


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
    eval_generation: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, ROUGE F1s)
    selected: dict[str, Any] | None = None  # select_by: the metric, the step whose weights were kept, its value
    stopped_early_at: int | None = None
    gradient_checkpointing: bool = False  # as configured, or as `auto` chose
    compiled: bool = False  # training.compile as configured, or as `auto` chose
    frozen_weights: str = "fp32"  # how frozen linear weights were stored while training (training/frozen.py)
    matmul_attention: bool = False  # training.matmul_attention (training/attention.py)
    fast_dropout: bool = False  # training.fast_dropout as configured, or as `auto` chose (training/dropout.py)
    padding_free: bool = False  # training.padding_free as configured, or as `auto` chose (training/packing.py)

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


# Devices with torch's fused AdamW kernel (one pass over weights, gradients and both moments per tensor).
FUSED_ADAMW_DEVICES = frozenset({"cpu", "cuda"})


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused where the device has the kernel (as `transformers.Trainer`'s default `adamw_torch_fused`): the
    same update as torch's default forms (a loop over tensors on a CPU, foreach on others) up to rounding, and
    ~5x faster over 135M fp32 parameters on a 2-core CPU (`python bench/optimizer.py`, bench/results/optimizer.md)."""
    fused = True if device.type in FUSED_ADAMW_DEVICES else None  # None: torch's default form
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


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
def evaluation_loss(
    model: torch.nn.Module, loader: DataLoader, arch: Arch, accelerator: Accelerator | None = None
) -> float:
    """Mean token-level loss over a data set (each token weighs the same, whatever its batch or process)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for batch in loader:
        n = int((batch["labels"] != IGNORE_INDEX).sum())
        with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
            loss = float(completion_loss(model, batch, arch))
        sums += torch.tensor([loss * n, n], dtype=torch.float64)
    reshard(model)
    model.train(was_training)
    if accelerator is not None and accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    return float(sums[0]) / max(float(sums[1]), 1.0)


@dataclass
class LoopState:
    """Everything one training loop carries from step to step (and what a checkpoint restores)."""

    cfg: TrainingConfig
    arch: Arch
    accelerator: Accelerator
    model: torch.nn.Module
    forward_model: torch.nn.Module  # what a training step calls: the model, or its compiled copy (training.compile)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batches: LengthGroupedBatches
    loader: DataLoader
    eval_loader: DataLoader | None
    params: list[torch.nn.Parameter]
    total_steps: int
    regularizer: AnchoredPenalty | None
    checkpoint_dir: Path | None
    result: TrainResult
    memory: PeakMemory
    step: int = 0
    epoch: int = 0
    skip: int = 0  # micro-batches of the current epoch already consumed (a resumed run skips them)
    window: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "n": 0})  # losses since the last log
    pending_rng: dict[str, Any] | None = None  # a resumed run's RNG, restored once the epoch iterator exists
    writer: Any = None
    bar: Any = None
    t0: float = 0.0
    validate: Callable[[torch.nn.Module], dict[str, float]] | None = None  # generation scores on validation
    best: dict[str, Any] | None = None  # {"step", "value"} of the best evaluation so far (select_by)
    best_weights: dict[str, torch.Tensor] | None = None  # kept in memory when there is no checkpoint folder
    stale: int = 0  # evaluations since the best one (patience)
    rounded: RoundedWeights | None = None  # frozen weights stored in the compute precision, read back at the end


def train_model(
    model: torch.nn.Module,
    tokenizer,
    arch: Arch,
    train_set: Sequence[Encoded],
    eval_set: Sequence[Encoded] | None,
    cfg: TrainingConfig,
    *,
    seed: int,
    device: torch.device,
    log_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
    regularizer: AnchoredPenalty | None = None,
    show_progress: bool = True,
    validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    base_checkpoint: str | Path | None = None,
) -> TrainResult:
    """Train `model` in place. With `checkpoint_dir` and `cfg.save_every`, checkpoints are written every
    N optimizer steps; `resume_from` continues from one exactly (weights, optimizer, scheduler, RNG,
    data position and loss history), giving the same result as an uninterrupted run. `validate` scores
    generations on the validation set (every `cfg.eval_generate_every` steps); with `cfg.select_by` the model
    ends with the weights of the best evaluation, and `cfg.patience` stops training early. `base_checkpoint`
    (the base model's folder or hub id) is where frozen weights stored rounded are read back from
    (`cfg.frozen_weights`)."""
    state = _set_up(model, tokenizer, arch, train_set, eval_set, cfg, seed, device, checkpoint_dir, regularizer)
    state.validate = validate
    try:
        if base_checkpoint is not None:
            _round_frozen_weights(state, base_checkpoint)
        if resume_from is not None:
            _restore(state, resume_from)
        _start_logging(state, log_dir, resumed=resume_from is not None, show_progress=show_progress)
        with (
            matmul_attention(state.model, state.result.matmul_attention),
            fast_dropout_masks(state.model, state.result.fast_dropout),
            padding_free_attention(state.model, state.result.padding_free),
        ):
            while state.step < state.total_steps:
                _train_epoch(state)
        return _finish(state)
    finally:
        if state.rounded is not None:  # the base as loaded again, also when training stopped on an error
            state.rounded.restore()
            release_freed_memory()


def _round_frozen_weights(state: LoopState, base_checkpoint: str | Path) -> None:
    """`training.frozen_weights: auto`: frozen linear weights stored in the autocast precision (training/frozen.py)
    when one process trains under bf16/fp16 autocast and generates nothing during training (generation runs the
    plain model, outside autocast); the same losses, less memory."""
    dtype = autocast_dtype(state.result.precision)
    if state.cfg.frozen_weights != "auto" or dtype is None or state.accelerator.num_processes > 1 or state.validate:
        return
    state.rounded = store_frozen_rounded(state.accelerator.unwrap_model(state.model), dtype, base_checkpoint)
    if state.rounded is not None:
        state.result.frozen_weights = state.result.precision + (", whole base" if state.rounded.whole_base else "")


def _decide_checkpointing(
    model: torch.nn.Module, cfg: TrainingConfig, train_set: Sequence[Encoded], processes: int
) -> bool:
    """`training.gradient_checkpointing`: as configured, or for `auto` when it pays (training/memory.py), never for
    a method that recomputing would break."""
    method = method_of(model)
    supported = method is None or method.supports_gradient_checkpointing
    if cfg.gradient_checkpointing == "auto":
        micro_batch_tokens = cfg.batch_size * max(e.length for e in train_set) // max(processes, 1)
        return supported and checkpointing_pays(model, micro_batch_tokens)
    if cfg.gradient_checkpointing and not supported:
        raise TrainingError(
            f"training.gradient_checkpointing does not work with {method.name if method else 'this method'}: "
            "recomputing drops the key/value cache that carries the prefix; set it to false (or auto)"
        )
    return cfg.gradient_checkpointing


def _set_up(
    model: torch.nn.Module,
    tokenizer,
    arch: Arch,
    train_set: Sequence[Encoded],
    eval_set: Sequence[Encoded] | None,
    cfg: TrainingConfig,
    seed: int,
    device: torch.device,
    checkpoint_dir: Path | None,
    regularizer: AnchoredPenalty | None,
) -> LoopState:
    """Accelerator, length-grouped data loaders, optimizer and schedule, all prepared by accelerate."""
    if not train_set:
        raise TrainingError("the training set is empty")
    set_seed(seed)
    amp = mixed_precision(cfg, device)
    _fresh_accelerator_state(amp)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=amp,
        cpu=device.type == "cpu",
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    if enable_fsdp(accelerator, amp):
        check_fsdp_supported(model, regularizer is not None)
        share_embedding_modules(model)
    padding_free = decide_padding_free(cfg.padding_free, model, arch, accelerator.num_processes)
    collator = TrainCollator(tokenizer.pad_token_id, arch, padding_free)
    # split_batches: `batch_size` is the global batch; under DDP each process takes its slice of it.
    batches = LengthGroupedBatches([e.length for e in train_set], cfg.batch_size, seed, cfg.group_by_length)
    loader: DataLoader = DataLoader(as_dataset(train_set), batch_sampler=batches, collate_fn=collator)
    eval_loader = DataLoader(as_dataset(eval_set), batch_size=cfg.batch_size, collate_fn=collator) if eval_set else None

    total_steps = total_optimizer_steps(cfg, len(loader))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    checkpointing = _decide_checkpointing(model, cfg, train_set, accelerator.num_processes)
    if checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = build_optimizer(params, cfg, device)
    scheduler = get_scheduler(
        cfg.scheduler,
        optimizer,
        num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP replaces them with sharded ones
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    compiled = decide_compile(cfg.compile, model, device, total_steps, accelerator.num_processes)
    if cfg.matmul_attention:
        check_matmul_attention(model, arch)
    result = TrainResult(
        steps=0,
        epochs=0.0,
        seconds=0.0,
        precision=resolve_precision(cfg.precision, device),
        gradient_checkpointing=checkpointing,
        compiled=compiled,
        matmul_attention=cfg.matmul_attention,
        fast_dropout=decide_fast_dropout(cfg.fast_dropout, device),
        padding_free=padding_free,
    )
    return LoopState(
        cfg,
        arch,
        accelerator,
        model,
        compiled_for_training(model) if compiled else model,
        optimizer,
        scheduler,
        batches,
        loader,
        eval_loader,
        params,
        total_steps,
        regularizer,
        checkpoint_dir,
        result,
        PeakMemory(device),
    )


def _restore(state: LoopState, checkpoint: Path) -> None:
    """Continue exactly where a checkpoint left off: weights, optimizer, schedule, data position, history."""
    saved = load_checkpoint(checkpoint, state.accelerator.unwrap_model(state.model), state.optimizer, state.scheduler)
    state.step, state.epoch, state.skip, state.pending_rng = saved.step, saved.epoch, saved.batch_in_epoch, saved.rng
    h, result = saved.history, state.result
    result.train_loss = [tuple(x) for x in h["train_loss"]]
    result.eval_loss = [tuple(x) for x in h["eval_loss"]]
    result.completion_tokens, result.padded_tokens = h["completion_tokens"], h["padded_tokens"]
    result.seconds = h["seconds"]
    state.window = h["window"]
    result.eval_generation = [tuple(x) for x in h.get("eval_generation", [])]
    state.best, state.stale = h.get("best"), h.get("stale", 0)


def _start_logging(state: LoopState, log_dir: Path | None, resumed: bool, show_progress: bool) -> None:
    main = state.accelerator.is_main_process
    if log_dir is not None and main:
        from torch.utils.tensorboard import SummaryWriter

        state.writer = SummaryWriter(str(log_dir), purge_step=state.step + 1 if resumed else None)
    state.memory.reset()
    state.model.train()
    state.bar = tqdm(
        total=state.total_steps, initial=state.step, desc="train", unit="step", disable=not show_progress or not main
    )
    state.t0 = time.perf_counter() - state.result.seconds


def _train_epoch(state: LoopState) -> None:
    # accelerate's loader calls set_epoch(<its own iteration count>) on the batch sampler whenever it is
    # iterated, and that count restarts at 0 after a resume: set both to tunelab's epoch.
    state.loader.set_epoch(state.epoch)  # type: ignore[attr-defined]  # accelerate's DataLoaderShard
    state.batches.set_epoch(state.epoch)
    epoch_loader = state.accelerator.skip_first_batches(state.loader, state.skip) if state.skip else state.loader
    iterator = iter(epoch_loader)
    first = next(iterator, None)  # starting an epoch's iterator draws from the RNG (DataLoader seeding)
    if state.pending_rng is not None:  # so a resumed run restores the RNG after that draw, as it was saved
        restore_rng(state.pending_rng)
        state.pending_rng = None
    batch_in_epoch = state.skip
    for batch in itertools.chain([first] if first is not None else [], iterator):
        batch_in_epoch += 1
        _micro_step(state, batch)
        if state.accelerator.sync_gradients:
            _after_update(state, batch_in_epoch)
            if state.step >= state.total_steps:
                break
    state.epoch += 1
    state.skip = 0


def _micro_step(state: LoopState, batch: dict[str, torch.Tensor]) -> None:
    """Forward and backward on one micro-batch; the optimizer steps when accumulation is complete. Stops on
    a non-finite loss, gradient or weight before it can spread."""
    accelerator, cfg, params, step = state.accelerator, state.cfg, state.params, state.step
    # autocast around the loss, not only inside the model's forward (as accelerate patches it): the chunked loss
    # calls the backbone and projects the hidden states itself (training/loss.py)
    with accelerator.accumulate(state.model), accelerator.autocast():
        loss = completion_loss(state.forward_model, batch, state.arch)
        state.memory.sample()
        if not torch.isfinite(loss):
            raise TrainingError(
                stop_message(f"non-finite training loss ({loss.item()})", step + 1, state.checkpoint_dir)
            )
        accelerator.backward(loss)
        state.memory.sample()
        if accelerator.sync_gradients:
            if state.regularizer is not None:  # its gradient once per optimizer step, before clipping
                state.regularizer.add_to_gradients(accelerator.scaler.get_scale() if accelerator.scaler else 1.0)
            # a non-finite gradient would turn every weight it touches into NaN: stop before the step
            if cfg.max_grad_norm:
                norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                finite_grads = bool(torch.isfinite(norm))
            else:
                finite_grads = all_finite([p.grad for p in params if p.grad is not None], accelerator)
            if not finite_grads and accelerator.scaler is None:  # fp16's loss scaler skips such steps itself
                raise TrainingError(stop_message("non-finite gradient", step + 1, state.checkpoint_dir))
        state.optimizer.step()
        state.scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients and not all_finite(params, accelerator):
            raise TrainingError(stop_message("non-finite weights after the update", step + 1, state.checkpoint_dir))
    if accelerator.device.type == "cpu":  # CUDA has its own caching allocator
        release_freed_memory(collect=False)
    _count(state, batch, loss)


def _count(state: LoopState, batch: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
    """Loss for the log window and token counts, over all processes."""
    accelerator = state.accelerator
    padded = batch["input_ids"].numel() + (batch["labels"].numel() if state.arch == "seq2seq" else 0)
    stats = torch.tensor(
        [float(loss.detach()), float((batch["labels"] != IGNORE_INDEX).sum()), float(padded)], device=accelerator.device
    )
    if accelerator.num_processes > 1:  # loss: mean over processes; token counts: their sum
        stats = accelerator.reduce(stats, "sum") / torch.tensor(
            [accelerator.num_processes, 1, 1], device=accelerator.device
        )
    logged, completion, padded = stats.tolist()
    state.result.completion_tokens += int(completion)
    state.result.padded_tokens += int(padded)
    state.window["loss"] += logged
    state.window["n"] += 1


def _after_update(state: LoopState, batch_in_epoch: int) -> None:
    """After an optimizer step: log the loss window, validation loss and checkpoints when due."""
    cfg, result = state.cfg, state.result
    state.step += 1
    step = state.step
    state.bar.update(1)
    if step % cfg.log_every == 0 or step == state.total_steps:
        mean = state.window["loss"] / state.window["n"]
        lr = state.scheduler.get_last_lr()[0]
        result.train_loss.append((step, mean))
        state.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}")
        if state.writer:
            state.writer.add_scalar("train/loss", mean, step)
            state.writer.add_scalar("train/lr", lr, step)
        state.window = {"loss": 0.0, "n": 0}
    if state.eval_loader is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < state.total_steps:
        _log_eval_loss(state)
        _consider(state, "eval_loss", state.result.eval_loss[-1][1])
    if (
        state.validate is not None
        and cfg.eval_generate_every
        and step % cfg.eval_generate_every == 0
        and step < state.total_steps
    ):
        _log_generation(state)
    if cfg.save_every and (step % cfg.save_every == 0 or step == state.total_steps):
        _checkpoint(state, batch_in_epoch)  # the last step too: a run cut off while evaluating does not train again
    if cfg.patience and state.stale >= cfg.patience:
        state.result.stopped_early_at = step
        state.total_steps = step  # the loop ends after this step


def _log_eval_loss(state: LoopState) -> None:
    assert state.eval_loader is not None  # called only when there is a validation split
    state.result.eval_loss.append(
        (state.step, evaluation_loss(state.model, state.eval_loader, state.arch, state.accelerator))
    )
    if state.writer:
        state.writer.add_scalar("eval/loss", state.result.eval_loss[-1][1], state.step)


def _log_generation(state: LoopState) -> None:
    assert state.validate is not None  # called only when generation scoring is configured
    scores = state.validate(state.accelerator.unwrap_model(state.model))  # generate() lives on the plain model
    state.result.eval_generation.append((state.step, scores))
    if state.writer:
        for name, value in scores.items():
            state.writer.add_scalar(f"eval/{name}", value, state.step)
    if state.cfg.select_by in scores:
        _consider(state, state.cfg.select_by, scores[state.cfg.select_by])


def _consider(state: LoopState, metric: str, value: float) -> None:
    """Keep the weights of the best evaluation of `select_by` (lower loss, higher ROUGE is better)."""
    if metric != state.cfg.select_by:
        return
    better = state.best is None or (
        value < state.best["value"] if metric == "eval_loss" else value > state.best["value"]
    )
    if not better:
        state.stale += 1
        return
    state.best, state.stale = {"step": state.step, "value": value}, 0
    weights = whole_trainable_state(state.accelerator.unwrap_model(state.model))
    if state.checkpoint_dir is not None:  # on disk, so a resumed run selects from the same weights
        if state.accelerator.is_main_process:
            save_best(state.checkpoint_dir, weights)
        state.accelerator.wait_for_everyone()
    else:
        state.best_weights = {k: v.detach().clone() for k, v in weights.items()}


def _checkpoint(state: LoopState, batch_in_epoch: int) -> None:
    if state.checkpoint_dir is None:
        return
    result, accelerator = state.result, state.accelerator
    history = {
        "train_loss": result.train_loss,
        "eval_loss": result.eval_loss,
        "window": state.window,
        "completion_tokens": result.completion_tokens,
        "padded_tokens": result.padded_tokens,
        "seconds": time.perf_counter() - state.t0,
        "eval_generation": result.eval_generation,
        "best": state.best,
        "stale": state.stale,
    }
    unwrapped = accelerator.unwrap_model(state.model)
    position = TrainingState(state.step, state.epoch, batch_in_epoch, history)
    if is_sharded(unwrapped):  # each process writes its shards; nothing is gathered
        if not all_finite((p for p in unwrapped.parameters() if p.requires_grad), accelerator):
            raise TrainingError(f"refusing to write checkpoint step-{state.step}: non-finite trainable weights")
        save_sharded_checkpoint(
            state.checkpoint_dir, unwrapped, state.optimizer, state.scheduler, position, accelerator
        )
    else:
        weights, optimizer_state = whole_trainable_state(unwrapped), whole_optimizer_state(unwrapped, state.optimizer)
        if accelerator.is_main_process:
            save_checkpoint(state.checkpoint_dir, weights, optimizer_state, state.scheduler, position)
    accelerator.wait_for_everyone()
    fault_point("after-checkpoint", state.step)


def _finish(state: LoopState) -> TrainResult:
    """Final validation loss, the record, and the caller's model back as it was (no autocast wrapper)."""
    result = state.result
    result.seconds = time.perf_counter() - state.t0
    state.bar.close()
    if state.eval_loader is not None and (not result.eval_loss or result.eval_loss[-1][0] != state.step):
        _log_eval_loss(state)
        _consider(state, "eval_loss", result.eval_loss[-1][1])
    if (
        state.validate is not None
        and state.cfg.eval_generate_every
        and (not result.eval_generation or result.eval_generation[-1][0] != state.step)
    ):
        _log_generation(state)
    if state.writer:
        state.writer.close()
    result.steps = state.step
    result.epochs = state.step * state.cfg.grad_accum / max(len(state.loader), 1)
    result.memory = state.memory.as_dict()
    state.accelerator.wait_for_everyone()
    # accelerate patched forward() with autocast for mixed precision; restore the caller's model as it was.
    model = state.accelerator.unwrap_model(state.model, keep_fp32_wrapper=False)
    if result.gradient_checkpointing:
        disable_gradient_checkpointing(model)
    if state.cfg.select_by != "last" and state.best is not None:
        # in memory, or on disk when there is a checkpoint folder (`_consider`)
        weights = state.best_weights or load_best(cast(Path, state.checkpoint_dir))
        load_trainable_state(model, weights)
        result.selected = {"by": state.cfg.select_by, **state.best}
    return result
