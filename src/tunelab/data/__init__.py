"""Data: readers, record layouts, instruction templates, prompt encoding, batching and mixtures.

Names load on first use (PEP 562): reading and previewing data must not import torch (collate does)."""

from tunelab.lazy import lazy_exports

_LAZY = {
    "LengthGroupedBatches": "collate",
    "TrainCollator": "collate",
    "generation_batch": "collate",
    "IGNORE_INDEX": "encoding",
    "Encoded": "encoding",
    "PromptEncoder": "encoding",
    "TruncationStats": "encoding",
    "read_records": "readers",
    "Example": "records",
    "rows_to_examples": "records",
    "BUILTIN_DATASETS": "sources",
    "load_split": "sources",
    "TEMPLATES": "templates",
    "Template": "templates",
    "TemplateSet": "templates",
    "register_templates": "templates",
}

__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = sorted(_LAZY)
