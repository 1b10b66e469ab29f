"""ROUGE and BLEU, computed by the reference libraries (`rouge-score`, `sacrebleu`).

Protocol (also written into every metrics.json):
- ROUGE-1/2/L/Lsum from `rouge_score.RougeScorer(use_stemmer=True)`; scores x100.
- For ROUGE-Lsum, sentences go one per line: text is split after `.`, `!` or `?` followed by
  whitespace, and existing line breaks are kept. The same prepared strings feed every ROUGE type.
- Several references: per example and per ROUGE type, the reference with the highest F1
  (`RougeScorer.score_multi`); the corpus score is the mean over examples of precision, recall and F1.
  ROUGE-1 recall is thus matched unigrams / reference unigrams of the best-matching reference.
- 95% confidence intervals: BCa bootstrap over examples (scipy.stats.bootstrap, seeded).
- BLEU: `sacrebleu.metrics.BLEU` corpus score with all references (variable counts allowed); its
  signature is recorded.
- Where examples have several references, the single-reference protocol is reported too
  (`rouge_single_reference`): every (prediction, reference) pair scored on its own, the mean over all
  pairs, as a test set scored one reference row at a time (e.g. DialogSum's 500 dialogues x 3 summaries
  scored as 1,500 rows); its CI resamples examples (each example's mean over its references).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

ROUGE_PROTOCOL = (
    "rouge-score {version}, use_stemmer=True, sentence-per-line for rougeLsum "
    "(regex split after .!?), multi-reference: max F1 per example and type (score_multi), "
    "mean over examples, x100, 95% BCa bootstrap CI"
)


def sentence_per_line(text: str) -> str:
    lines: list[str] = []
    for line in text.strip().splitlines():
        lines.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return "\n".join(lines)


def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_per_example(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> list[dict[str, dict[str, float]]]:
    """Per example: {rouge type: {precision, recall, f1}} in 0-100, best reference per type."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    scorer = _scorer()
    out = []
    for pred, refs in zip(predictions, references, strict=True):
        if not refs:
            raise ValueError("an example has no reference")
        scores = scorer.score_multi([sentence_per_line(r) for r in refs], sentence_per_line(pred))
        out.append(
            {
                k: {"precision": 100 * s.precision, "recall": 100 * s.recall, "f1": 100 * s.fmeasure}
                for k, s in scores.items()
            }
        )
    return out


def rouge_per_reference(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> list[list[dict[str, dict[str, float]]]]:
    """Per example and per reference: {rouge type: {precision, recall, f1}} in 0-100, each reference alone."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    scorer = _scorer()
    out = []
    for pred, refs in zip(predictions, references, strict=True):
        prepared = sentence_per_line(pred)
        out.append(
            [
                {
                    k: {"precision": 100 * s.precision, "recall": 100 * s.recall, "f1": 100 * s.fmeasure}
                    for k, s in scorer.score(sentence_per_line(ref), prepared).items()
                }
                for ref in refs
            ]
        )
    return out


def rouge_single_reference(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """The single-reference protocol: the mean over all (prediction, reference) pairs of P/R/F1; the F1 CI is
    a bootstrap over examples of each example's mean over its references (pairs of one example are not
    independent)."""
    per = rouge_per_reference(predictions, references)
    result: dict[str, dict[str, Any]] = {}
    for k in ROUGE_TYPES:
        pairs = [r[k] for refs in per for r in refs]
        per_example_f1 = [float(np.mean([r[k]["f1"] for r in refs])) for refs in per]
        result[k] = {
            "precision": float(np.mean([x["precision"] for x in pairs])),
            "recall": float(np.mean([x["recall"] for x in pairs])),
            "f1": float(np.mean([x["f1"] for x in pairs])),
            "f1_ci95": list(bootstrap_ci(per_example_f1, bootstrap_samples, seed)),
            "pairs": len(pairs),
        }
    return result


def bootstrap_ci(
    values: Sequence[float], samples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (scipy.stats.bootstrap), seeded; a point where there is no spread."""
    from scipy.stats import bootstrap

    vals = np.asarray(values, dtype=float)
    m = float(vals.mean()) if len(vals) else float("nan")
    if samples <= 0 or len(vals) < 2 or np.all(vals == vals[0]):
        return m, m
    ci = bootstrap(
        (vals,), np.mean, n_resamples=samples, confidence_level=level, method="BCa", rng=np.random.default_rng(seed)
    ).confidence_interval
    return float(ci.low), float(ci.high)


def paired_difference_ci(
    before: Sequence[float] | np.ndarray,
    after: Sequence[float] | np.ndarray,
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """BCa bootstrap interval of mean(after - before) over paired examples (scipy.stats.bootstrap, paired: the
    same examples resampled on both sides), seeded; a point where the differences do not vary."""
    from scipy.stats import bootstrap

    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(b)} and {len(a)}")
    differences = a - b
    delta = float(differences.mean()) if len(differences) else float("nan")
    if samples <= 0 or len(differences) < 2 or np.all(differences == differences[0]):
        return delta, delta
    ci = bootstrap(
        (b, a),
        lambda x, y, axis=-1: y.mean(axis=axis) - x.mean(axis=axis),
        paired=True,
        n_resamples=samples,
        confidence_level=level,
        method="BCa",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(ci.low), float(ci.high)


def rouge(
    predictions: Sequence[str], references: Sequence[Sequence[str]], bootstrap_samples: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    return aggregate_rouge(rouge_per_example(predictions, references), bootstrap_samples, seed)


def aggregate_rouge(
    per: Sequence[dict[str, dict[str, float]]], bootstrap_samples: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Corpus ROUGE from `rouge_per_example` scores: means of P/R/F1 and a bootstrap CI of F1."""
    result: dict[str, dict[str, Any]] = {}
    for k in ROUGE_TYPES:
        f1 = [p[k]["f1"] for p in per]
        result[k] = {
            "precision": float(np.mean([p[k]["precision"] for p in per])),
            "recall": float(np.mean([p[k]["recall"] for p in per])),
            "f1": float(np.mean(f1)),
            "f1_ci95": list(bootstrap_ci(f1, bootstrap_samples, seed)),
        }
    return result


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """sacrebleu's layout: one stream per reference position; examples with fewer references get None there
    (sacrebleu's documented way to mix reference counts, though its annotations say str)."""
    n_refs = max(len(r) for r in references)
    return cast(list[list[str]], [[refs[i] if i < len(refs) else None for refs in references] for i in range(n_refs)])


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    from sacrebleu.metrics import BLEU

    metric = BLEU()
    score = metric.corpus_score(list(predictions), reference_streams(references))
    return {
        "score": float(score.score),
        "precisions": [float(p) for p in score.precisions],
        "brevity_penalty": float(score.bp),
        "signature": str(metric.get_signature()),
    }


def rouge_protocol() -> str:
    from importlib.metadata import version

    return ROUGE_PROTOCOL.format(version=version("rouge-score"))
