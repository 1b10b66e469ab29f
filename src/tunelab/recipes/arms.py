"""What one arm of a comparison does, in the arm's own process (recipes/comparing.py starts it): prompt the base
model zero- or few-shot, or choose the arm's sweep values on the validation split and fine-tune, into a staging
folder that becomes the arm's directory when it is whole. A fine-tuning arm's staging folder (`.<arm>.partial`) is
kept when the arm is interrupted and continues from its latest checkpoint the next time."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from tunelab.config.compare import EXECUTION_SETTINGS, Arm
from tunelab.config.loader import build_config, config_to_dict
from tunelab.config.schema import ExperimentConfig
from tunelab.data.sources import load_split
from tunelab.environment import describe_environment
from tunelab.evaluation.metrics import rouge_protocol
from tunelab.evaluation.summarization import score_prompts
from tunelab.errors import TunelabError
from tunelab.io import atomic_replace_dir, atomic_write_json, staged_dir
from tunelab.recipes.comparing import ARM_FILE, base_suite_key
from tunelab.recipes.components import load_eval_examples, open_session
from tunelab.recipes.finetuning import finetune
from tunelab.runs import RunDir


def prompting_arm(arm: Arm, run_path: Path, show_progress: bool = True) -> dict[str, Any]:
    """Zero-/few-shot prompting of the base model: k solved training examples before each query."""
    cfg = arm.experiment
    run = RunDir.create(cfg, run_path)
    set_seed(cfg.seed)
    session = open_session(cfg, quantize_for_method=False)
    examples = load_eval_examples(cfg)
    shots = random.Random(cfg.seed).sample(load_split(cfg.data, cfg.data.train_split), arm.shots) if arm.shots else []
    window = int(getattr(session.model.config, "max_position_embeddings", 0) or 0) or None
    budget = window - cfg.evaluation.max_new_tokens if window else None
    prompts, lengths = [], []
    for ex in examples:
        enc, full = session.encoder.encode_few_shot(session.templates.eval, shots, ex, budget)
        prompts.append(enc)
        lengths.append(full)
    scored = score_prompts(
        session.model,
        session.loaded.tokenizer,
        session.loaded.arch,
        prompts,
        examples,
        cfg.evaluation,
        cfg.seed,
        arm.name,
    )
    after = {
        **scored.metrics,
        "context": {
            "shots": arm.shots,
            "window": window,
            "mean_prompt_tokens": sum(lengths) / len(lengths),
            "max_prompt_tokens": max(lengths),
            "prompts_over_window": sum(budget is not None and n > budget for n in lengths),
        },
    }
    n_params = sum(p.numel() for p in session.model.parameters())
    metrics: dict[str, Any] = {
        "name": arm.name,
        "model": cfg.model.name,
        "arch": session.loaded.arch,
        "method": f"{arm.shots}-shot",
        "dataset": cfg.data.source,
        "evaluation_split": cfg.evaluation.split,
        "after": after,
        "cost": {
            "trainable_parameters": 0,
            "total_parameters": n_params,
            "trainable_percent": 0.0,
            "artefact": None,
            "artefact_bytes": 0,
            "full_checkpoint_bytes": 0,
        },
        "protocol": {"rouge": rouge_protocol(), "eval_template": session.templates.eval.prompt},
        "environment": describe_environment(session.device, cfg.evaluation.precision),
    }
    if cfg.benchmarks.tasks:
        metrics["forgetting"] = {
            t: {
                "metric": "-",
                "before": None,
                "after": None,
                "delta": 0.0,
                "ci95_low": 0.0,
                "ci95_high": 0.0,
                "significant": False,
                "note": "weights unchanged",
            }
            for t in cfg.benchmarks.tasks
        }
        metrics["forgetting_mean_delta"] = 0.0
    run.write_predictions(scored.predictions)
    run.write_metrics(metrics)
    run.mark_complete()
    return metrics


def swept_experiment(arm: Arm, show_progress: bool = True, echo=print) -> tuple[ExperimentConfig, dict | None]:
    """The arm's experiment with its `sweep` values chosen on the validation split (trials in
    `<comparison>/<arm>-sweep/`, reused when finished), and the record of the choice; unchanged without a sweep."""
    if not arm.sweep:
        return arm.experiment, None
    from tunelab.recipes.sweeping import sweep

    # the trials' own settings (e.g. fewer training examples), then the grid on top
    budget = [f"{k}={json.dumps(v)}" for k, v in arm.sweep_budget.items()]
    trial_base = build_config(config_to_dict(arm.experiment), budget) if budget else arm.experiment
    record = sweep(
        trial_base, arm.sweep, arm.sweep_metric, show_progress=show_progress, echo=None, widen=arm.sweep_widen
    )
    best = record["best"]["overrides"]
    if echo:
        echo(f"  {arm.name}: sweep chose {', '.join(f'{k}={v}' for k, v in best.items())} on {record['split']}")
    experiment = build_config(config_to_dict(arm.experiment), [f"{k}={json.dumps(v)}" for k, v in best.items()])
    chosen: dict[str, Any] = {
        "chosen": best,
        "metric": record["metric"],
        "split": record["split"],
        "trials": [{"overrides": t["overrides"], record["metric"]: t[record["metric"]]} for t in record["trials"]],
        "trial_settings": arm.sweep_budget,
        "record": f"{arm.name}-sweep/sweep.json",
        **{k: record[k] for k in ("best_at_edge", "widened") if k in record},
    }
    return experiment, chosen


def run_arm(
    arm: Arm,
    directory: Path,
    show_progress: bool = True,
    echo=print,
    base_benchmarks: dict[str, dict[str, Any]] | None = None,
) -> bool:
    """Run the arm into `directory/<arm>`; True when its finished run was kept instead: its sweep (changed, e.g.
    widened) chose the values it had trained with, so what it trained and measured stands."""
    final = directory / arm.name
    if arm.kind == "prompting":
        with staged_dir(final, "comparison arm") as stage:
            stage.rmdir()  # RunDir.create makes it
            prompting_arm(arm, stage, show_progress)
            atomic_write_json(stage / ARM_FILE, arm.signature())
        return False
    experiment, chosen = swept_experiment(arm, show_progress, echo)
    key = base_suite_key(arm)
    if chosen is not None and _trained_as(final, experiment):
        run = RunDir(final)
        run.write_metrics({**(run.read_json("metrics.json") or {}), "sweep": chosen})
        atomic_write_json(final / ARM_FILE, arm.signature())
        _share_base_scores(final, key, base_benchmarks)
        if echo:
            echo(f"  {arm.name}: the sweep chose the values it was trained with: its finished run is kept")
        return True
    shared = base_benchmarks.get(key) if base_benchmarks is not None else None
    partial = partial_arm_dir(directory, arm.name)
    if _resumable(partial, experiment) == "finished":  # stopped between finishing and being renamed
        metrics = RunDir(partial).read_json("metrics.json") or {}
    else:  # an interrupted arm continues from its latest checkpoint (`training.save_every`), finished phases kept
        metrics = finetune(
            experiment, run_path=partial, show_progress=show_progress, echo=None, base_benchmarks=shared, resume=True
        ).metrics
    if shared is None:
        _share_base_scores(partial, key, base_benchmarks)
    if chosen is not None:  # the record says which values the validation split chose
        RunDir(partial).write_metrics({**metrics, "sweep": chosen})
    atomic_write_json(partial / ARM_FILE, arm.signature())
    atomic_replace_dir(partial, final)
    return False


def _share_base_scores(run_dir: Path, key: str, base_benchmarks: dict[str, dict[str, Any]] | None) -> None:
    """The base model's benchmark scores that `run_dir` measured, for the next arms with the same base."""
    if base_benchmarks is not None and key not in base_benchmarks and (run_dir / "benchmarks_before.json").is_file():
        base_benchmarks[key] = json.loads((run_dir / "benchmarks_before.json").read_text())


