"""Instruction prompt templates: several FLAN-style phrasings per task.

A phrasing renders the prompt (instruction + input); the completion is the target text. Training samples
one phrasing per example (seeded); evaluation uses one fixed phrasing so scores are comparable.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tunelab.errors import ConfigError


@dataclass(frozen=True)
class Template:
    prompt: str  # contains `{input}`

    def render(self, text: str) -> str:
        return self.prompt.replace("{input}", text)

    @property
    def instruction(self) -> str:
        """The template's words without the input, e.g. to initialise a soft prompt."""
        return " ".join(self.prompt.replace("{input}", " ").split())


TEMPLATES: dict[str, tuple[Template, ...]] = {
    "dialogue_summarization": (
        Template("Summarize the following conversation.\n\n{input}\n\nSummary:"),
        Template("{input}\n\nBriefly summarize that dialogue."),
        Template("Here is a dialogue:\n{input}\n\nWrite a short summary!"),
        Template("Dialogue:\n{input}\n\nWhat is a summary of this dialogue?"),
        Template("{input}\n\nWhat was that dialogue about, in two sentences or less?"),
        Template("Write a brief summary of this conversation between the speakers:\n{input}"),
    ),
    "summarization": (
        Template("Summarize the following text.\n\n{input}\n\nSummary:"),
        Template("{input}\n\nWrite a one-sentence summary of the text above."),
        Template("Article: {input}\n\nWhat is a short summary of this article?"),
    ),
}


def register_templates(task: str, prompts: Sequence[str]) -> None:
    """Add (or replace) a task's phrasings; each prompt needs an `{input}` placeholder."""
    for p in prompts:
        if "{input}" not in p:
            raise ConfigError(f"template for {task!r} has no {{input}} placeholder: {p!r}")
    TEMPLATES[task] = tuple(Template(p) for p in prompts)


class TemplateSet:
    """The phrasings one experiment uses, with seeded choice for training."""

    def __init__(self, task: str, train_phrasings: str | Sequence[int] = "all", eval_phrasing: int = 0,
                 custom: str | None = None):
        if custom is not None:
            if "{input}" not in custom:
                raise ConfigError("template.custom needs an {input} placeholder")
            phrasings: tuple[Template, ...] = (Template(custom),)
            train_phrasings, eval_phrasing = "all", 0
        elif task in TEMPLATES:
            phrasings = TEMPLATES[task]
        else:
            raise ConfigError(f"template.task {task!r} is unknown; tasks: {', '.join(TEMPLATES)}")
        n = len(phrasings)
        idx = list(range(n)) if train_phrasings == "all" else list(train_phrasings)
        for i in [*idx, eval_phrasing]:
            if not 0 <= i < n:
                raise ConfigError(f"template phrasing index {i} out of range for {task!r} (0..{n - 1})")
        self.phrasings = phrasings
        self.train = [phrasings[i] for i in idx]
        self.eval = phrasings[eval_phrasing]

    def for_training(self, n_examples: int, seed: int) -> list[Template]:
        rng = random.Random(seed)
        return [rng.choice(self.train) for _ in range(n_examples)]
