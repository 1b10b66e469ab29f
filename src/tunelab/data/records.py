"""The one record type every dataset is turned into."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.data.readers import Row
from tunelab.errors import DataError


@dataclass(frozen=True)
class Example:
    id: str
    input: str  # what a template's {input} receives (and what truncation cuts)
    references: tuple[str, ...]  # first one is the training target; all are used for evaluation
    meta: dict = field(default_factory=dict, compare=False)
    fields: dict[str, str] = field(default_factory=dict, compare=False)
    """The record's other text columns, for template placeholders such as {instruction}."""
    input_column: str = field(default="input", compare=False)
    messages: tuple[dict, ...] | None = field(default=None, compare=False)
    """Chat records: the whole conversation ({role, content, weight}); the last message is the target."""
    system: str | None = field(default=None, compare=False)
    template: str | None = field(default=None, compare=False)
    """The record layout's own prompt (Alpaca's), used unless template.custom is set."""

    @property
    def target(self) -> str:
        return self.references[0]


def rows_to_examples(
    rows: Sequence[tuple[int, Row]],
    *,
    source: str | Path,
    input_column: str,
    target_columns: Sequence[str],
    id_column: str | None,
    require_targets: bool = True,
) -> list[Example]:
    """Map raw rows to Examples; a missing column or an empty text names the file, line and column."""
    if not rows:
        raise DataError(f"{source}: no records")
    wanted = [input_column, *(target_columns if require_targets else []), *([id_column] if id_column else [])]
    first_line, first = rows[0]
    missing = [c for c in wanted if c not in first]
    if missing:
        raise DataError(
            f"{source}: column(s) {', '.join(map(repr, missing))} not found; "
            f"columns present: {', '.join(map(repr, first.keys()))}"
        )
    examples = []
    for lineno, row in rows:
        for c in wanted:
            if c not in row:
                raise DataError(f"{source}:{lineno}: column {c!r} missing in this record")
        text = row[input_column]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{source}:{lineno}: column {input_column!r} is empty or not text")
        refs = []
        for c in target_columns if require_targets else ():
            ref = row[c]
            if not isinstance(ref, str) or not ref.strip():
                raise DataError(f"{source}:{lineno}: column {c!r} is empty or not text")
            refs.append(ref.strip())
        ex_id = str(row[id_column]) if id_column else str(lineno)
        fields = {k: v.strip() for k, v in row.items() if isinstance(v, str) and k != input_column}
        examples.append(
            Example(id=ex_id, input=text.strip(), references=tuple(refs), fields=fields, input_column=input_column)
        )
    return examples


def first_n(examples: Sequence[Example], n: int | None) -> list[Example]:
    """Evaluation subsets are the first n examples, so every run scores the same ones."""
    return list(examples[:n] if n else examples)


def seeded_sample(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """Training subsets: a seeded sample of n examples."""
    if not n or n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(list(examples), n)
