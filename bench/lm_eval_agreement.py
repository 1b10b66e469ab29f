"""tunelab vs lm-evaluation-harness on smollm2-135m-instruct: same documents, prompts, choices and shots.

    python bench/lm_eval_agreement.py [--limit 50]

Prints each side's accuracy, how many per-document predictions agree, and the largest log-likelihood
difference; writes bench/results/lm_eval_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    import torch

    import tunelab
    from tunelab.benchmarks import get_task, run_task
    from tunelab.benchmarks.lm_eval_bridge import run_lm_eval
    from tunelab.models import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=50)
    args = ap.parse_args()
    path = tunelab.pull_model("smollm2-135m-instruct")
    loaded = load_model(tunelab.build_config({}).model, device=torch.device("cpu"))
    tasks = [
        ("boolq", {}),
        ("copa", {}),
        ("sst2", {}),
        ("mmlu", {"subjects": ["high_school_geography", "marketing"], "num_fewshot": 5}),
    ]
    rows = []
    for name, extra in tasks:
        spec = get_task(name, limit=args.limit, **extra)
        t0 = time.perf_counter()
        ours = run_task(loaded.model, loaded.tokenizer, "causal", spec, show_progress=False)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            theirs = run_lm_eval(path, spec, Path(tmp))
        t2 = time.perf_counter()
        diff = max(abs(a - b) for x, y in zip(ours.per_example["loglik"], theirs["loglik"]) for a, b in zip(x, y))
        agree = sum(a == b for a, b in zip(ours.per_example["correct"], theirs["correct"]))
        rows.append(
            {
                "task": name,
                "shots": spec.num_fewshot,
                "n": ours.n,
                "tunelab_accuracy": ours.score,
                "lm_eval_accuracy": theirs["accuracy"],
                "same_prediction": agree,
                "max_loglik_diff": diff,
                "tunelab_seconds": t1 - t0,
                "lm_eval_seconds": t2 - t1,
            }
        )
    print(
        "| task | shots | n | tunelab acc | lm-eval acc | same prediction | max |loglik diff| | time tunelab / lm-eval |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['shots']} | {r['n']} | {r['tunelab_accuracy']:.1f} | {r['lm_eval_accuracy']:.1f} | "
            f"{r['same_prediction']}/{r['n']} | {r['max_loglik_diff']:.2e} | "
            f"{r['tunelab_seconds'] / r['lm_eval_seconds']:.2f} |"
        )
    out = Path(__file__).parent / "results" / "lm_eval_agreement.json"
    out.parent.mkdir(exist_ok=True)
    from importlib.metadata import version

    from tunelab.environment import describe_environment

    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "lm_eval_version": version("lm-eval"),
                "precision": "fp32",
                "environment": describe_environment(torch.device("cpu")),
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
