"""Benchmark suites (MMLU, SuperGLUE/GLUE, summarization, translation) and forgetting measurement."""

from importlib import import_module as _import_module

from tunelab.benchmarks.spec import TaskSpec, available_tasks, get_task

_LAZY = {"forgetting_report": "forgetting", "forgetting_table": "forgetting", "paired_bootstrap_delta": "forgetting",
         "TaskResult": "runner", "run_suite": "runner", "run_task": "runner"}  # these import torch


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_import_module(f"tunelab.benchmarks.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tunelab.benchmarks' has no attribute {name!r}")


__all__ = ["TaskResult", "TaskSpec", "available_tasks", "forgetting_report", "forgetting_table", "get_task",
           "paired_bootstrap_delta", "run_suite", "run_task"]
