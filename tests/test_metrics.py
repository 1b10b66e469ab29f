import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from tunelab.evaluation import bleu, rouge, rouge_per_example, sentence_per_line
from tunelab.evaluation.metrics import rouge_single_reference

PREDS = [
    "The customer lost his card. The bank will block it.",
    "Anna wants to buy a red car!",
    "They talk about the weather",
]
REFS = [
    [
        "#Person1# lost a debit card and the bank blocks it.",
        "A customer reports a lost card.",
        "The bank blocks the lost card. #Person1# is relieved.",
    ],
    ["Anna is buying a red car.", "Anna wants a car.", "Anna and Ben discuss cars."],
    ["Two friends chat about rain.", "They discuss the weather.", "It rains."],
]


def test_rouge_equals_rouge_score_called_directly_with_multiple_references():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    expected = [
        scorer.score_multi([sentence_per_line(r) for r in refs], sentence_per_line(p)) for p, refs in zip(PREDS, REFS)
    ]
    ours = rouge_per_example(PREDS, REFS)
    for e, o in zip(expected, ours):
        for k, s in e.items():
            assert o[k]["precision"] == pytest.approx(100 * s.precision)
            assert o[k]["recall"] == pytest.approx(100 * s.recall)
            assert o[k]["f1"] == pytest.approx(100 * s.fmeasure)
    corpus = rouge(PREDS, REFS, bootstrap_samples=200)
    for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert corpus[k]["f1"] == pytest.approx(sum(100 * e[k].fmeasure for e in expected) / len(expected))
        lo, hi = corpus[k]["f1_ci95"]
        assert lo <= corpus[k]["f1"] <= hi


def test_single_reference_protocol_is_the_mean_over_every_reference_scored_alone():
    """As a test set scored one reference row at a time: every (prediction, reference) pair, averaged."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    pairs = [scorer.score(sentence_per_line(r), sentence_per_line(p)) for p, refs in zip(PREDS, REFS) for r in refs]
    ours = rouge_single_reference(PREDS, REFS, bootstrap_samples=200)
    best = rouge(PREDS, REFS, bootstrap_samples=0)
    for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert ours[k]["pairs"] == 9
        for field, attr in (("precision", "precision"), ("recall", "recall"), ("f1", "fmeasure")):
            assert ours[k][field] == pytest.approx(sum(100 * getattr(x[k], attr) for x in pairs) / 9)
        assert ours[k]["f1"] <= best[k]["f1"]  # the best of three references can only score higher
        lo, hi = ours[k]["f1_ci95"]
        assert lo <= ours[k]["f1"] <= hi


def test_single_reference_rouge1_recall_is_matched_over_reference_unigrams():
    # reference unigrams: anna, want(s), a, red, car -> 5; prediction matches anna, want, red, car -> 4
    r = rouge_per_example(["anna wanted the red car"], [["Anna wants a red car"]])[0]["rouge1"]
    assert r["recall"] == pytest.approx(100 * 4 / 5)
    assert r["precision"] == pytest.approx(100 * 4 / 5)


def test_lsum_sees_one_sentence_per_line():
    assert sentence_per_line("A b. C d! E f? G") == "A b.\nC d!\nE f?\nG"
    assert sentence_per_line("line one\nline two.  Next") == "line one\nline two.\nNext"


def test_bleu_equals_sacrebleu_with_all_references():
    expected = BLEU().corpus_score(PREDS, [[r[i] for r in REFS] for i in range(3)])
    ours = bleu(PREDS, REFS)
    assert ours["score"] == pytest.approx(expected.score)
    assert "nrefs:3" in ours["signature"] or "nrefs:var" in ours["signature"]


def test_bleu_with_varying_reference_counts():
    refs = [["the cat sat on the mat"], ["a dog ran in the park", "the dog ran"]]
    preds = ["the cat sat on a mat", "a dog ran in a park"]
    expected = BLEU().corpus_score(preds, [["the cat sat on the mat", "a dog ran in the park"], [None, "the dog ran"]])
    assert bleu(preds, refs)["score"] == pytest.approx(expected.score)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        rouge_per_example(["a", "b"], [["a"]])


def test_one_evaluation_prints_a_plain_table_and_two_a_before_after_one():
    from tunelab.reporting.tables import before_after_table

    m = {
        "rouge": {
            k: {"f1": 10.0, "precision": 9.0, "recall": 11.0} for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")
        },
        "bleu": {"score": 3.0},
    }
    plain = before_after_table(None, m)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in plain.splitlines() if not line.startswith("|-")]
    assert cells[0] == ["metric", "score"] and ["BLEU", "3.00"] in cells and all("-" not in r for r in cells)
    both = before_after_table(m, {**m, "bleu": {"score": 5.0}})
    assert "before" in both.splitlines()[0] and "| BLEU" in both and "+2.00" in both
