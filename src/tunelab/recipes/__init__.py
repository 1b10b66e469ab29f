"""Recipes: short, readable end-to-end flows assembled from the library's components. (Light flows live with
their package: data preview is `tunelab.data.preview`.)"""

from tunelab.recipes.adapters import merge_run, soft_prompt_neighbours
from tunelab.recipes.benchmark import benchmark, benchmark_session, measure_forgetting
from tunelab.recipes.compare import Comparison, compare
from tunelab.recipes.components import open_run
from tunelab.recipes.evaluate import evaluate
from tunelab.recipes.export import export_run
from tunelab.recipes.finetune import FinetuneResult, finetune
from tunelab.recipes.generate import open_for_generation, summarize
from tunelab.recipes.sweep import parse_grid, sweep

__all__ = [
    "Comparison",
    "FinetuneResult",
    "benchmark",
    "benchmark_session",
    "compare",
    "evaluate",
    "export_run",
    "finetune",
    "measure_forgetting",
    "merge_run",
    "open_for_generation",
    "open_run",
    "parse_grid",
    "soft_prompt_neighbours",
    "summarize",
    "sweep",
]
