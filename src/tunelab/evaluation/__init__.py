"""Evaluation: generation, ROUGE/BLEU as the reference libraries compute them, and summarization runs.

Names load on first use (PEP 562): scoring saved predictions (reports, claims) must not import torch (generation
does)."""

from tunelab.lazy import lazy_exports

_LAZY = {
    "generate_texts": "generation",
    "ROUGE_TYPES": "metrics",
    "bleu": "metrics",
    "rouge": "metrics",
    "rouge_per_example": "metrics",
    "sentence_per_line": "metrics",
    "EvalResult": "summarization",
    "evaluate_summaries": "summarization",
}

__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = sorted(_LAZY)
