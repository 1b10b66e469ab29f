"""The comparison recipe: every arm (prompting, full fine-tuning, each PEFT method) on the same data,
evaluation and seed, one run directory per arm under one comparison directory, then a report.

A finished arm whose resolved config is unchanged is reused; a changed arm is rerun into a staging
folder and swapped in by rename, so an arm's directory is always one whole run.

Each arm runs in a fresh process of its own (`isolate_arms`, on by default): nothing an arm allocated (model,
optimizer, caches, the allocator's leftovers) reaches the next one, and each arm's peak memory is its own. In
one process, ~0.8 GiB stayed resident after each trained arm of the demo and added to the next arm's peak.
This module only orchestrates and imports no torch, so the comparison's own process stays small while its arms
run; what an arm does is in recipes/arms.py.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.compare import Arm, CompareConfig, load_compare_config, without_execution_settings
from tunelab.errors import TrainingError, TunelabError
from tunelab.io import atomic_write_json

ARM_FILE = "arm.json"


@dataclass
class Comparison:
    directory: Path
    arms: dict[str, Path]
    reused: list[str]
    report: Path | None = None


def _is_reusable(arm_dir: Path, arm: Arm) -> bool:
    marker = arm_dir / ARM_FILE
    if not (arm_dir / "COMPLETE").exists() or not marker.is_file():
        return False
    stored = json.loads(marker.read_text())
    if isinstance(stored.get("experiment"), dict):  # written before a setting counted as one of execution
        stored["experiment"] = without_execution_settings(stored["experiment"])
    return stored == json.loads(json.dumps(arm.signature()))


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


def run_arm_isolated(
    arm: Arm,
    directory: Path,
    show_progress: bool = True,
    echo=print,
    base_benchmarks: dict[str, dict[str, Any]] | None = None,
) -> bool:
    """`run_arm` in a fresh process (spawned: no state of this one is inherited), which exits when the arm is
    done, so that all its memory goes back to the system. Its messages reach `echo` as they come; its error is
    raised here; the base model's benchmark scores it measured are added to `base_benchmarks`; what `run_arm`
    returns is returned."""
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
    added, kept = payload
    if base_benchmarks is not None:
        base_benchmarks.update(added)
    return kept


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
        from tunelab.recipes.arms import run_arm  # torch loads here, in the arm's process only

        echo = (lambda message: sender.send(("echo", message))) if echoes else None
        kept = run_arm(arm, directory, show_progress, echo, shared)
        added = {k: v for k, v in (shared or {}).items() if base_benchmarks is None or k not in base_benchmarks}
        sender.send(("done", (added, kept)))
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
            if arm.kind == "finetune" and (arm_dir / "benchmarks_before.json").is_file():  # the base's scores
                base_benchmarks.setdefault(
                    base_suite_key(arm), json.loads((arm_dir / "benchmarks_before.json").read_text())
                )
            if echo:
                echo(f"[{i}/{len(cfg.arms)}] {arm.name}: finished earlier with the same config, reused")
        else:
            if echo:
                echo(
                    f"[{i}/{len(cfg.arms)}] {arm.name}: running ({arm.kind}"
                    f"{', ' + arm.experiment.method.name if arm.kind == 'finetune' else f', {arm.shots} shots'})"
                )
            t0 = time.perf_counter()
            if arms_isolated(cfg):
                runner = run_arm_isolated
            else:
                from tunelab.recipes.arms import run_arm as runner
            if runner(arm, directory, show_progress, echo, base_benchmarks):
                reused.append(arm.name)  # its wall time is the one it took when it ran
            else:
                _record_time(directory, arm.name, time.perf_counter() - t0)
        arms[arm.name] = arm_dir
    report = write_report(directory, list(arms))
    if echo:
        echo((directory / "report.md").read_text())
        echo(f"report: {report}")
    return Comparison(directory, arms, reused, report)
