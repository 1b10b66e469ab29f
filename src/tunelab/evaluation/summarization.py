"""Evaluating a model on a summarization split: generate, score, and keep every prediction."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.config.schema import EvaluationConfig
from tunelab.data.encoding import Encoded, PromptEncoder
from tunelab.data.records import Example
from tunelab.data.templates import Template
from tunelab.evaluation import metrics
from tunelab.evaluation.generation import generate_texts_sharded
from tunelab.modeling import Arch
from tunelab.models.precision import resolve_precision


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]


def evaluate_summaries(
    model: torch.nn.Module,
    tokenizer,
    arch: Arch,
    encoder: PromptEncoder,
    template: Template,
    examples: Sequence[Example],
    cfg: EvaluationConfig,
    seed: int = 0,
    desc: str = "evaluate",
) -> EvalResult:
    encoder.stats.reset()  # count truncation for this split alone
    prompts = [encoder.encode_for_generation(template, ex) for ex in examples]
    result = score_prompts(model, tokenizer, arch, prompts, examples, cfg, seed, desc)
    result.metrics["truncation"] = encoder.stats.as_dict()
    return result


def score_prompts(
    model: torch.nn.Module,
    tokenizer,
    arch: Arch,
    prompts: Sequence[Encoded],
    examples: Sequence[Example],
    cfg: EvaluationConfig,
    seed: int = 0,
    desc: str = "evaluate",
) -> EvalResult:
    """Generate from already-encoded prompts (one per example) and score against the examples' references."""
    t0 = time.perf_counter()
    preds = generate_texts_sharded(
        model,
        tokenizer,
        prompts,
        arch,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        num_beams=cfg.num_beams,
        desc=desc,
        precision=cfg.precision,
    )
    gen_seconds = time.perf_counter() - t0
    refs = [list(ex.references) for ex in examples]
    device = next(model.parameters()).device
    result: dict[str, Any] = {
        "examples": len(examples),
        "generation_seconds": gen_seconds,
        "precision": resolve_precision(cfg.precision, device),
        "examples_per_second": len(examples) / gen_seconds if gen_seconds else None,
        "empty_predictions": sum(not p for p in preds),
    }
    per_example = metrics.rouge_per_example(preds, refs) if "rouge" in cfg.metrics else [{} for _ in preds]
    if "rouge" in cfg.metrics:
        result["rouge"] = metrics.aggregate_rouge(per_example, cfg.bootstrap_samples, seed)
        if any(len(r) > 1 for r in refs):  # the other protocol, comparable with single-reference tables
            result["rouge_single_reference"] = metrics.rouge_single_reference(preds, refs, cfg.bootstrap_samples, seed)
    if "bleu" in cfg.metrics:
        result["bleu"] = metrics.bleu(preds, refs)
    rows = [
        {
            "id": ex.id,
            "prompt": enc.prompt if enc.prompt is not None else tokenizer.decode(enc.input_ids),
            "prediction": p,
            "references": list(ex.references),
            **({"rouge": {k: round(v["f1"], 3) for k, v in s.items()}} if s else {}),
        }
        for ex, enc, p, s in zip(examples, prompts, preds, per_example, strict=True)
    ]
    return EvalResult(metrics=result, predictions=rows)
