"""Recipes: short, readable end-to-end flows assembled from the library's components."""

from tunelab.recipes.evaluate import evaluate, open_run
from tunelab.recipes.finetune import FinetuneResult, finetune
from tunelab.recipes.generate import open_for_generation, summarize

__all__ = ["FinetuneResult", "evaluate", "finetune", "open_for_generation", "open_run", "summarize"]
