"""Recipes: short, readable end-to-end flows assembled from the library's components. (Light flows live with
their package: data preview is `tunelab.data.preview`.)

The flows load on first use (PEP 562), so that a light one (the comparison's orchestration, which runs each
arm in a process of its own) imports no torch. A module's name is never one of the functions exported here:
importing it would replace the function on the package."""

from typing import TYPE_CHECKING

from tunelab.lazy import lazy_exports

_LAZY = {
    "merge_run": "adapters",
    "soft_prompt_neighbours": "adapters",
    "benchmark": "benchmarking",
    "benchmark_session": "benchmarking",
    "measure_forgetting": "benchmarking",
    "Comparison": "comparing",
    "compare": "comparing",
    "open_run": "components",
    "evaluate": "evaluating",
    "export_run": "export",
    "FinetuneResult": "finetuning",
    "finetune": "finetuning",
    "open_for_generation": "generate",
    "summarize": "generate",
    "parse_grid": "sweeping",
    "sweep": "sweeping",
}

__getattr__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:
    from tunelab.recipes.adapters import merge_run, soft_prompt_neighbours
    from tunelab.recipes.benchmarking import benchmark, benchmark_session, measure_forgetting
    from tunelab.recipes.comparing import Comparison, compare
    from tunelab.recipes.components import open_run
    from tunelab.recipes.evaluating import evaluate
    from tunelab.recipes.export import export_run
    from tunelab.recipes.finetuning import FinetuneResult, finetune
    from tunelab.recipes.generate import open_for_generation, summarize
    from tunelab.recipes.sweeping import parse_grid, sweep

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
