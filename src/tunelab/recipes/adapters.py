"""Recipes on trained adapters: merge a LoRA into its base, inspect learned soft prompts."""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import ModelError, RunDirError
from tunelab.io import staged_dir
from tunelab.inference.adapters import attach_adapter, merge_adapter
from tunelab.methods.prompt_tuning import learned_prompt, nearest_tokens
from tunelab.recipes.components import open_session
from tunelab.recipes.components import open_run
from tunelab.runs import RunDir


def merge_run(run_path: str | Path, out: str | Path) -> Path:
    """Merge a run's adapter into a full-precision copy of its base model and save a standalone model.

    For QLoRA runs the base is loaded unquantized: merging into 4-bit weights would lose the update.
    """
    run = RunDir.open(run_path)
    out = Path(out)
    if out.exists():
        raise RunDirError(f"{out} exists already; choose a new output folder")
    if not run.adapter_dir.is_dir():
        raise ModelError(f"{run.path} has no adapter/ to merge (full fine-tuning runs are standalone already)")
    from tunelab.config.loader import load_config

    cfg = load_config(run.config_path)
    session = open_session(cfg, quantize_for_method=False)
    merged = merge_adapter(attach_adapter(session.model, run.adapter_dir, cfg.model.name))
    with staged_dir(out, "the merged model") as stage:
        merged.save_pretrained(stage)
        session.loaded.tokenizer.save_pretrained(stage)
    return out


def soft_prompt_neighbours(run_path: str | Path, k: int = 5) -> list[list[tuple[str, float]]]:
    """For a prompt-tuning run: the k nearest vocabulary tokens (cosine) of each learned virtual token."""
    session = open_run(run_path)
    model = session.model
    prompts = learned_prompt(model)
    if prompts is None:
        raise ModelError(f"{run_path} is not a prompt-tuning run")
    vocab = model.get_base_model().get_input_embeddings().weight
    return nearest_tokens(prompts, vocab, session.loaded.tokenizer, k)
