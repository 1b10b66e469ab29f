"""Benchmark suites (MMLU, SuperGLUE/GLUE, summarization, translation) and forgetting measurement."""

from tunelab.benchmarks.spec import TaskSpec, available_tasks, get_task
from tunelab.lazy import lazy_exports

_LAZY = {
    "forgetting_report": "forgetting",
    "forgetting_table": "forgetting",
    "paired_bootstrap_delta": "forgetting",
    "TaskResult": "runner",
    "run_suite": "runner",
    "run_task": "runner",
}  # these import torch

__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "TaskResult",
    "TaskSpec",
    "available_tasks",
    "forgetting_report",
    "forgetting_table",
    "get_task",
    "paired_bootstrap_delta",
    "run_suite",
    "run_task",
]
