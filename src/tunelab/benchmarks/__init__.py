"""Benchmark suites (MMLU, SuperGLUE/GLUE, summarization, translation) and forgetting measurement."""

from tunelab.benchmarks.forgetting import forgetting_report, forgetting_table, paired_bootstrap_delta
from tunelab.benchmarks.runner import TaskResult, run_suite, run_task
from tunelab.benchmarks.spec import TaskSpec, available_tasks, get_task

__all__ = ["TaskResult", "TaskSpec", "available_tasks", "forgetting_report", "forgetting_table", "get_task",
           "paired_bootstrap_delta", "run_suite", "run_task"]
