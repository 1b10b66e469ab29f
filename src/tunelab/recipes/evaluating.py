"""The evaluation recipe: score a base model (from a config) or a finished run (its adapter or model)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tunelab.config.loader import load_config
from tunelab.config.schema import ExperimentConfig
from tunelab.errors import RunDirError
from tunelab.environment import describe_environment
from tunelab.evaluation.metrics import rouge_protocol
from tunelab.evaluation.summarization import evaluate_summaries
from tunelab.io import atomic_write_json, atomic_write_jsonl
from tunelab.inference.adapters import attach_adapter
from tunelab.recipes.components import Session, load_eval_examples, open_run, open_session
from tunelab.runs import RunDir, unique_path


def open_target(
    target: str | Path | ExperimentConfig, overrides: tuple[str, ...] = (), adapter: str | Path | None = None
) -> tuple[Session, RunDir | None]:
    """A config (or its path) gives its base model (plus `adapter` when given) and a new run directory for
    the results (numbered when the name is taken: a rerun never fails or overwrites); a run directory gives
    its trained model (and no new directory: results go inside it)."""
    if isinstance(target, ExperimentConfig) or Path(target).is_file():
        cfg = target if isinstance(target, ExperimentConfig) else load_config(target, overrides)
        session = open_session(cfg, quantize_for_method=False)
        if adapter is not None:
            session.loaded.model = attach_adapter(session.model, Path(adapter), cfg.model.name)
        return session, RunDir.create(cfg, unique=True)
    if adapter is not None:
        raise RunDirError("--adapter goes with --model or a config, not with a run directory (it has its own)")
    return open_run(target), None


def config_for_model(
    model: str, data_file: str | None = None, name: str | None = None, overrides: tuple[str, ...] = ()
) -> ExperimentConfig:
    """The experiment config for scoring a model without writing one: defaults, the model, and optionally a
    data file as the test split (any layout tunelab reads)."""
    from tunelab.config.loader import build_config

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name or model).strip("-") or "model"
    tree: dict[str, Any] = {"name": name or f"eval-{slug}", "model": {"name": model}}
    if data_file is not None:
        tree["data"] = {"source": "files", "files": {"test": data_file}, "eval_split": None}
        tree["evaluation"] = {"split": "test"}
    return build_config(tree, overrides, "<eval --model>")


def evaluate_session(
    session: Session, split: str | None = None, max_samples: int | None = None, desc: str = "evaluate"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cfg = session.cfg
    examples = load_eval_examples(cfg, split, max_samples)
    res = evaluate_summaries(
        session.model,
        session.loaded.tokenizer,
        session.loaded.arch,
        session.encoder,
        session.templates.eval,
        examples,
        cfg.evaluation,
        cfg.seed,
        desc,
    )
    metrics = {
        "model": cfg.model.name,
        "split": split or cfg.evaluation.split,
        **res.metrics,
        "protocol": {
            "rouge": rouge_protocol(),
            "eval_template": session.templates.eval.prompt,
            "max_new_tokens": cfg.evaluation.max_new_tokens,
            "num_beams": cfg.evaluation.num_beams,
        },
        "environment": describe_environment(session.device, cfg.evaluation.precision),
    }
    return metrics, res.predictions


def evaluate(
    target: str | Path | ExperimentConfig,
    split: str | None = None,
    max_samples: int | None = None,
    overrides: tuple[str, ...] = (),
    adapter: str | Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate a run directory (results under a new RUN/eval-<split>[-N]/) or a config's base model, with
    `adapter` applied when given (a new run directory).

    Returns the folder holding metrics.json and predictions.jsonl, and the metrics.
    """
    session, run = open_target(target, overrides, adapter)
    if run is not None:
        metrics, preds = evaluate_session(session, split, max_samples, "eval base")
        run.write_predictions(preds)
        run.write_metrics({"base": metrics})
        run.mark_complete()
        return run.path, metrics
    metrics, preds = evaluate_session(session, split, max_samples, "eval run")
    out = unique_path(Path(str(target)) / f"eval-{metrics['split']}")  # no new run: `target` is a run directory
    atomic_write_jsonl(out / "predictions.jsonl", preds)
    atomic_write_json(out / "metrics.json", metrics)
    return out, metrics