def _trained_as(run_dir: Path, experiment: ExperimentConfig) -> bool:
    """A finished run of `experiment` (settings of execution alone may differ: see EXECUTION_SETTINGS)."""
    differences = _config_differences(run_dir, experiment)
    execution = {".".join(key) for key in EXECUTION_SETTINGS}
    return differences is not None and RunDir(run_dir).is_complete and all(d in execution for d in differences)


def _config_differences(run_dir: Path, experiment: ExperimentConfig) -> list[str] | None:
    """The keys in which the run in `run_dir` differs from `experiment`; None without a run this tunelab reads."""
    if not (run_dir / "config.yaml").is_file():
        return None
    try:
        return RunDir(run_dir).config_differences(experiment)
    except TunelabError:
        return None


def partial_arm_dir(directory: Path, name: str) -> Path:
    """Where a fine-tuning arm is written until it is whole (kept when interrupted, so that it can resume)."""
    return directory / f".{name}.partial"


def _resumable(partial: Path, experiment: ExperimentConfig) -> str:
    """`finished`, `resumable` (the same config: it continues from its latest checkpoint, or trains from the start
    keeping what it measured before training, e.g. the base model's benchmark scores), or `new`: a partial arm of
    another config, or none, which starts from nothing."""
    import shutil

    if _config_differences(partial, experiment) == []:
        return "finished" if RunDir(partial).is_complete else "resumable"
    shutil.rmtree(partial, ignore_errors=True)
    return "new"
