from tunelab.evaluation.generation import generate_texts
from tunelab.evaluation.metrics import ROUGE_TYPES, bleu, rouge, rouge_per_example, sentence_per_line
from tunelab.evaluation.summarization import EvalResult, evaluate_summaries

__all__ = [
    "ROUGE_TYPES",
    "EvalResult",
    "bleu",
    "evaluate_summaries",
    "generate_texts",
    "rouge",
    "rouge_per_example",
    "sentence_per_line",
]
