"""The comparison recipe: every arm (prompting, full fine-tuning, each PEFT method) on the same data,
evaluation and seed, one run directory per arm under one comparison directory, then a report.

A finished arm whose resolved config is unchanged is reused; a changed arm is rerun into a staging
folder and swapped in by rename, so an arm's directory is always one whole run.

Each arm runs in a fresh process of its own (`isolate_arms`, on by default): nothing an arm allocated (model,
optimizer, caches, the allocator's leftovers) reaches the next one, and each arm's peak memory is its own. In
one process, ~0.8 GiB stayed resident after each trained arm of the demo and added to the next arm's peak.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from tunelab.config.compare import Arm, CompareConfig, load_compare_config
from tunelab.config.loader import build_config, config_to_dict
from tunelab.config.schema import ExperimentConfig
from tunelab.data.sources import load_split
from tunelab.environment import describe_environment
from tunelab.errors import TrainingError, TunelabError
from tunelab.evaluation.metrics import rouge_protocol
from tunelab.evaluation.summarization import score_prompts
from tunelab.io import atomic_write_json, staged_dir
from tunelab.recipes.components import load_eval_examples, open_session
from tunelab.recipes.finetune import finetune
from tunelab.runs import RunDir

ARM_FILE = "arm.json"


@dataclass
class Comparison:
    directory: Path
    arms: dict[str, Path]
    reused: list[str]
    report: Path | None = None


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


def _is_reusable(arm_dir: Path, arm: Arm) -> bool:
    marker = arm_dir / ARM_FILE
    if not (arm_dir / "COMPLETE").exists() or not marker.is_file():
        return False
    return json.loads(marker.read_text()) == json.loads(json.dumps(arm.signature()))


def base_suite_key(arm: Arm) -> str:
    """Arms whose base model is loaded the same way (same model, same quantization) share base scores."""
    from tunelab.methods import get_method

    exp = arm.experiment
    quant = sorted(get_method(exp.method.name).load_kwargs(exp.method)) if arm.kind == "finetune" else []
    return json.dumps(
        {
            "model": exp.model.model_dump(mode="json"),
            "quant": quant,
            "bench": exp.benchmarks.model_dump(mode="json"),
            "eval": exp.evaluation.precision,
        },
        sort_keys=True,
    )


def swept_experiment(arm: Arm, show_progress: bool = True, echo=print) -> tuple[ExperimentConfig, dict | None]:
    """The arm's experiment with its `sweep` values chosen on the validation split (trials in
    `<comparison>/<arm>-sweep/`, reused when finished), and the record of the choice; unchanged without a sweep."""
    if not arm.sweep:
        return arm.experiment, None
    from tunelab.recipes.sweep import sweep

    # the trials' own settings (e.g. fewer training examples), then the grid on top
    budget = [f"{k}={json.dumps(v)}" for k, v in arm.sweep_budget.items()]
    trial_base = build_config(config_to_dict(arm.experiment), budget) if budget else arm.experiment
    record = sweep(trial_base, arm.sweep, arm.sweep_metric, show_progress=show_progress, echo=None)
    best = record["best"]["overrides"]
    if echo:
        echo(f"  {arm.name}: sweep chose {', '.join(f'{k}={v}' for k, v in best.items())} on {record['split']}")
    experiment = build_config(config_to_dict(arm.experiment), [f"{k}={json.dumps(v)}" for k, v in best.items()])
    chosen = {
        "chosen": best,
        "metric": record["metric"],
        "split": record["split"],
        "trials": [{"overrides": t["overrides"], record["metric"]: t[record["metric"]]} for t in record["trials"]],
        "trial_settings": arm.sweep_budget,
        "record": f"{arm.name}-sweep/sweep.json",
    }
    return experiment, chosen


def run_arm(
    arm: Arm,
    directory: Path,
    show_progress: bool = True,
    echo=print,
    base_benchmarks: dict[str, dict[str, Any]] | None = None,
) -> Path:
    final = directory / arm.name
    with staged_dir(final, "comparison arm") as stage:
        stage.rmdir()  # RunDir.create makes it
        if arm.kind == "prompting":
            prompting_arm(arm, stage, show_progress)
        else:
            experiment, chosen = swept_experiment(arm, show_progress, echo)
            key = base_suite_key(arm)
            shared = base_benchmarks.get(key) if base_benchmarks is not None else None
            result = finetune(
                experiment, run_path=stage, show_progress=show_progress, echo=None, base_benchmarks=shared
            )
            if base_benchmarks is not None and shared is None and (stage / "benchmarks_before.json").is_file():
                base_benchmarks[key] = json.loads((stage / "benchmarks_before.json").read_text())
            if chosen is not None:  # the record says which values the validation split chose
                RunDir(stage).write_metrics({**result.metrics, "sweep": chosen})
            del result
        atomic_write_json(stage / ARM_FILE, arm.signature())
    return final


def run_arm_isolated(
    arm: Arm,
    directory: Path,
    show_progress: bool = True,
    echo=print,
    base_benchmarks: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """`run_arm` in a fresh process (spawned: no state of this one is inherited), which exits when the arm is
    done, so that all its memory goes back to the system. Its messages reach `echo` as they come; its error is
    raised here; the base model's benchmark scores it measured are added to `base_benchmarks`."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    verbosity = _log_verbosity()
    process = context.Process(
        target=_arm_process,
        args=(arm, directory, show_progress, echo is not None, base_benchmarks, verbosity, sender),
        name=f"tunelab-arm-{arm.name}",
    )
    process.start()
    sender.close()  # the child holds the only sending end: its exit ends the stream
    try:
        outcome = None
        while outcome is None:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "echo" and echo:
                echo(payload)
            elif kind in ("done", "error"):
                outcome = (kind, payload)
        process.join()
    finally:
        if process.is_alive():  # interrupted: the arm's process had the same interrupt and removes its staging
            process.join(timeout=30)  # folder; give it the time, then stop it
        if process.is_alive():
            process.terminate()
            process.join()
    if outcome is None:
        code = process.exitcode
        cause = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        hint = " (signal 9 is often the kernel's out-of-memory killer)" if code == -9 else ""
        raise TrainingError(f"arm {arm.name!r}: its process ended without a result ({cause}{hint})")
    kind, payload = outcome
    if kind == "error":
        raise payload
    if base_benchmarks is not None:
        base_benchmarks.update(payload)
    return directory / arm.name


