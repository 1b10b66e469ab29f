"""Data: readers, record layouts, instruction templates, prompt encoding, batching and mixtures.

Names load on first use (PEP 562): reading and previewing data must not import torch (collate does)."""

from importlib import import_module as _import_module

_LAZY = {
    "LengthGroupedBatches": "collate", "TrainCollator": "collate", "generation_batch": "collate",
    "IGNORE_INDEX": "encoding", "Encoded": "encoding", "PromptEncoder": "encoding", "TruncationStats": "encoding",
    "read_records": "readers", "Example": "records", "rows_to_examples": "records",
    "BUILTIN_DATASETS": "sources", "load_split": "sources",
    "TEMPLATES": "templates", "Template": "templates", "TemplateSet": "templates", "register_templates": "templates",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_import_module(f"tunelab.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tunelab.data' has no attribute {name!r}")


__all__ = sorted(_LAZY)
