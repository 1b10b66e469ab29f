"""Summarize new text with a base model or a finished run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tunelab.config.loader import build_config
from tunelab.data.records import Example
from tunelab.evaluation.generation import generate_texts
from tunelab.inference.adapters import attach_adapter
from tunelab.recipes.components import Session, open_session
from tunelab.recipes.components import open_run


def open_for_generation(
    model: str | None = None,
    run: str | Path | None = None,
    adapter: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> Session:
    if run is not None:
        return open_run(run)
    cfg = build_config({"model": {"name": model}} if model else {}, overrides)
    session = open_session(cfg, quantize_for_method=False)
    if adapter is not None:
        session.loaded.model = attach_adapter(session.model, Path(adapter), cfg.model.name)
    return session


def summarize(
    session: Session, texts: Sequence[str], max_new_tokens: int | None = None, show_progress: bool = False
) -> list[str]:
    prompts = [
        session.encoder.encode_for_generation(session.templates.eval, Example(str(i), t, ()))
        for i, t in enumerate(texts)
    ]
    ecfg = session.cfg.evaluation
    return generate_texts(
        session.model,
        session.loaded.tokenizer,
        prompts,
        session.loaded.arch,
        batch_size=ecfg.batch_size,
        max_new_tokens=max_new_tokens or ecfg.max_new_tokens,
        num_beams=ecfg.num_beams,
        show_progress=show_progress,
        precision=ecfg.precision,
    )
