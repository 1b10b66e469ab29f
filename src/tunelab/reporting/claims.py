"""Claims of a comparison, judged on its finished arms with paired 95% confidence intervals.

A claim (config/compare.py `Claim`) says that `arm` minus `versus` on a metric is at least `at_least` (or at
most `at_most`). The difference is taken example by example on the same test examples (or benchmark documents),
and its BCa bootstrap CI decides: **reproduced** when the whole CI lies on the claimed side of the threshold,
**not reproduced** when it lies on the other side, **inconclusive** when it contains it; **pending** while an
arm has not finished.

Task metrics are recomputed from each arm's predictions.jsonl (predictions and references), so a claim needs
no state beyond what a finished arm keeps: `rouge1`... is the best-of-references protocol, `single_reference:
rouge1`... the mean over single references; `benchmark:<task>` compares the suite's per-document scores after
training; `versus: base` is the arm's own change on that task, read from its forgetting record (forgetting.json), so
the claim shows the same difference and CI as the arm's forgetting table.
`soft_prompt:task_words` against `chance` compares the share of a prompt-tuning arm's virtual tokens with a
task word among their nearest vocabulary tokens with the share for random vocabulary tokens (a fixed rate
measured on 2,000 tokens); the CI is the bootstrap over the virtual tokens.
`cost:<quantity>` compares one measurement per arm (trainable parameters, artefact bytes, peak training memory,
training seconds) as the ratio arm / versus, which the threshold bounds: there is no CI, so the verdict is
reproduced or not reproduced. Memory and time are measured on whatever machine ran each arm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunelab.reporting.tables import human_bytes

if TYPE_CHECKING:
    from tunelab.reporting.html import ArmSummary

CLAIMS_FILE = "claims.json"  # the comparison config's claims, so `tunelab report DIR` can judge them again
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "pending", "not applicable")


def _task_scores(arm: ArmSummary, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per ROUGE metric, per test example id: the arm's score (recomputed from its predictions once per arm and
    protocol: ArmSummary caches them)."""
    ids = [p["id"] for p in arm.predictions]
    scores: dict[str, dict[str, float]] = {}
    for metric in metrics:
        if metric.startswith("single_reference:"):
            key = metric.split(":", 1)[1]
            per_ref = arm.rouge_per_reference
            scores[metric] = {i: float(np.mean([r[key]["f1"] for r in rs])) for i, rs in zip(ids, per_ref, strict=True)}
        else:
            scores[metric] = {i: s[metric]["f1"] for i, s in zip(ids, arm.rouge_per_example, strict=True)}
    return scores


def _benchmark_results(arm: ArmSummary, arms: Sequence[ArmSummary]) -> dict[str, Any] | None:
    """The suite's scores with the arm's weights: benchmarks_after.json of a fine-tuning arm; a prompting arm's
    weights are the base's, so its scores are the base's before training, found in any fine-tuning arm."""
    when, sources = ("before", [a for a in arms if not a.is_prompting]) if arm.is_prompting else ("after", [arm])
    for source in sources:
        path = source.path / f"benchmarks_{when}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _benchmark_scores(results: Mapping[str, Any], task: str) -> dict[str, float]:
    """Per document position: arms of one comparison share the benchmarks config, so they score the same documents
    in the same order (a different count leaves the claim pending)."""
    from tunelab.benchmarks.forgetting import main_metric_per_example

    result = results[task]
    return {str(i): float(v) for i, v in enumerate(main_metric_per_example(result))}


def _paired(claim: Mapping[str, Any], arm: ArmSummary, versus: ArmSummary, arms: Sequence[ArmSummary]):
    metric = claim["metric"]
    if metric.startswith("benchmark:"):
        task = metric.split(":", 1)[1]
        mine, theirs = _benchmark_results(arm, arms), _benchmark_results(versus, arms)
        if mine is None or theirs is None or task not in mine or task not in theirs:
            raise KeyError(f"benchmark {task} was not run on both sides")
        return _benchmark_scores(mine, task), _benchmark_scores(theirs, task)
    return _task_scores(arm, [metric])[metric], _task_scores(versus, [metric])[metric]


