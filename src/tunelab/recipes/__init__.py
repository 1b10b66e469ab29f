"""Recipes: short, readable end-to-end flows assembled from the library's components.

Names load on first use (PEP 562), so a light recipe (data preview) does not import the heavy ones."""

from importlib import import_module as _import_module

_LAZY = {
    "benchmark": "benchmark", "benchmark_session": "benchmark", "measure_forgetting": "benchmark",
    "merge_run": "adapters", "soft_prompt_neighbours": "adapters",
    "Comparison": "compare", "compare": "compare",
    "evaluate": "evaluate", "open_run": "evaluate",
    "export_run": "export",
    "FinetuneResult": "finetune", "finetune": "finetune",
    "open_for_generation": "generate", "summarize": "generate",
    "preview_data": "preview",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_import_module(f"tunelab.recipes.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tunelab.recipes' has no attribute {name!r}")


__all__ = sorted(_LAZY)
