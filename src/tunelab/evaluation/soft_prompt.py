"""Do a learned soft prompt's nearest vocabulary tokens relate to the task?

Each virtual token's k nearest vocabulary tokens (cosine similarity of input embeddings, as in the prompt
tuning paper) are checked against the task's words: the words of the instruction and the most frequent words
of the training targets. The share of virtual tokens with a task word among their neighbours is compared
with chance: the same share for vocabulary tokens drawn at random (their neighbours, themselves included).
How far training moved each virtual token from its initialisation is recorded too, since a prompt
initialised from the instruction's text starts next to task words.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from tunelab.methods.prompt_tuning import nearest_tokens

_WORD = re.compile(r"[a-z]{3,}")


def task_words(instruction: str, targets: Iterable[str], most_frequent: int = 200) -> set[str]:
    """Lower-case words of three letters or more: the instruction's, and the targets' `most_frequent`."""
    counts = Counter(w for t in targets for w in _WORD.findall(t.lower()))
    return set(_WORD.findall(instruction.lower())) | {w for w, _ in counts.most_common(most_frequent)}


def has_task_word(neighbours: Sequence[Sequence[tuple[str, float]]], words: set[str]) -> list[int]:
    """Per virtual token: 1 when one of its neighbouring tokens is (a piece of three letters or more of) a task
    word, else 0."""
    out = []
    for row in neighbours:
        pieces = {p for token, _ in row for p in _WORD.findall(token.lower())}
        out.append(int(any(p in words or any(w.startswith(p) for w in words if len(p) >= 4) for p in pieces)))
    return out


def soft_prompt_record(
    learned: torch.Tensor,
    initial: torch.Tensor | None,
    vocab: torch.Tensor,
    tokenizer,
    words: set[str],
    k: int = 5,
    chance_tokens: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The record a prompt-tuning run keeps in metrics.json (`soft_prompt`)."""
    neighbours = nearest_tokens(learned, vocab, tokenizer, k)
    hits = has_task_word(neighbours, words)
    sample = random.Random(seed).sample(range(vocab.shape[0]), min(chance_tokens, vocab.shape[0]))
    chance = [  # in slices: a (slice x vocabulary) similarity matrix at a time
        hit
        for start in range(0, len(sample), 250)
        for hit in has_task_word(nearest_tokens(vocab[sample[start : start + 250]], vocab, tokenizer, k), words)
    ]
    record: dict[str, Any] = {
        "k": k,
        "neighbours": [[[t, round(s, 4)] for t, s in row] for row in neighbours],
        "task_word": hits,
        "task_word_share": sum(hits) / len(hits),
        "chance_share": sum(chance) / len(chance),
        "chance_tokens": len(chance),
        "task_words": len(words),
    }
    if initial is not None:
        moved = torch.nn.functional.cosine_similarity(learned.float(), initial.float(), dim=-1)
        record["cosine_to_initial"] = [round(float(c), 4) for c in moved]
    return record