def _own_change(arm: ArmSummary, task: str, claim: Mapping[str, Any]) -> dict[str, Any]:
    """The arm's change on a benchmark task as its forgetting record holds it (after - before, paired CI)."""
    path = arm.path / "forgetting.json"
    change = json.loads(path.read_text())["tasks"].get(task) if path.is_file() else None
    if change is None:
        return {"verdict": "pending", "note": f"{arm.name} has no forgetting record for {task}"}
    return {**_verdict(claim, change["delta"], change["ci95_low"], change["ci95_high"]), "n": change["n"]}


def judge(claim: Mapping[str, Any], arms: Sequence[ArmSummary], samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """One claim's difference, its paired CI over the shared examples and the verdict."""
    from tunelab.evaluation.metrics import paired_difference_ci

    by_name = {a.name: a for a in arms}
    arm, versus = by_name.get(claim["arm"]), by_name.get(claim["versus"])
    if arm is None or (versus is None and claim["versus"] not in ("base", "chance")):
        return {**claim, "verdict": "pending", "note": "an arm has not finished"}
    if claim["metric"].startswith("soft_prompt:"):
        record = arm.metrics.get("soft_prompt")
        if record is None:
            return {**claim, "verdict": "not applicable", "note": f"{arm.name} is not a prompt-tuning arm"}
        hits, chance = record["task_word"], record["chance_share"]
        share = sum(hits) / len(hits)
        low, high = (bound - chance for bound in wilson_interval(sum(hits), len(hits)))
        return {**claim, **_verdict(claim, share - chance, low, high), "n": len(hits)}
    if claim["metric"].startswith("cost:") and versus is not None:
        return {**claim, **_cost_ratio(claim, arm, versus)}
    if claim["metric"].startswith("benchmark:") and versus is None:
        return {**claim, **_own_change(arm, claim["metric"].split(":", 1)[1], claim)}
    assert versus is not None  # the config pairs `base` and `chance` with their own metrics (config/compare.py)
    try:
        mine, theirs = _paired(claim, arm, versus, arms)
    except KeyError as e:
        return {**claim, "verdict": "pending", "note": str(e).strip("'\"")}
    shared = [i for i in mine if i in theirs]
    if len(shared) != len(mine) or len(shared) != len(theirs):
        return {**claim, "verdict": "pending", "note": "the two sides were scored on different examples"}
    a, b = [mine[i] for i in shared], [theirs[i] for i in shared]
    low, high = paired_difference_ci(b, a, samples, seed)
    return {**claim, **_verdict(claim, float(np.mean(a) - np.mean(b)), low, high), "n": len(a)}


def _cost_of(arm: ArmSummary, quantity: str) -> float | None:
    """One arm's trainable_parameters, artefact_bytes, peak_memory (bytes) or train_seconds; None if unrecorded."""
    cost = arm.metrics.get("cost") or {}
    value = {
        "trainable_parameters": cost.get("trainable_parameters"),
        "artefact_bytes": cost.get("artefact_bytes"),
        "peak_memory": arm.peak_memory or None,
        "train_seconds": arm.training.get("seconds"),
    }[quantity]
    return None if value is None else float(value)


MACHINE_DEPENDENT = ("peak_memory", "train_seconds")


def _machine(arm: ArmSummary) -> tuple[Any, Any]:
    env = arm.metrics.get("environment") or {}
    return (env.get("cpu") or {}).get("model"), env.get("gpu")


def _cost_ratio(claim: Mapping[str, Any], arm: ArmSummary, versus: ArmSummary) -> dict[str, Any]:
    quantity = claim["metric"].split(":", 1)[1]
    mine, theirs = _cost_of(arm, quantity), _cost_of(versus, quantity)
    if not mine or not theirs:
        missing = arm.name if not mine else versus.name
        return {"verdict": "not applicable", "note": f"{missing} has no {quantity} record"}
    ratio = mine / theirs
    if claim.get("at_most") is not None:
        holds = ratio < float(claim["at_most"])
    else:
        holds = ratio > float(claim["at_least"])
    judged = {"ratio": ratio, "values": [mine, theirs], "verdict": "reproduced" if holds else "not reproduced", "n": 1}
    if quantity in MACHINE_DEPENDENT and _machine(arm) != _machine(versus):
        judged["caveat"] = "measured on different machines"
    return judged


GAIN_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "single_reference:rouge1")
GAIN_HEADERS = ["arm", "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "ROUGE-1, one ref", "n"]
GAIN_NOTE = (
    "Each arm minus the zero-shot arm, example by example on the same test examples: the mean difference in F1 x100 "
    "with its paired 95% BCa bootstrap CI; best of the references, and in the last column the mean over single "
    "references (the lab's protocol)."
)


def gain_rows(arms: Sequence[ArmSummary], samples: int = 1000, seed: int = 0) -> list[list[str]]:
    """Every arm against the zero-shot arm on each ROUGE metric, paired (none without a zero-shot arm)."""
    from tunelab.evaluation.metrics import paired_difference_ci
    from tunelab.reporting.html import baseline_arm

    base = baseline_arm(arms)
    if base is None:
        return []
    theirs = _task_scores(base, GAIN_METRICS)
    rows = []
    for arm in arms:
        if arm is base:
            continue
        mine = _task_scores(arm, GAIN_METRICS)
        ids = list(mine["rouge1"])
        if sorted(ids) != sorted(theirs["rouge1"]):
            rows.append([arm.name, *["scored on other examples"] * len(GAIN_METRICS), "-"])
            continue
        cells = []
        for metric in GAIN_METRICS:
            a, b = [mine[metric][i] for i in ids], [theirs[metric][i] for i in ids]
            low, high = paired_difference_ci(b, a, samples, seed)
            cells.append(f"{np.mean(a) - np.mean(b):+.2f} [{low:+.2f}, {high:+.2f}]")
        rows.append([arm.name, *cells, str(len(ids))])
    return rows


def _verdict(claim: Mapping[str, Any], delta: float, low: float, high: float) -> dict[str, Any]:
    if claim.get("at_most") is not None:
        threshold = float(claim["at_most"])
        verdict = "reproduced" if high < threshold else "not reproduced" if low > threshold else "inconclusive"
    else:
        threshold = float(claim["at_least"])
        verdict = "reproduced" if low > threshold else "not reproduced" if high < threshold else "inconclusive"
    return {"delta": delta, "ci95_low": low, "ci95_high": high, "verdict": verdict}


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at 0 or n successes, where a bootstrap collapses)."""
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def judge_claims(directory: Path, arms: Sequence[ArmSummary]) -> list[dict[str, Any]]:
    path = Path(directory) / CLAIMS_FILE
    if not path.is_file():
        return []
    return [judge(c, arms) for c in json.loads(path.read_text())]


def _cost_text(metric: str, value: float) -> str:
    quantity = metric.split(":", 1)[1]
    if quantity in ("artefact_bytes", "peak_memory"):
        return human_bytes(int(value))
    return f"{value / 60:.0f} min" if quantity == "train_seconds" else f"{value:,.0f}"


CLAIM_HEADERS = ["claim", "arm - versus", "metric", "difference (95% CI) or ratio", "needs", "n", "verdict"]


def claim_rows(judged: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            c["claim"],
            f"{c['arm']} - {c['versus']}",
            c["metric"],
            _measured(c),
            _needs(c),
            str(c.get("n", "-")),
            c["verdict"],
        ]
        for c in judged
    ]


def _measured(c: Mapping[str, Any]) -> str:
    if "ratio" in c:
        values = " / ".join(_cost_text(c["metric"], v) for v in c["values"])
        return f"x{c['ratio']:.3g} ({values})" + (f", {c['caveat']}" if "caveat" in c else "")
    if "delta" in c:
        return f"{c['delta']:+.2f} [{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}]"
    return c.get("note", "-")


def _needs(c: Mapping[str, Any]) -> str:
    at_most = c.get("at_most") is not None
    threshold = float(c["at_most"] if at_most else c["at_least"])
    shown = f"x{threshold:g}" if c["metric"].startswith("cost:") else f"{threshold:+.2f}"
    return ("<= " if at_most else ">= ") + shown
