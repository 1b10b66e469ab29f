"""`tunelab data preview`: the first training examples exactly as the model will see them (chat template
applied), with the trained tokens marked, and length and truncation statistics over the whole training set.
Loads the tokenizer and the model's config, never its weights; from a local or built-in model it imports neither
torch nor transformers (`data/light_tokenizer.py`)."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunelab.config.schema import ExperimentConfig
from tunelab.data.encoding import IGNORE_INDEX, Encoded, PromptEncoder

MARK = ("\x1b[1;32m", "\x1b[0m")  # trained tokens on a terminal
PLAIN_MARK = ("⟦", "⟧")  # elsewhere


@dataclass
class Preview:
    examples: list[dict[str, Any]]  # id, text (marked), prompt_tokens, trained_tokens
    stats: dict[str, Any]


def _percentiles(values: Sequence[int]) -> dict[str, int]:
    if len(values) < 2:
        return {"p50": values[0], "p90": values[0], "p99": values[0], "max": values[0]} if values else {}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49]), "p90": round(q[89]), "p99": round(q[98]), "max": max(values)}


def mark_trained(tokenizer, encoded: Encoded, arch: str, marks: tuple[str, str]) -> str:
    """The example's text with every run of trained tokens wrapped in `marks`."""
    if arch == "seq2seq":  # encoder input, then the decoder's targets (all trained)
        return tokenizer.decode(encoded.input_ids) + "\n  -> " + marks[0] + tokenizer.decode(encoded.labels) + marks[1]
    out = []
    pairs = zip(encoded.input_ids, encoded.labels)
    for trained, group in itertools.groupby(pairs, key=lambda p: p[1] != IGNORE_INDEX):
        text = tokenizer.decode([t for t, _ in group])
        out.append(f"{marks[0]}{text}{marks[1]}" if trained else text)
    return "".join(out)


def _light_tokenizer(cfg: ExperimentConfig):
    """The tokenizer and architecture from a local (or built-in) model folder without importing transformers or
    torch; None where that is not possible (a hub id, a .gguf file, a slow-only tokenizer)."""
    import json
    from pathlib import Path

    from tunelab.data.light_tokenizer import LightTokenizer
    from tunelab.models.registry import ALIASES, pull_model

    name = cfg.model.name
    folder = pull_model(name) if name in ALIASES else Path(name).expanduser()
    if not (folder / "config.json").is_file():
        return None
    tokenizer = LightTokenizer.from_folder(folder)
    if tokenizer is None:
        return None
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    arch = cfg.model.arch if cfg.model.arch != "auto" else ("seq2seq" if config.get("is_encoder_decoder") else "causal")
    return tokenizer, arch


def _transformers_tokenizer(cfg: ExperimentConfig):
    from tunelab.models.loading import load_model_config, load_tokenizer, resolve_arch, resolve_source

    source = resolve_source(cfg.model.name, revision=cfg.model.revision)
    return load_tokenizer(source, cfg.model), resolve_arch(load_model_config(source, cfg.model), cfg.model)


def preview_data(cfg: ExperimentConfig, n: int = 5, marks: tuple[str, str] = PLAIN_MARK) -> Preview:
    from tunelab.data.records import seeded_sample
    from tunelab.data.sources import load_split
    from tunelab.data.templates import TemplateSet
    from tunelab.modeling import chat_template_in_use

    tokenizer, arch = _light_tokenizer(cfg) or _transformers_tokenizer(cfg)
    encoder = PromptEncoder.from_config(cfg, tokenizer, arch, chat_template_in_use(tokenizer, arch, cfg.model))
    examples = seeded_sample(load_split(cfg.data, cfg.data.train_split), cfg.data.max_train_samples, cfg.seed)
    templates = TemplateSet.from_config(cfg.template).for_training(len(examples), cfg.seed)
    shown, lengths, trained_counts = [], [], []
    for i, (ex, template) in enumerate(zip(examples, templates)):
        enc = encoder.encode_for_training(template, ex)
        trained = sum(t != IGNORE_INDEX for t in enc.labels)
        lengths.append(enc.length)
        trained_counts.append(trained)
        if i < n:
            shown.append(
                {
                    "id": ex.id,
                    "text": mark_trained(tokenizer, enc, arch, marks),
                    "tokens": enc.length,
                    "trained_tokens": trained,
                }
            )
    stats = {
        "examples": len(examples),
        "arch": arch,
        "chat_template": encoder.use_chat_template,
        "inputs_truncated": encoder.stats.inputs_truncated,
        "targets_truncated": encoder.stats.targets_truncated,
        "max_input_tokens": cfg.template.max_input_tokens,
        "max_target_tokens": cfg.template.max_target_tokens,
        "tokens": _percentiles(lengths),
        "trained_tokens": _percentiles(trained_counts),
    }
    return Preview(shown, stats)


def format_preview(p: Preview) -> str:
    lines = []
    for ex in p.examples:
        lines += [f"--- example {ex['id']} ({ex['tokens']} tokens, {ex['trained_tokens']} trained) ---", ex["text"], ""]
    s = p.stats
    lines.append(
        f"training set: {s['examples']} examples ({s['arch']}" + (", chat template" if s["chat_template"] else "") + ")"
    )
    lines.append(
        f"inputs cut at {s['max_input_tokens']} tokens: {s['inputs_truncated']}; "
        f"targets cut at {s['max_target_tokens']}: {s['targets_truncated']}"
    )
    for key in ("tokens", "trained_tokens"):
        lines.append(f"{key.replace('_', ' ')} per example: " + ", ".join(f"{k} {v}" for k, v in s[key].items()))
    return "\n".join(lines)
