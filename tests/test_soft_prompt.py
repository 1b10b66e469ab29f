"""The soft-prompt analysis of prompt-tuning runs, and the claim judged on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunelab.evaluation.soft_prompt import has_task_word, soft_prompt_record, task_words
from tunelab.reporting.claims import judge
from tunelab.reporting.html import ArmSummary

VOCAB = ["the", "summary", "person", "talk", "banana", "quartz", "zebra", "violin", "oxygen", "tundra", "##ing", "car"]


class WordTokenizer:
    def decode(self, ids):
        return " ".join(VOCAB[i] for i in ids)


def test_task_words_are_the_instruction_and_the_most_frequent_target_words():
    words = task_words("Summarize this talk.", ["The person talks about a car.", "a person and a car"], 3)
    assert words == {"summarize", "this", "talk", "person", "car", "the"}


def test_neighbours_with_a_task_word_counted_per_virtual_token():
    words = {"summary", "person"}
    rows = [[("summary", 0.9), ("zebra", 0.1)], [("banana", 0.5), ("quartz", 0.4)], [(" Person", 0.3)]]
    assert has_task_word(rows, words) == [1, 0, 1]


def test_record_compares_learned_tokens_with_random_vocabulary_tokens():
    torch.manual_seed(0)
    vocab = torch.eye(len(VOCAB)) + 0.01 * torch.randn(len(VOCAB), len(VOCAB))  # every token its own direction
    words = {"summary", "person", "talk"}
    learned = vocab[[1, 2, 3, 1]] + 0.05 * torch.randn(4, len(VOCAB))  # near task words
    initial = vocab[[1, 2, 3, 1]]
    record = soft_prompt_record(learned, initial, vocab, WordTokenizer(), words, k=1, chance_tokens=len(VOCAB))
    assert record["task_word"] == [1, 1, 1, 1] and record["task_word_share"] == 1.0
    assert record["chance_share"] == pytest.approx(3 / len(VOCAB))  # each token is its own nearest neighbour
    assert [row[0][0] for row in record["neighbours"]] == ["summary", "person", "talk", "summary"]
    assert all(0.9 < c <= 1.0 for c in record["cosine_to_initial"])


def _arm(name: str, metrics: dict) -> ArmSummary:
    return ArmSummary(name=name, path=Path(name), metrics=metrics, config_text="")


def test_soft_prompt_claim_uses_a_wilson_interval_against_chance():
    from scipy.stats import binomtest

    claim = {"claim": "related", "arm": "pt", "versus": "chance", "metric": "soft_prompt:task_words", "at_least": 0.0}
    record = {"task_word": [1] * 18 + [0] * 2, "chance_share": 0.2}
    judged = judge(claim, [_arm("pt", {"soft_prompt": record})])
    ci = binomtest(18, 20).proportion_ci(method="wilson")
    assert judged["delta"] == pytest.approx(0.7) and judged["n"] == 20
    assert judged["ci95_low"] == pytest.approx(ci.low - 0.2) and judged["ci95_high"] == pytest.approx(ci.high - 0.2)
    assert judged["verdict"] == "reproduced"
    near_chance = judge(claim, [_arm("pt", {"soft_prompt": {"task_word": [1, 0, 0, 0, 0], "chance_share": 0.2}})])
    assert near_chance["verdict"] == "inconclusive"
    assert judge(claim, [_arm("pt", {})])["verdict"] == "not applicable"
    assert judge(claim, [])["verdict"] == "pending"
