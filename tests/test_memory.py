"""Peak memory is the kernel's high-water mark per phase, and a finished run leaves no model alive."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from conftest import experiment
from tunelab.training.memory import PeakMemory, PhaseMemory, reset_high_water_mark

needs_hwm = pytest.mark.skipif(not reset_high_water_mark(), reason="no resettable VmHWM (Linux /proc/self/clear_refs)")
MiB = 2**20


@needs_hwm
def test_a_short_peak_between_samples_is_caught_and_each_phase_has_its_own():
    phases = PhaseMemory(torch.device("cpu"))
    block = np.ones(300 * MiB, dtype=np.uint8)  # touched: resident
    del block  # freed before anything could sample it
    phases.end("spike")
    phases.end("quiet")
    spike, quiet = phases.as_dict()["spike"], phases.as_dict()["quiet"]
    assert spike["peak_rss_increase_bytes"] > 250 * MiB
    assert quiet["peak_rss_bytes"] < spike["peak_rss_bytes"] - 250 * MiB
    assert spike["measured"] == "process peak RSS (kernel high-water mark)"


@needs_hwm
def test_peak_memory_reset_starts_a_new_span():
    peak = PeakMemory(torch.device("cpu"))
    block = np.ones(200 * MiB, dtype=np.uint8)
    del block
    first = peak.peak_rss
    peak.reset()
    assert peak.peak_rss < first - 150 * MiB


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux only")
@pytest.mark.parametrize("trim", ["1", "0"])
def test_freed_memory_goes_back_to_the_os_between_phases(trim, monkeypatch):
    """glibc keeps freed heap blocks (here 250 MiB of 64 KiB blocks under a live one); a new span hands them back,
    so the next phase's peak counts its own memory (unless switched off for a side-by-side bench)."""
    from tunelab.training.memory import release_freed_memory

    monkeypatch.setenv("TUNELAB_MALLOC_TRIM", trim)
    process = psutil.Process()
    blocks = [bytearray(b"\1" * 65536) for _ in range(4000)]
    pinned = blocks[-1]  # keeps the top of the heap in use: glibc's automatic trim cannot shrink it
    del blocks
    held = process.memory_info().rss
    release_freed_memory()
    returned = held - process.memory_info().rss
    assert returned > 200 * MiB if trim == "1" else returned < 50 * MiB
    del pinned


def _live_models() -> int:
    from transformers import PreTrainedModel

    gc.collect()
    return sum(isinstance(o, PreTrainedModel) for o in gc.get_objects())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_finetune_records_phase_memory_and_leaves_no_model_alive(compiled, tiny_llama_dir, dialogue_files, tmp_path):
    """A comparison runs its arms in one process: nothing of a finished arm may stay alive into the next (nor
    held by the compiler's caches when training was compiled)."""
    from tunelab import build_config, finetune

    alive = _live_models()
    resident_before = psutil.Process().memory_info().rss
    training = {"max_steps": 2, "batch_size": 4, "compile": compiled}
    result = finetune(
        build_config(experiment(tiny_llama_dir, dialogue_files, tmp_path, training=training)),
        show_progress=False,
        echo=None,
    )
    assert result.metrics["training"]["compiled"] is compiled
    assert _live_models() == alive
    phases = result.metrics["memory_phases"]
    assert list(phases) == ["load", "evaluate_before", "train", "evaluate_after"]
    # each phase's high-water mark covers at least what was resident before the run (in bytes, not kB)
    assert all(p["peak_rss_bytes"] >= 0.9 * resident_before for p in phases.values()), (resident_before, phases)


