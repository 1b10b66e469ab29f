"""Regional compilation of the training forward pass (`training.compile`).

Training steps run through a copy of the model whose repeated blocks (decoder layers, T5 blocks) are
`torch.compile`d ("regional compilation", as accelerate's `compile_regions`, which also compiles every other leaf
module and so breaks PEFT's prompt-learning modules): one block is compiled and every other block reuses it, so
compilation takes seconds rather than minutes. The copy shares every parameter with the model, which itself stays
uncompiled: evaluation, generation (whose KV cache would make a compiled block recompile) and saving see the plain
model. Inductor fuses the elementwise work between the matrix products (norms, rotary
embeddings, activations, autocast casts) and keeps fewer intermediates for the backward pass, so a step takes
less time and less memory (bench/results/compile.md).
"""

from __future__ import annotations

import os
import shutil
from types import MethodType
from typing import cast

import torch
from accelerate.utils.other import has_repeated_blocks, is_repeated_blocks

from tunelab.errors import TrainingError
from tunelab.methods import method_of

# `auto` compiles where compilation (~10-30 s for a 135M model on 2 CPU cores, once, plus once more when the batch
# length first changes) is repaid by faster steps: real models, runs of more than a handful of steps.
AUTO_MIN_PARAMETERS = 50_000_000
AUTO_MIN_STEPS = 20


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on a CPU (`$CXX`, else g++ or clang++ on PATH), or None."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++"]
    return next((found for c in candidates if (found := shutil.which(c))), None)


def _is_quantized(model: torch.nn.Module) -> bool:
    return any(type(m).__name__ in {"Linear4bit", "Linear8bitLt"} for m in model.modules())


def compile_problem(model: torch.nn.Module, device: torch.device, processes: int) -> str | None:
    """Why this training cannot be compiled, or None."""
    if processes > 1:
        return "not supported for training on several processes (DDP/FSDP) yet"
    if device.type not in {"cpu", "cuda"}:
        return f"not supported on device {device.type!r} (cpu and cuda are)"
    if device.type == "cpu" and cpp_compiler() is None:
        return "torch.compile needs a C++ compiler on a CPU ($CXX, g++ or clang++): none was found"
    if _is_quantized(model):
        return "not supported with a quantized base (bitsandbytes' layers)"
    method = method_of(model)
    if method is not None and not method.supports_compile:
        return f"not supported with {method.name} (its blocks cannot share one compiled graph)"
    if not has_repeated_blocks(model):
        return "the model has no repeated blocks to compile"
    return None


def decide_compile(
    setting: bool | str, model: torch.nn.Module, device: torch.device, total_steps: int, processes: int
) -> bool:
    """`training.compile`: False, True (an error naming the reason where it cannot), or `auto`: on where it pays
    (CPU, single process, a model of >= AUTO_MIN_PARAMETERS and >= AUTO_MIN_STEPS optimizer steps) and works."""
    if setting is False:
        return False
    problem = compile_problem(model, device, processes)
    if setting is True:
        if problem:
            raise TrainingError(f"training.compile: {problem}; set training.compile: false")
        return True
    parameters = sum(p.numel() for p in model.parameters())
    pays = device.type == "cpu" and parameters >= AUTO_MIN_PARAMETERS and total_steps >= AUTO_MIN_STEPS
    return pays and problem is None


def compiled_for_training(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose repeated blocks are compiled: modules on the way down to a block list are shallow
    copies, everything else (and every parameter and buffer) is shared with `model`, which stays as it was.
    Shapes become dynamic when the batch length first changes, so the blocks compile twice, not once per length.

    torch.compile keeps compiled versions of a function (a block's forward) for every model, precision and
    trainable set it met in the process, up to its recompile limit (8), after which the function runs eager: a
    notebook or a sweep training one model after another would soon train uncompiled. So each compiled training
    starts from cleared in-process caches (a model compiled elsewhere in the process compiles again when next
    called); inductor's on-disk cache keeps compiling again cheap."""
    torch._dynamo.reset()
    return _copy_with_compiled_blocks(model)


def _has_trainable_embedding(block: torch.nn.Module) -> bool:
    # Inductor's CPU backward of an embedding lookup (the gradient's scatter-add) corrupted the heap in torch 2.13:
    # full fine-tuning of T5, whose first block holds the trainable relative-position bias table, aborted in its
    # first backward pass. Such blocks (the first of T5's encoder and decoder) stay eager; the others compile.
    return any(isinstance(m, torch.nn.Embedding) and m.weight.requires_grad for m in block.modules())


def _copy_with_compiled_blocks(model: torch.nn.Module) -> torch.nn.Module:
    if isinstance(model, torch.nn.ModuleList) and is_repeated_blocks(model):
        return torch.nn.ModuleList(
            block if _has_trainable_embedding(block) else cast(torch.nn.Module, torch.compile(block, dynamic=None))
            for block in model
        )
    if not has_repeated_blocks(model):
        return model
    copy = model.__class__.__new__(model.__class__)
    copy.__dict__.update(model.__dict__)
    for name, value in model.__dict__.items():  # methods bound to the model (accelerate's autocast forward)
        if getattr(value, "__self__", None) is model and hasattr(value, "__func__"):
            copy.__dict__[name] = MethodType(value.__func__, copy)
    copy._modules = {
        name: child if child is None else _copy_with_compiled_blocks(child) for name, child in model._modules.items()
    }
    return copy
