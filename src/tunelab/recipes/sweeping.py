"""The sweep recipe: one run per combination of a grid of config values (`tunelab sweep CONFIG --set-grid
training.lr=1e-4,3e-4,1e-3`), each scored on the validation split only, the best named.

Trials evaluate on `data.eval_split` (never on test: the test split stays untouched until the chosen setting
is run for real), generate for at most `data.max_eval_samples` of its examples (those the validation loss
uses), skip the before-evaluation and the benchmark suite, and live in `<output_dir>/<name>-sweep/` with
`sweep.json` (every trial's overrides, run folder and validation score, and the best). Finished trials are
reused, so an interrupted sweep continues where it stopped.

A best value at the edge of its grid says only that the best may lie beyond it. `widen` (`--widen N`) then
tries up to N more values past that edge, one at a time, continuing the grid's own steps (1e-4, 3e-4, 1e-3 ->
3e-3, then 1e-2), until the best lies inside; the record says which values were added and whether the best is
still at an edge (`best_at_edge`, recorded for every one-key grid).
"""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunelab.config.loader import build_config, config_to_dict, parse_override
from tunelab.config.schema import ExperimentConfig
from tunelab.errors import ConfigError
from tunelab.io import atomic_write_json
from tunelab.runs import COMPLETE_MARKER

METRICS = ("eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum")


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """`training.lr=1e-4,3e-4` -> {"training.lr": [0.0001, 0.0003]} (each value parsed as YAML)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, _ = parse_override(item)
        raw = item.split("=", 1)[1]
        values = [parse_override(f"{key}={v.strip()}")[1] for v in raw.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--set-grid {item!r}: no values")
        grid[key] = values
    if not grid:
        raise ConfigError("a sweep needs at least one --set-grid key=v1,v2,...")
    return grid


def _trial_name(assignment: dict[str, Any]) -> str:
    text = "_".join(f"{k.split('.')[-1]}={v}" for k, v in assignment.items())
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text)


def trial_config(base: ExperimentConfig, assignment: dict[str, Any], directory: Path, metric: str) -> ExperimentConfig:
    """The base config with one grid point, scored on the validation split (its final validation loss is
    measured whenever data.eval_split is set; ROUGE by the after-evaluation, moved to that split)."""
    if not base.data.eval_split:
        raise ConfigError("a sweep scores trials on the validation split, but data.eval_split is null")
    overrides = [f"{k}={v}" for k, v in assignment.items()]
    tree = config_to_dict(build_config(config_to_dict(base), overrides))
    tree.update(name=_trial_name(assignment), output_dir=str(directory))
    tree["evaluation"].update(split=base.data.eval_split, before=False)
    if base.data.max_eval_samples:  # generation scores the validation subset that the loss uses, no more
        limits = (tree["evaluation"]["max_samples"], base.data.max_eval_samples)
        tree["evaluation"]["max_samples"] = min(n for n in limits if n)
    tree["benchmarks"]["tasks"] = []
    return build_config(tree, source=f"sweep trial {_trial_name(assignment)}")


def _score(metrics: dict[str, Any], metric: str) -> float:
    if metric == "eval_loss":
        losses = metrics["training"].get("eval_loss") or []
        if not losses:
            raise ConfigError("eval_loss needs a validation split with examples (data.eval_split)")
        return float(losses[-1][1])
    return float(metrics["after"]["rouge"][metric]["f1"])


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) and len(set(values)) >= 2


def beyond_edge(values: Sequence[Any], best: Any) -> Any | None:
    """The next value past the edge of a numeric grid where `best` lies, continuing the grid's steps from that
    edge (ratios when every value is positive, differences otherwise; with three or more values the step two
    before the edge, so 1e-4, 3e-4, 1e-3 continue 3e-3, 1e-2); None when `best` lies inside or the grid is not
    numeric (or would turn negative)."""
    if not _numeric(values):
        return None
    ladder = sorted(set(values))
    if best == ladder[0]:
        ladder.reverse()
    elif best != ladder[-1]:
        return None
    near, far = (ladder[-2], ladder[-3]) if len(ladder) >= 3 else (ladder[-1], ladder[-2])
    if all(v > 0 for v in ladder):
        value = ladder[-1] * near / far
    else:
        value = ladder[-1] + near - far
        if min(ladder) >= 0 > value:  # a grid of non-negative values (a dropout) stays non-negative
            return None
    if all(isinstance(v, int) for v in ladder):
        return round(value)
    return float(f"{value:.10g}")  # 0.001 * 3 is 0.0029999999999999996 in floats


def sweep(
    base: ExperimentConfig,
    grid: dict[str, list[Any]],
    metric: str = "eval_loss",
    show_progress: bool = True,
    echo=print,
    widen: int = 0,
) -> dict[str, Any]:
    """Run every grid point (reusing finished ones), widen a one-key grid whose best lies at an edge by up to
    `widen` values, and return the sweep record (also in sweep.json)."""
    if metric not in METRICS:
        raise ConfigError(f"sweep metric {metric!r} is not one of {', '.join(METRICS)}")
    if widen and (len(grid) != 1 or not _numeric(next(iter(grid.values())))):
        raise ConfigError("widening a sweep needs a grid of one key with two or more numbers, e.g. training.lr")
    directory = Path(base.output_dir) / f"{base.name}-sweep"
    lower_is_better = metric == "eval_loss"

    key = next(iter(grid))

    def best_of(trials: list[dict[str, Any]]) -> dict[str, Any]:
        return (min if lower_is_better else max)(trials, key=lambda t: float(t[metric]))

    def next_value(trials: list[dict[str, Any]]) -> Any | None:
        return beyond_edge([t["overrides"][key] for t in trials], best_of(trials)["overrides"][key])

    trials = [
        _trial(base, dict(zip(grid, values, strict=True)), directory, metric, show_progress, echo)
        for values in itertools.product(*grid.values())
    ]
    added: list[Any] = []
    while len(added) < widen and (value := next_value(trials)) is not None:
        added.append(value)
        trials.append(_trial(base, {key: value}, directory, metric, show_progress, echo))
    best = best_of(trials)
    record: dict[str, Any] = {
        "metric": metric,
        "split": base.data.eval_split,
        "better": "lower" if lower_is_better else "higher",
        "grid": grid,
        "trials": trials,
        "best": best,
    }
    if len(grid) == 1:
        record["best_at_edge"] = next_value(trials) is not None  # the best value may lie beyond the grid
    if widen:
        record["widened"] = added
    atomic_write_json(directory / "sweep.json", record)
    return record


def _trial(
    base: ExperimentConfig, assignment: dict[str, Any], directory: Path, metric: str, show_progress: bool, echo
) -> dict[str, Any]:
    """One grid point's validation score: its finished run reused, an interrupted one started again."""
    from tunelab.recipes.finetuning import finetune
    from tunelab.runs import RunDir

    cfg = trial_config(base, assignment, directory, metric)
    run_dir = directory / cfg.name
    if (run_dir / COMPLETE_MARKER).exists():
        metrics = RunDir(run_dir).read_json("metrics.json") or {}
    else:
        if run_dir.exists():  # an interrupted trial: it has no result, start it again
            shutil.rmtree(run_dir)
        metrics = finetune(cfg, show_progress=show_progress, echo=None).metrics
    trial = {"overrides": assignment, "run": str(run_dir), metric: _score(metrics, metric)}
    if echo:
        echo(f"{cfg.name}: validation {metric} {trial[metric]:.4f}")
    return trial