def _log_verbosity() -> int | None:
    """The CLI's log setting, for the arm's process to repeat; None where tunelab's log was not configured."""
    from tunelab.logs import logger

    if not logger.handlers:
        return None
    return {logging.WARNING: -1, logging.INFO: 0}.get(logger.level, 1)


def _arm_process(
    arm: Arm,
    directory: Path,
    show_progress: bool,
    echoes: bool,
    base_benchmarks: dict[str, dict[str, Any]] | None,
    verbosity: int | None,
    sender,
) -> None:
    if verbosity is not None:
        from tunelab.logs import configure_logging

        configure_logging(verbosity)
    shared = dict(base_benchmarks) if base_benchmarks is not None else None
    try:
        echo = (lambda message: sender.send(("echo", message))) if echoes else None
        run_arm(arm, directory, show_progress, echo, shared)
        added = {k: v for k, v in (shared or {}).items() if base_benchmarks is None or k not in base_benchmarks}
        sender.send(("done", added))
    except BaseException as error:  # noqa: BLE001 - every error, an interrupt included, goes to the caller
        sender.send(("error", _transferable(error)))
    finally:
        sender.close()


def _transferable(error: BaseException) -> BaseException:
    """The error itself where it survives pickling (tunelab's errors do), else a RuntimeError with its message.
    Other than tunelab's errors (bad input, said in the message), it carries the arm process's traceback."""
    text = "".join(traceback.format_exception(error))
    if not isinstance(error, TunelabError | KeyboardInterrupt):
        error.add_note(f"raised in the arm's process:\n{text}")
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any error type may fail to pickle
        return RuntimeError(f"{type(error).__name__}: {error}\nraised in the arm's process:\n{text}")


def arms_isolated(cfg: CompareConfig) -> bool:
    """Arms run in processes of their own unless turned off, or when the comparison itself runs on several
    processes (torchrun/accelerate launch: each rank runs the arms in its own process)."""
    return cfg.isolate_arms and int(os.environ.get("WORLD_SIZE", "1")) <= 1


TIMING_FILE = "timing.json"  # wall seconds each arm took when it ran (kept across interrupted invocations)


def _record_time(directory: Path, arm: str, seconds: float) -> None:
    path = directory / TIMING_FILE
    timing = json.loads(path.read_text()) if path.is_file() else {}
    timing[arm] = {"seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(path, timing)


def compare(
    config: str | Path | CompareConfig, overrides: tuple[str, ...] = (), show_progress: bool = True, echo=print
) -> Comparison:
    from tunelab.reporting.claims import CLAIMS_FILE
    from tunelab.reporting.html import ARM_ORDER_FILE, write_report

    cfg = config if isinstance(config, CompareConfig) else load_compare_config(config, overrides)
    directory = cfg.directory
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / ARM_ORDER_FILE, [arm.name for arm in cfg.arms])
    atomic_write_json(directory / CLAIMS_FILE, [claim.model_dump() for claim in cfg.claims])
    arms, reused = {}, []
    base_benchmarks: dict[str, dict[str, Any]] = {}
    for i, arm in enumerate(cfg.arms, 1):
        arm_dir = directory / arm.name
        if _is_reusable(arm_dir, arm):
            reused.append(arm.name)
            if echo:
                echo(f"[{i}/{len(cfg.arms)}] {arm.name}: finished earlier with the same config, reused")
        else:
            if echo:
                echo(
                    f"[{i}/{len(cfg.arms)}] {arm.name}: running ({arm.kind}"
                    f"{', ' + arm.experiment.method.name if arm.kind == 'finetune' else f', {arm.shots} shots'})"
                )
            t0 = time.perf_counter()
            runner = run_arm_isolated if arms_isolated(cfg) else run_arm
            runner(arm, directory, show_progress, echo, base_benchmarks)
            _record_time(directory, arm.name, time.perf_counter() - t0)
        arms[arm.name] = arm_dir
    report = write_report(directory, list(arms))
    if echo:
        echo((directory / "report.md").read_text())
        echo(f"report: {report}")
    return Comparison(directory, arms, reused, report)
