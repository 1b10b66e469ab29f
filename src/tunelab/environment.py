"""What a result depends on besides the config: written into every metrics.json (`environment`), so a number
can be reproduced or its difference explained. bf16 results depend on the processor's bf16 kernels (oneDNN
picks AMX or AVX512-BF16 code with other rounding), so two CPUs of the same size can disagree in bf16 where
fp32 agrees; the thread count can change reduction order; the allocator changes memory, not results."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata
from typing import Any

_ISA_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2", "fma")
_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "rouge-score",
    "sacrebleu",
    "cmeel-mimalloc",
    "tunelab",
)


@lru_cache(maxsize=1)
def cpu_description() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": model, "isa": [f for f in _ISA_FLAGS if f in flags]}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe_environment(device, generation: str | None = None, training: str | None = None) -> dict[str, Any]:
    """Processor (model, ISA), accelerator, threads, library versions and the precisions used (`generation`,
    `training`: as configured, `auto` resolved for `device`)."""
    import torch

    from tunelab.allocator import active_allocator
    from tunelab.models.precision import resolve_precision

    env: dict[str, Any] = {
        "cpu": cpu_description(),
        "torch_threads": torch.get_num_threads(),
        "allocator": active_allocator(),
        "python": platform.python_version(),
        "packages": {p: v for p in _PACKAGES if (v := _version(p))},
    }
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    used = {name: resolve_precision(p, device) for name, p in (("training", training), ("generation", generation)) if p}
    if used:
        env["precision"] = used
    return env
