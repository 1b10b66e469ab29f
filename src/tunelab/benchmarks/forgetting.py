"""Catastrophic forgetting: the benchmark suite before and after fine-tuning, per-task deltas with
paired bootstrap confidence intervals (scipy.stats.bootstrap; the same examples are resampled on both sides)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tunelab.benchmarks.runner import translation_scores
from tunelab.evaluation.metrics import paired_difference_ci


def main_metric_per_example(result: Mapping[str, Any]) -> np.ndarray:
    """Scores whose mean is the task's main metric (accuracy x100 or ROUGE-L)."""
    per = result["per_example"]
    if result["main_metric"] == "accuracy":
        return 100.0 * np.asarray(per["correct"], dtype=float)
    return np.asarray(per["rougeL"], dtype=float)


def paired_bootstrap_delta(
    before: Mapping[str, Any], after: Mapping[str, Any], samples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """after - before on the task's main metric, with a 95% paired bootstrap CI (scipy.stats.bootstrap, the same
    examples resampled on both sides): BCa for per-example metrics, percentile for corpus BLEU (recomputed per
    resample, at most 200)."""
    from scipy.stats import bootstrap

    n = before["n"]
    if after["n"] != n:
        raise ValueError(f"task {before['task']}: {n} examples before but {after['n']} after")
    delta = after["score"] - before["score"]
    if before["main_metric"] != "bleu":
        low, high = paired_difference_ci(main_metric_per_example(before), main_metric_per_example(after), samples, seed)
        return {"delta": delta, "ci95_low": low, "ci95_high": high}
    if samples <= 0 or n < 2:
        return {"delta": delta, "ci95_low": delta, "ci95_high": delta}

    def bleu_delta(idx: np.ndarray) -> float:
        def corpus(r: Mapping[str, Any]) -> float:
            per = r["per_example"]
            return translation_scores([per["predictions"][i] for i in idx], [per["references"][i] for i in idx])["bleu"]

        return corpus(after) - corpus(before)

    ci = bootstrap(
        (np.arange(n),),
        bleu_delta,
        n_resamples=min(samples, 200),
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return {"delta": delta, "ci95_low": float(ci.low), "ci95_high": float(ci.high)}


def bleu_paired_p_value(before: Mapping[str, Any], after: Mapping[str, Any], samples: int = 1000) -> float:
    """p-value of the BLEU change from sacrebleu's paired bootstrap resampling test (Koehn, 2004), as
    `sacrebleu --paired-bs` reports it."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    from tunelab.evaluation.metrics import reference_streams

    b, a = before["per_example"], after["per_example"]
    if list(b["predictions"]) == list(a["predictions"]):
        return 1.0  # no change at all (sacrebleu's test gives its smallest p-value to this degenerate case)
    test = PairedTest(
        [("before", list(b["predictions"])), ("after", list(a["predictions"]))],
        {"BLEU": BLEU(references=reference_streams(b["references"]))},
        references=None,
        test_type="bs",
        n_samples=samples,
    )
    _, results = test()
    after_result = results["BLEU"][1]  # [0] is the baseline system's ("before"), [1] the compared one's
    assert not isinstance(after_result, str) and after_result.p_value is not None
    return float(after_result.p_value)


def forgetting_report(
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    target_gain: Mapping[str, float] | None = None,
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    tasks = {}
    for name in before:
        if name not in after:
            continue
        b, a = before[name], after[name]
        tasks[name] = {
            "metric": b["main_metric"],
            "before": b["score"],
            "after": a["score"],
            "n": b["n"],
            **paired_bootstrap_delta(b, a, samples, seed),
            "before_metrics": b["metrics"],
            "after_metrics": a["metrics"],
            "examples_per_second_after": a.get("examples_per_second"),
        }
        t = tasks[name]
        if t["metric"] == "bleu" and samples > 0 and t["n"] > 1:  # corpus BLEU: sacrebleu's own paired test decides
            t["p_value"] = bleu_paired_p_value(b, a, min(samples, 1000))
            t["significant"] = t["p_value"] < 0.05
        else:
            t["significant"] = t["ci95_high"] < 0 or t["ci95_low"] > 0
    deltas = [t["delta"] for t in tasks.values()]
    return {
        "tasks": tasks,
        "mean_delta": float(np.mean(deltas)) if deltas else 0.0,
        "target_gain": dict(target_gain or {}),
        "bootstrap_samples": samples,
    }


def forgetting_table(report: Mapping[str, Any]) -> str:
    from tunelab.reporting.tables import markdown_table

    rows = []
    for name, t in report["tasks"].items():
        rows.append(
            [
                name,
                t["metric"],
                t["before"],
                t["after"],
                f"{t['delta']:+.2f}",
                f"[{t['ci95_low']:+.2f}, {t['ci95_high']:+.2f}]",
                "yes" if t["significant"] else "no",
                t["n"],
            ]
        )
    rows.append(["mean", "", "", "", f"{report['mean_delta']:+.2f}", "", "", ""])
    text = markdown_table(["task", "metric", "before", "after", "change", "95% CI", "significant", "n"], rows)
    if report.get("target_gain"):
        gains = ", ".join(f"{k} {v:+.2f}" for k, v in report["target_gain"].items())
        text += f"\n\ntarget task gain: {gains}"
    return text
