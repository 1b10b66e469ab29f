"""Checks run before any work: a fine-tuning run fails in seconds, with one line naming the problem, and
before its run directory exists, instead of after minutes of evaluation with a directory that blocks the rerun.

Checked: the output folder can be written; the model resolves (config and tokenizer, no weights); every
data split the run reads holds its columns; the templates render; the method's target modules exist in
the model; mixture components, the EWC data and the benchmark tasks load."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from tunelab.config.schema import DataConfig, ExperimentConfig
from tunelab.errors import ConfigError, RunDirError


def check_writable(run_path: Path) -> None:
    """The nearest existing folder above the run directory must be a writable folder."""
    probe = run_path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"cannot create run directory {run_path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot create run directory {run_path}: {probe} is not writable")


def _module_matches(targets: str | Iterable[str], names: list[str]) -> dict[str, bool]:
    """PEFT's rule: a listed name matches a module whose name is it or ends with '.' + it; a string is a
    regular expression matched against whole module names."""
    if isinstance(targets, str):
        return {targets: any(re.fullmatch(targets, n) for n in names)}
    return {t: any(n == t or n.endswith("." + t) for n in names) for t in targets}


def check_target_modules(method_cfg, hf_config, arch) -> None:
    """Every module named by the method's target lists exists in the model (one that matches nothing
    would silently train less than asked, or fail inside PEFT)."""
    fields = [f for f in ("target_modules", "feedforward_modules") if getattr(method_cfg, f, None)]
    fields = [f for f in fields if getattr(method_cfg, f) != "all-linear"]
    if not fields:
        return
    import torch

    from tunelab.models.loading import model_skeleton

    modules = dict(model_skeleton(hf_config, arch).named_modules())
    names = list(modules)
    for f in fields:
        missing = [t for t, ok in _module_matches(getattr(method_cfg, f), names).items() if not ok]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, torch.nn.Linear)})
            raise ConfigError(
                f"method.{f}: {', '.join(map(repr, missing))} matches no module of the model; "
                f"its linear layers are named {', '.join(linear)}"
            )


def _splits(cfg: ExperimentConfig) -> list[str]:
    wanted = [cfg.data.train_split, cfg.data.eval_split, cfg.evaluation.split]
    return list(dict.fromkeys(s for s in wanted if s))


def check_experiment(cfg: ExperimentConfig, run_path: str | Path | None = None) -> None:
    """Raise the first problem found (ConfigError, DataError, ModelError or RunDirError)."""
    from tunelab.benchmarks.loaders import evaluation_documents
    from tunelab.data.encoding import PromptEncoder
    from tunelab.data.mixture import load_component
    from tunelab.data.sources import load_split
    from tunelab.data.templates import TemplateSet
    from tunelab.models.loading import (
        chat_template_in_use,
        load_model_config,
        load_tokenizer,
        resolve_arch,
        resolve_source,
    )
    from tunelab.recipes.benchmarking import task_specs

    check_writable(Path(run_path) if run_path else Path(cfg.output_dir) / cfg.name)
    source = resolve_source(cfg.model.name)
    hf_config = load_model_config(source, cfg.model)
    arch = resolve_arch(hf_config, cfg.model)
    tokenizer = load_tokenizer(source, cfg.model)
    examples = {split: load_split(cfg.data, split) for split in _splits(cfg)}
    templates = TemplateSet.from_config(cfg.template)
    encoder = PromptEncoder.from_config(cfg, tokenizer, arch, chat_template_in_use(tokenizer, arch, cfg.model))
    first = examples[cfg.data.train_split][0]
    for template in {*templates.train, templates.eval}:
        encoder.encode_for_training(template, first)
    check_target_modules(cfg.method, hf_config, arch)
    for component in cfg.data.mixture.components if cfg.data.mixture else []:
        load_component(component)
    reg = cfg.training.regularization
    if reg.kind == "ewc":
        load_split(DataConfig(source=reg.fisher_source), reg.fisher_split)
    for spec in task_specs(cfg.benchmarks):
        if not evaluation_documents(spec):
            raise ConfigError(f"benchmark task {spec.name}: no documents to score")
