"""Running benchmark tasks on a model: multiple choice by log-likelihood rank classification,
generation tasks by greedy decoding scored with ROUGE or BLEU/chrF."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.benchmarks.loaders import Doc, evaluation_documents, load_documents
from tunelab.benchmarks.prompts import choices_of, label_of, references_of, render
from tunelab.benchmarks.scoring import Request, encode_pair, expected_calibration_error, loglikelihoods
from tunelab.benchmarks.spec import TaskSpec
from tunelab.data.encoding import PromptEncoder
from tunelab.data.records import Example
from tunelab.data.templates import Template
from tunelab.errors import DataError
from tunelab.evaluation import metrics
from tunelab.evaluation.generation import generate_texts
from tunelab.modeling import Arch

WHOLE_INPUT = Template("{input}")  # a benchmark renders its own prompt


@dataclass
class TaskResult:
    task: str
    kind: str
    main_metric: str
    score: float
    n: int
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    per_example: dict[str, list] = field(default_factory=dict)  # what the bootstrap resamples

    @property
    def examples_per_second(self) -> float:
        return self.n / self.seconds if self.seconds else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "examples_per_second": self.examples_per_second}


def fewshot_prefix(spec: TaskSpec, doc: Doc) -> str:
    prefix = render(spec.description_prompt, doc) if spec.description_prompt else ""
    if spec.num_fewshot and spec.loader == "mmlu":
        pool = [d for d in load_documents(spec, spec.fewshot_split) if d["subject"] == doc["subject"]]
        for shot in pool[: spec.num_fewshot]:
            prefix += render(spec.prompt, shot) + choices_of(spec, shot)[label_of(spec, shot)] + "\n\n"
    return prefix


def run_multiple_choice(
    model, tokenizer, arch: Arch, spec: TaskSpec, docs: Sequence[Doc], batch_size: int, show_progress: bool
) -> TaskResult:
    t0 = time.perf_counter()
    prefixes: dict[str, str] = {}
    requests: list[Request] = []
    spans: list[tuple[int, int]] = []
    labels: list[int] = []
    choice_texts: list[list[str]] = []
    for doc in docs:
        key = doc.get("subject", "")
        if key not in prefixes:
            prefixes[key] = fewshot_prefix(spec, doc)
        context = prefixes[key] + render(spec.prompt, doc)
        choices = choices_of(spec, doc)
        spans.append((len(requests), len(requests) + len(choices)))
        requests += [encode_pair(tokenizer, context, c, arch) for c in choices]
        labels.append(label_of(spec, doc))
        choice_texts.append(choices)
    scores = loglikelihoods(model, tokenizer, arch, requests, batch_size, desc=spec.name, show_progress=show_progress)
    correct, correct_norm, confidence = [], [], []
    for (a, b), label, choices in zip(spans, labels, choice_texts):
        s = scores[a:b]
        pred = max(range(len(s)), key=s.__getitem__)
        norm = [x / max(len(c.encode("utf-8")), 1) for x, c in zip(s, choices)]
        correct.append(int(pred == label))
        correct_norm.append(int(max(range(len(norm)), key=norm.__getitem__) == label))
        m = max(s)
        probs = [math.exp(x - m) for x in s]
        confidence.append(max(probs) / sum(probs))
    seconds = time.perf_counter() - t0
    acc = 100 * sum(correct) / len(correct)
    return TaskResult(
        task=spec.name,
        kind=spec.kind,
        main_metric="accuracy",
        score=acc,
        n=len(docs),
        seconds=seconds,
        metrics={
            "accuracy": acc,
            "accuracy_norm": 100 * sum(correct_norm) / len(correct_norm),
            "ece": 100 * expected_calibration_error(confidence, [bool(c) for c in correct]),
            "num_fewshot": spec.num_fewshot,
        },
        per_example={"correct": correct, "loglik": [scores[a:b] for a, b in spans], "label": labels},
    )


def run_generation(
    model,
    tokenizer,
    arch: Arch,
    spec: TaskSpec,
    docs: Sequence[Doc],
    batch_size: int,
    use_chat_template: bool,
    show_progress: bool,
    precision: str = "fp32",
) -> TaskResult:
    t0 = time.perf_counter()
    # the same prompt building as training and evaluation (chat template, special tokens, seq2seq EOS); the
    # task's own prompt is the whole input, cut by characters (max_input_chars), not by tokens
    encoder = PromptEncoder(tokenizer, arch, use_chat_template, max_input_tokens=sys.maxsize, max_target_tokens=1)
    prompts = []
    for i, doc in enumerate(docs):
        if spec.max_input_chars:
            doc = {k: (v[: spec.max_input_chars] if isinstance(v, str) else v) for k, v in doc.items()}
        prompts.append(encoder.encode_for_generation(WHOLE_INPUT, Example(str(i), render(spec.prompt, doc), ())))
    preds = generate_texts(
        model,
        tokenizer,
        prompts,
        arch,
        batch_size=batch_size,
        max_new_tokens=spec.max_new_tokens,
        desc=spec.name,
        show_progress=show_progress,
        precision=precision,
    )
    # keep the first line: base models often continue with another example after the answer
    preds = [p.strip().split("\n")[0].strip() if spec.metric == "translation" else p for p in preds]
    refs = [references_of(spec, d) for d in docs]
    seconds = time.perf_counter() - t0
    if spec.metric == "rouge":
        per = metrics.rouge_per_example(preds, refs)
        agg = metrics.aggregate_rouge(per, bootstrap_samples=0)
        return TaskResult(
            task=spec.name,
            kind=spec.kind,
            main_metric="rougeL",
            score=agg["rougeL"]["f1"],
            n=len(docs),
            seconds=seconds,
            metrics={k: v["f1"] for k, v in agg.items()},
            per_example={"rougeL": [p["rougeL"]["f1"] for p in per], "predictions": preds},
        )
    scores = translation_scores(preds, refs)
    return TaskResult(
        task=spec.name,
        kind=spec.kind,
        main_metric="bleu",
        score=scores["bleu"],
        n=len(docs),
        seconds=seconds,
        metrics=scores,
        per_example={"predictions": preds, "references": refs},
    )


def translation_scores(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, Any]:
    from sacrebleu.metrics import BLEU, CHRF

    from tunelab.evaluation.metrics import reference_streams

    streams = reference_streams(refs)
    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": bleu.corpus_score(list(preds), streams).score,
        "chrf": chrf.corpus_score(list(preds), streams).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def run_task(
    model,
    tokenizer,
    arch: Arch,
    spec: TaskSpec,
    *,
    batch_size: int = 8,
    use_chat_template: bool = False,
    show_progress: bool = True,
    generation_precision: str = "fp32",
) -> TaskResult:
    """Score one task. Log-likelihoods are computed in fp32 (comparable with lm-evaluation-harness);
    generation tasks decode in `generation_precision`."""
    docs = evaluation_documents(spec)
    if not docs:
        raise DataError(f"task {spec.name}: no documents")
    if spec.kind == "multiple_choice":
        return run_multiple_choice(model, tokenizer, arch, spec, docs, batch_size, show_progress)
    return run_generation(
        model, tokenizer, arch, spec, docs, batch_size, use_chat_template, show_progress, generation_precision
    )


def run_suite(model, tokenizer, arch: Arch, specs: Sequence[TaskSpec], **kwargs) -> dict[str, TaskResult]:
    return {spec.name: run_task(model, tokenizer, arch, spec, **kwargs) for spec in specs}
