"""Cross-check against lm-evaluation-harness: export a tunelab multiple-choice task (same documents, same
prompt, same choices) as an lm-eval custom task reading local files, run lm-eval's HF model on it, and
return its per-document results for comparison. Needs `pip install lm-eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tunelab.benchmarks.loaders import evaluation_documents
from tunelab.benchmarks.prompts import choices_of, label_of, render
from tunelab.benchmarks.runner import fewshot_prefix
from tunelab.benchmarks.spec import TaskSpec


def export_task(spec: TaskSpec, folder: Path) -> str:
    """Write the task's selected documents (prompt text and choices pre-rendered) and an lm-eval YAML."""
    if spec.kind != "multiple_choice":
        raise ValueError("only multiple-choice tasks are exported")
    folder.mkdir(parents=True, exist_ok=True)
    docs = evaluation_documents(spec)
    rows = []
    for d in docs:
        choices = choices_of(spec, d)
        if not all(c.startswith(" ") for c in choices):
            raise ValueError("choices must start with the space lm-eval's target delimiter adds")
        rows.append(
            {
                "text": fewshot_prefix(spec, d) + render(spec.prompt, d),
                "choices": [c[1:] for c in choices],
                "label": label_of(spec, d),
            }
        )
    data = folder / f"{spec.name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    name = f"tunelab_{spec.name}"
    (folder / f"{name}.yaml").write_text(
        yaml.safe_dump(
            {
                "task": name,
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"validation": str(data)}},
                "output_type": "multiple_choice",
                "validation_split": "validation",
                "doc_to_text": "{{text}}",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{label}}",
                "target_delimiter": " ",
                "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
            }
        )
    )
    return name


def run_lm_eval(model_path: str | Path, spec: TaskSpec, folder: Path, batch_size: int = 8) -> dict[str, Any]:
    """lm-eval's accuracy and per-document log-likelihoods on the exported task (0-shot: shots are in the text)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    name = export_task(spec, folder)
    out = simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_path},dtype=float32",
        tasks=[name],
        task_manager=TaskManager(include_path=str(folder)),
        num_fewshot=0,
        batch_size=batch_size,
        device="cpu",
        log_samples=True,
    )
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    return {
        "accuracy": 100 * out["results"][name]["acc,none"],
        "loglik": [[float(r[0][0]) for r in s["resps"]] for s in samples],
        "correct": [int(s["acc"]) for s in samples],
    }
