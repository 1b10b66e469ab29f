"""Scaling out: tunelab's causal LoRA adapters are PEFT folders, so vLLM serves them as they are:

    vllm serve BASE --enable-lora --lora-modules summarize=runs/a/adapter classify=runs/b/adapter

`vllm_lora_problems` lists what in an adapter's config vLLM's LoRA support would reject or needs a flag for
(checked against vLLM's documented limits; vLLM itself is not needed). `tunelab serve` warns with it."""

from __future__ import annotations

import json
from pathlib import Path

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's --max-lora-rank choices; default 16
VLLM_DEFAULT_MAX_RANK = 16


def vllm_lora_problems(adapter_dir: str | Path) -> list[str]:
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    problems = []
    if cfg.get("peft_type", "LORA") != "LORA":
        problems.append(f"{cfg.get('peft_type')} adapter: vLLM serves LoRA adapters only")
    if cfg.get("use_dora"):
        problems.append("DoRA (use_dora): not supported by vLLM's LoRA; merge it (tunelab merge) and serve the model")
    r = int(cfg.get("r", 8))
    if r > max(VLLM_LORA_RANKS):
        problems.append(f"rank {r}: above vLLM's largest LoRA rank ({max(VLLM_LORA_RANKS)})")
    elif r > VLLM_DEFAULT_MAX_RANK:
        needed = next(x for x in VLLM_LORA_RANKS if x >= r)
        problems.append(f"rank {r}: start vLLM with --max-lora-rank {needed} (its default is {VLLM_DEFAULT_MAX_RANK})")
    if cfg.get("modules_to_save"):
        problems.append(
            f"modules_to_save {cfg['modules_to_save']}: fully trained modules are not loaded by vLLM's LoRA"
        )
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias {cfg['bias']!r}: needs vLLM's --enable-lora-bias")
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    special = [t for t in targets if t in ("embed_tokens", "lm_head", "wte", "shared")]
    if special:
        problems.append(f"target_modules {special}: embedding/output LoRA is not supported by current vLLM")
    if cfg.get("task_type") == "SEQ_2_SEQ_LM":
        problems.append(
            "encoder-decoder (seq2seq) adapter: vLLM's LoRA does not support encoder-decoder models; "
            "serve it with tunelab"
        )
    return problems