def _smollm2_shaped(trainable: bool):
    """SmolLM2-135M's shape on the meta device (no weights allocated)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.requires_grad_(trainable)
    return model


@pytest.mark.parametrize("trainable", [False, True], ids=["peft-like", "full"])
def test_auto_checkpointing_turns_on_where_activations_dominate(trainable):
    from tunelab.training.memory import checkpointing_pays, estimated_activation_bytes, training_state_bytes

    model = _smollm2_shaped(trainable)
    demo_batch = 8 * 424  # the demo's micro-batch: activations ~3.7 GB against a training state of 0.5-2.2 GB
    assert estimated_activation_bytes(model, demo_batch) > training_state_bytes(model)
    assert checkpointing_pays(model, demo_batch)
    assert not checkpointing_pays(model, 1 * 64)  # a few tokens: not worth recomputing
    state = training_state_bytes(model)
    assert state == pytest.approx((134.5e6 * 4) * (4 if trainable else 1), rel=0.01)


def test_auto_checkpointing_is_applied_recorded_and_undone(tiny_llama_dir, dialogue_files, tmp_path, monkeypatch):
    import tunelab.training.loop as loop
    from tunelab import build_config, finetune

    seen = []
    monkeypatch.setattr(loop, "checkpointing_pays", lambda model, tokens: seen.append(tokens) or True)
    tree = experiment(tiny_llama_dir, dialogue_files, tmp_path, training={"max_steps": 2, "batch_size": 4})
    result = finetune(build_config(tree), show_progress=False, echo=None)
    assert result.metrics["training"]["gradient_checkpointing"] is True and seen and seen[0] > 0
    tree["training"]["gradient_checkpointing"] = False  # an explicit choice is never overridden
    tree["name"] = "explicit"
    again = finetune(build_config(tree), show_progress=False, echo=None)
    assert again.metrics["training"]["gradient_checkpointing"] is False and len(seen) == 1


def test_training_hands_freed_memory_back_after_every_micro_batch_on_cpu(tiny_llama_dir, monkeypatch):
    """Batches of changing length fragment glibc's heap step after step; each micro-batch's freed activations
    go back to the OS before the next (without a gc pass per step)."""
    import tunelab.training.loop as loop
    from tunelab import build_config
    from tunelab.data import Example, PromptEncoder, TemplateSet
    from tunelab.data.encoding import encode_training_set
    from tunelab.methods import ModelContext, get_method
    from tunelab.models import load_model

    calls: list[bool] = []
    monkeypatch.setattr(loop, "release_freed_memory", lambda collect=True: calls.append(collect) or True)
    cfg = build_config({"model": {"name": str(tiny_llama_dir)}, "method": {"name": "lora", "r": 4},
                        "training": {"max_steps": 3, "batch_size": 2, "grad_accum": 2}})  # fmt: skip
    loaded = load_model(cfg.model, device=torch.device("cpu"))
    templates = TemplateSet("dialogue_summarization")
    encoder = PromptEncoder(loaded.tokenizer, "causal", False, 48, 12)
    dialogues = [Example(str(i), f"#Person1#: order {i} is {'very ' * i}late. #Person2#: sorry.", (f"order {i}",))
                 for i in range(16)]  # fmt: skip
    train = encode_training_set(encoder, dialogues, [templates.eval] * len(dialogues))
    model = get_method("lora").prepare(loaded.model, cfg.method, ModelContext("causal", str(tiny_llama_dir), ""))
    loop.train_model(model, loaded.tokenizer, "causal", train, None, cfg.training, seed=0,
                     device=torch.device("cpu"), show_progress=False)  # fmt: skip
    assert calls == [False] * 6  # 3 optimizer steps x 2 micro-batches


_KERNEL_CACHE_PROBE = """
import ctypes, os, sys
import torch
import tunelab  # bounds oneDNN's kernel caches unless the environment already set them
lin = torch.nn.Linear(256, 512)
def shapes(start, stop):
    for rows in range(start, stop):
        x = torch.randn(rows, 256, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lin(x).float().sum().backward()
def rss():
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
shapes(100, 110)
before = rss()
shapes(110, 190)
print(os.environ["LRU_CACHE_CAPACITY"], os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], rss() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="Linux only")
def test_kernels_for_new_matrix_shapes_stop_accumulating():
    """Batches of changing length bring new GEMM shapes every step; oneDNN keeps a kernel per shape (1024 by
    default). Importing tunelab bounds its caches (tunelab/native.py), so 80 new shapes leave far less behind,
    and a user's own setting is kept."""
    import os
    import subprocess
    import sys

    from tunelab.native import KERNEL_CACHE_VARIABLES

    def growth(extra_env: dict[str, str]) -> tuple[str, str, int]:
        env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARIABLES}
        out = subprocess.run(
            [sys.executable, "-c", _KERNEL_CACHE_PROBE], env={**env, **extra_env}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        ideep, onednn, grown = out.stdout.split()
        return ideep, onednn, int(grown)

    bounded = growth({})
    unbounded = growth(dict.fromkeys(KERNEL_CACHE_VARIABLES, "1024"))
    assert bounded[:2] == ("64", "64") and unbounded[:2] == ("1024", "1024")
    if unbounded[2] < 40 * MiB:  # x86 CPUs keep several hundred KiB per shape (133 MiB here on an AMD EPYC)
        pytest.skip(f"this CPU's torch keeps no per-shape oneDNN kernels ({unbounded[2] / MiB:.0f} MiB)")
    assert bounded[2] < unbounded[2] / 3
