"""Peak memory of the process: CUDA's max allocated on a GPU; on the CPU the kernel's resident-set high-water
mark (VmHWM), which catches every peak, reset at the start of each measured span by writing 5 to
/proc/self/clear_refs (Linux). Where that is not possible the RSS is sampled instead (and the record says so)."""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

import psutil
import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def high_water_mark() -> int | None:
    """The process's peak resident set since start or the last reset, in bytes (Linux), else None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_high_water_mark() -> bool:
    """Start a new peak: the high-water mark becomes the current RSS. False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return high_water_mark() is not None


def release_freed_memory(collect: bool = True) -> bool:
    """Hand memory that the allocator keeps after objects are freed back to the OS, so that the next phase, the next
    arm of a comparison, or the next training step starts from live memory instead of earlier leftovers.

    glibc keeps freed blocks for reuse, and batches of changing length leave them fragmented: the heap grows step
    after step (bench/results/memory_levers.md), so `malloc_trim(0)` runs at every call. mimalloc (tunelab's
    allocator where installed, tunelab/allocator.py) returns memory itself after its purge delay, so only a phase
    boundary (`collect`, which also runs a gc pass) forces it with `mi_collect(true)`; the per-step call
    (`collect=False`) leaves it be. False where nothing was done, or with TUNELAB_MALLOC_TRIM=0 (for side-by-side
    benches)."""
    import gc

    if collect:
        gc.collect()
    if os.environ.get("TUNELAB_MALLOC_TRIM", "1") == "0":
        return False
    mimalloc_collect = _mimalloc_collect()
    if mimalloc_collect is not None:
        if collect:
            mimalloc_collect(True)
        return collect
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    return bool(trim(0))


@lru_cache(maxsize=1)
def _mimalloc_collect():
    """mimalloc's `mi_collect(force)` where mimalloc is preloaded into this process, else None."""
    try:
        fn = ctypes.CDLL(None).mi_collect
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_bool]
    fn.restype = None
    return fn


class PeakMemory:
    """Peak memory from construction (or `reset`) to `as_dict`/`peak_rss`; each span starts by returning freed
    memory to the OS (`release_freed_memory`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._proc = psutil.Process()
        self.reset()

    def reset(self) -> None:
        release_freed_memory()
        self.exact = reset_high_water_mark()
        self.start_rss = self._proc.memory_info().rss
        self._sampled = self.start_rss
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def sample(self) -> None:
        """Only needed where the kernel's high-water mark is not available."""
        if not self.exact:
            self._sampled = max(self._sampled, self._proc.memory_info().rss)

    @property
    def peak_rss(self) -> int:
        self.sample()
        return (high_water_mark() or self._sampled) if self.exact else self._sampled

    def as_dict(self) -> dict[str, int | str]:
        peak = self.peak_rss
        out: dict[str, int | str] = {
            "peak_rss_bytes": peak,
            "rss_at_start_bytes": self.start_rss,
            "peak_rss_increase_bytes": peak - self.start_rss,
        }
        if self.device.type == "cuda":
            out["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
        out["measured"] = (
            "cuda max_memory_allocated"
            if self.device.type == "cuda"
            else "process peak RSS (kernel high-water mark)"
            if self.exact
            else "process RSS, sampled per step"
        )
        return out


class PhaseMemory:
    """Peak memory of consecutive phases of a run (load, evaluate, train, benchmarks): `end(name)` records the
    peak since the previous phase ended and starts the next."""

    def __init__(self, device: torch.device):
        self.phases: dict[str, dict[str, int | str]] = {}
        self._current = PeakMemory(device)

    def end(self, name: str) -> None:
        self.phases[name] = {k: v for k, v in self._current.as_dict().items() if k != "rss_at_start_bytes"}
        self._current.reset()

    def as_dict(self) -> dict[str, dict[str, int | str]]:
        return dict(self.phases)


# Saved activations per token, layer and hidden unit in a training step: ~66 bytes measured on SmolLM2-135M under
# bf16 autocast on a CPU (8 x 424 tokens, live memory with freed blocks returned; bench/results/memory_levers.md).
ACTIVATION_BYTES_PER_UNIT = 64
# Below this, activations are small enough that recomputing them (~1.3x step time) is not worth it.
CHECKPOINTING_FLOOR_BYTES = 512 * 2**20


def estimated_activation_bytes(model: torch.nn.Module, tokens_per_micro_batch: int) -> int:
    """What the forward pass of one micro-batch keeps for the backward pass, roughly."""
    from tunelab.modeling import base_model

    cfg = base_model(model).config

    def field(*names: str) -> int:
        return int(next((v for n in names if (v := getattr(cfg, n, None)) is not None), 0))

    hidden = field("hidden_size", "d_model")
    layers = field("num_hidden_layers", "num_layers") + field("num_decoder_layers")  # T5: encoder + decoder
    return int(tokens_per_micro_batch * layers * hidden * ACTIVATION_BYTES_PER_UNIT)


def training_state_bytes(model: torch.nn.Module) -> int:
    """Weights, plus gradients and AdamW's two moments (fp32) for the trainable ones."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return weights + trainable * 3 * 4


def checkpointing_pays(model: torch.nn.Module, tokens_per_micro_batch: int) -> bool:
    """`training.gradient_checkpointing: auto`: recompute activations when they would take more memory than
    the training state itself (weights, gradients, optimizer) and more than CHECKPOINTING_FLOOR_BYTES: then
    they dominate the peak, and checkpointing cuts it by half or more for ~1.3x step time."""
    activations = estimated_activation_bytes(model, tokens_per_micro_batch)
    return activations >= max(CHECKPOINTING_FLOOR_BYTES, training_state_bytes(model))
