"""Instruction prompt templates: several FLAN-style phrasings per task.

A phrasing renders the prompt (instruction + input); the completion is the target text. Training samples
one phrasing per example (seeded); evaluation uses one fixed phrasing so scores are comparable.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tunelab.config.schema import TemplateConfig


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PIECE = re.compile(r"\[\[(.*?)\]\]|\{([A-Za-z_][A-Za-z0-9_]*)\}", re.S)


@dataclass(frozen=True)
class Template:
    """A prompt with `{column}` placeholders (`{input}` is the example's input, cut to max_input_tokens);
    text inside `[[ ]]` appears only when every column it names is non-empty (Alpaca's optional input)."""

    prompt: str
    custom: bool = False  # the user's template.custom: it wins over a record layout's own template

    def render(self, text: str, fields: Mapping[str, str] | None = None, input_column: str = "input") -> str:
        values = {**(fields or {}), "input": text, input_column: text}

        def value(name: str) -> str:
            if name not in values:
                raise DataError(
                    f"template placeholder {{{name}}} is not a column of the record; columns: "
                    f"{', '.join(sorted(values))}"
                )
            return values[name]

        def piece(m: re.Match) -> str:
            if m.group(2) is not None:
                return value(m.group(2))
            inner = m.group(1)
            if any(not value(n).strip() for n in _PLACEHOLDER.findall(inner)):
                return ""
            return _PLACEHOLDER.sub(lambda x: value(x.group(1)), inner)

        return _PIECE.sub(piece, self.prompt)

    @property
    def instruction(self) -> str:
        """The template's words without the placeholders, e.g. to initialise a soft prompt."""
        words = _PIECE.sub(" ", self.prompt)
        return " ".join(words.split())


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

    def __init__(
        self, task: str, train_phrasings: str | Sequence[int] = "all", eval_phrasing: int = 0, custom: str | None = None
    ):
        if custom is not None:
            if not _PLACEHOLDER.search(custom):
                raise ConfigError("template.custom needs a placeholder: {input} or a column such as {instruction}")
            phrasings: tuple[Template, ...] = (Template(custom, custom=True),)
            train_phrasings, eval_phrasing = "all", 0
        elif task in TEMPLATES:
            phrasings = TEMPLATES[task]
        else:
            raise ConfigError(f"template.task {task!r} is unknown; tasks: {', '.join(TEMPLATES)}")
        n = len(phrasings)
        idx = list(range(n)) if isinstance(train_phrasings, str) else list(train_phrasings)
        for i in [*idx, eval_phrasing]:
            if not 0 <= i < n:
                raise ConfigError(f"template phrasing index {i} out of range for {task!r} (0..{n - 1})")
        self.phrasings = phrasings
        self.train = [phrasings[i] for i in idx]
        self.eval = phrasings[eval_phrasing]

    @classmethod
    def from_config(cls, template: TemplateConfig) -> TemplateSet:
        """The template set a config's `template:` section names."""
        return cls(template.task, template.train_phrasings, template.eval_phrasing, template.custom)

    def for_training(self, n_examples: int, seed: int) -> list[Template]:
        rng = random.Random(seed)
        return [rng.choice(self.train) for _ in range(n_examples)]
