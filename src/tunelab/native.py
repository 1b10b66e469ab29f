"""Settings of the native libraries under torch that tunelab makes for its own processes.

oneDNN, torch's CPU matrix-product library, generates a kernel for every new GEMM shape and keeps it in two
caches of 1024 entries each: ideep's (`LRU_CACHE_CAPACITY`) and oneDNN's primitive cache
(`ONEDNN_PRIMITIVE_CACHE_CAPACITY`). Training on batches of changing length brings new shapes every step, so the
caches fill step after step with memory that is never returned: ~10 MB per step for SmolLM2-135M, the creep under
full fine-tuning's peak (bench/results/heap_creep.md). A step needs a few dozen kernels (each linear layer's
shape, forward and backward), so 64 entries keep every hit within a step and bound the growth, at the same step
time (bench/results/memory_levers.md). Both variables are read when oneDNN first runs: they must be set before
the first matrix product, which importing tunelab does; values the user set are kept.
"""

from __future__ import annotations

import os

KERNEL_CACHE_ENTRIES = 64
KERNEL_CACHE_VARIABLES = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def bound_kernel_caches(entries: int = KERNEL_CACHE_ENTRIES) -> dict[str, str]:
    """Bound oneDNN's kernel caches unless the user already did; returns the values in effect."""
    for name in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(name, str(entries))
    return {name: os.environ[name] for name in KERNEL_CACHE_VARIABLES}
