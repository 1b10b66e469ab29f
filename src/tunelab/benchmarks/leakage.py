"""Proof that nothing scored was trained on: each benchmark task's documents and the target test set are
looked up among the training inputs, and the counts go into metrics.json (`leakage`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tunelab.benchmarks.loaders import evaluation_documents, evaluation_pool
from tunelab.benchmarks.prompts import document_texts
from tunelab.benchmarks.spec import TaskSpec
from tunelab.data.records import Example


def _found(texts: Iterable[set[str]], trained: set[str]) -> int:
    return sum(bool(t & trained) for t in texts)


def leakage_report(
    training: Sequence[Example], specs: Sequence[TaskSpec], target_name: str, target_scored: Sequence[Example]
) -> dict[str, Any]:
    """Per scored set: how many documents there are and how many of them appear among the training inputs
    (as a rendered prompt, or one of their texts used as an input). Every count should be 0."""
    trained = {e.input.strip() for e in training}
    report: dict[str, Any] = {
        target_name: {
            "scored": len(target_scored),
            "scored_in_training": _found(({e.input.strip()} for e in target_scored), trained),
        }
    }
    for spec in specs:
        scored, pool = evaluation_documents(spec), evaluation_pool(spec)
        report[spec.name] = {
            "scored": len(scored),
            "evaluation_set": len(pool),
            "scored_in_training": _found((document_texts(spec, d) for d in scored), trained),
            "evaluation_set_in_training": _found((document_texts(spec, d) for d in pool), trained),
        }
    return report
