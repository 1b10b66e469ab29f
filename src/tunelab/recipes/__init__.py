"""Recipes: short, readable end-to-end flows assembled from the library's components."""

from tunelab.recipes.benchmark import benchmark, benchmark_session, measure_forgetting
from tunelab.recipes.adapters import merge_run, soft_prompt_neighbours
from tunelab.recipes.compare import Comparison, compare
from tunelab.recipes.evaluate import evaluate, open_run
from tunelab.recipes.finetune import FinetuneResult, finetune
from tunelab.recipes.generate import open_for_generation, summarize

__all__ = ["Comparison", "FinetuneResult", "compare", "benchmark", "benchmark_session", "measure_forgetting", "evaluate", "finetune", "merge_run", "open_for_generation", "open_run", "soft_prompt_neighbours",
           "summarize"]
