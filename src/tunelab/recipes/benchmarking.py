"""Benchmark-suite recipes: score a model on tasks, and measure forgetting of a fine-tuning run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.benchmarks import forgetting_report, forgetting_table, get_task, run_suite
from tunelab.config.loader import load_config
from tunelab.config.schema import BenchmarksConfig, ExperimentConfig
from tunelab.errors import ConfigError
from tunelab.io import atomic_write_json, atomic_write_text
from tunelab.recipes.components import Session, open_session
from tunelab.recipes.components import open_run
from tunelab.recipes.evaluating import open_target
from tunelab.runs import RunDir, unique_path


def with_subset(
    cfg: ExperimentConfig, limit: int | None = None, sample: int | None = None, seed: int | None = None
) -> ExperimentConfig:
    """The config with its benchmark subset replaced: the first `limit` documents or a seeded `sample`."""
    if not (limit or sample or seed is not None):
        return cfg
    update: dict[str, Any] = {"limit": limit, "sample": sample, "task_sample": {}} if (limit or sample) else {}
    if seed is not None:
        update["seed"] = seed
    return cfg.model_copy(update={"benchmarks": cfg.benchmarks.model_copy(update=update)})


def task_specs(bcfg: BenchmarksConfig, tasks: list[str] | None = None):
    def subset(task: str) -> dict[str, int | None]:
        if task in bcfg.task_sample:
            return {"limit": None, "sample": bcfg.task_sample[task]}
        return {"limit": bcfg.limit, "sample": bcfg.sample}

    return [get_task(t, **subset(t), seed=bcfg.seed, num_fewshot=bcfg.num_fewshot) for t in (tasks or bcfg.tasks)]


def benchmark_session(session: Session, tasks: list[str] | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Run the suite on a session's model; returns {task: result dict} (per-example data included)."""
    bcfg = session.cfg.benchmarks
    results = run_suite(
        session.model,
        session.loaded.tokenizer,
        session.loaded.arch,
        task_specs(bcfg, tasks),
        batch_size=bcfg.batch_size,
        use_chat_template=session.loaded.use_chat_template,
        show_progress=show_progress,
        generation_precision=session.cfg.evaluation.precision,
    )
    return {name: r.as_dict() for name, r in results.items()}


def target_gain(metrics: dict[str, Any]) -> dict[str, float]:
    if "before" not in metrics or "after" not in metrics or "rouge" not in metrics["after"]:
        return {}
    return {
        f"{metrics.get('dataset', 'target')} {k}": metrics["after"]["rouge"][k]["f1"]
        - metrics["before"]["rouge"][k]["f1"]
        for k in ("rouge1", "rougeL")
    }


def write_forgetting(
    run_path: Path, before: dict[str, Any], after: dict[str, Any], gain: dict[str, float], samples: int, seed: int
) -> dict[str, Any]:
    report = forgetting_report(before, after, gain, samples, seed)
    atomic_write_json(run_path / "benchmarks_before.json", before)
    atomic_write_json(run_path / "benchmarks_after.json", after)
    atomic_write_json(run_path / "forgetting.json", report)
    atomic_write_text(run_path / "forgetting.md", forgetting_table(report) + "\n")
    return report


def later_folder_name(kind: str, tasks: list[str], bcfg: BenchmarksConfig) -> str:
    """`<kind>-<tasks>[-limitN|-sampleN[-seedS]]`: a later measurement is named by what it measured."""
    subset = (f"-limit{bcfg.limit}" if bcfg.limit else f"-sample{bcfg.sample}" if bcfg.sample else "") + (
        f"-seed{bcfg.seed}" if bcfg.seed is not None and bcfg.sample else ""
    )
    return f"{kind}-" + "+".join(Path(t).stem for t in tasks) + subset


def measure_forgetting(
    run_path: str | Path,
    tasks: list[str] | None = None,
    limit: int | None = None,
    show_progress: bool = True,
    sample: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run the suite on the run's base model and on its fine-tuned model. What training recorded is never
    rewritten: the results go to a new folder RUN/forgetting-<tasks>[-subset][-N]/ (benchmarks_before.json,
    benchmarks_after.json, forgetting.json/.md); the report's `folder` says which."""
    run = RunDir.open(run_path)
    cfg = with_subset(load_config(run.config_path), limit, sample, seed)
    tasks = tasks or cfg.benchmarks.tasks
    if not tasks:
        raise ConfigError("no benchmark tasks: pass --tasks or set benchmarks.tasks in the run's config")
    with run.locked():
        base = open_session(cfg)
        before = benchmark_session(base, tasks, show_progress)
        del base
        tuned = open_run(run.path)
        tuned.cfg = cfg
        after = benchmark_session(tuned, tasks, show_progress)
        metrics = run.read_json("metrics.json") or {}
        out = unique_path(run.path / later_folder_name("forgetting", tasks, cfg.benchmarks))
        report = write_forgetting(out, before, after, target_gain(metrics), cfg.benchmarks.bootstrap_samples, cfg.seed)
        return {**report, "folder": str(out)}


def benchmark(
    target: str | Path | ExperimentConfig,
    tasks: list[str],
    limit: int | None = None,
    overrides: tuple[str, ...] = (),
    show_progress: bool = True,
    sample: int | None = None,
    seed: int | None = None,
    adapter: str | Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run tasks on a config's base model (a new run directory) or on a finished run (a new folder
    RUN/benchmarks-<tasks>[-subset][-N]/: what training recorded is never rewritten); writes benchmarks.json there.
    `limit`: the first N documents of each task; `sample`: a seeded sample of N (`seed`: its seed)."""
    subset = tuple(
        f"benchmarks.{k}={'null' if v is None else v}"  # recorded in a new run's config.yaml
        for k, v in (("limit", limit), ("sample", sample))
        if limit or sample
    )
    subset += (f"benchmarks.seed={seed}",) if seed is not None else ()
    session, run = open_target(target, (*overrides, *subset), adapter)
    session.cfg = with_subset(session.cfg, limit, sample, seed)
    results = benchmark_session(session, tasks, show_progress)
    out = (
        run.path
        if run is not None
        else unique_path(Path(str(target)) / later_folder_name("benchmarks", tasks, session.cfg.benchmarks))
    )  # no new run: `target` is a run directory
    atomic_write_json(out / "benchmarks.json", results)
    if run is not None:
        run.mark_complete()
    return out, results


def results_table(results: dict[str, Any]) -> str:
    from tunelab.reporting.tables import markdown_table

    rows = []
    for name, r in results.items():
        m = r["metrics"]
        extra = (
            f"acc_norm {m['accuracy_norm']:.1f}, ECE {m['ece']:.1f}"
            if r["kind"] == "multiple_choice"
            else ", ".join(f"{k} {v:.1f}" for k, v in m.items() if isinstance(v, float) and k != r["main_metric"])
        )
        rows.append([name, r["main_metric"], r["score"], extra, r["n"], f"{r['examples_per_second']:.2f}"])
    return markdown_table(["task", "metric", "score", "also", "n", "examples/s"], rows)
