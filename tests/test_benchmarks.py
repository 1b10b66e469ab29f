"""Benchmark tasks: log-likelihood scoring, the suite end to end, forgetting deltas."""

import math
import random
from types import SimpleNamespace

import pytest
import sacrebleu
import torch

from conftest import make_tokenizer
from tunelab.benchmarks import forgetting_report, get_task, paired_bootstrap_delta, run_task
from tunelab.benchmarks.loaders import evaluation_documents, load_documents
from tunelab.benchmarks.runner import fewshot_prefix
from tunelab.benchmarks.scoring import encode_pair, expected_calibration_error, loglikelihoods
from tunelab.models import load_model
from tunelab.config import build_config


@pytest.fixture(scope="module")
def data_dir():
    from tunelab.paths import data_root

    root = data_root()
    if root is None or not (root / "superglue").is_dir():
        pytest.skip("benchmark data not found: set TUNELAB_DATA_DIR")
    return root


class Oracle(torch.nn.Module):
    """A 'model' that always puts probability ~1 on one token: the right answer is known in advance."""

    def __init__(self, vocab_size: int, favourite: int):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab_size, self.favourite = vocab_size, favourite

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        n = logits_to_keep or input_ids.shape[1]
        logits = torch.zeros(input_ids.shape[0], n, self.vocab_size)
        logits[..., self.favourite] = 20.0
        return SimpleNamespace(logits=logits)


def test_loglik_ranking_picks_the_known_answer(data_dir):
    tok = make_tokenizer()
    yes = tok(" yes", add_special_tokens=False)["input_ids"][0]
    spec = get_task("boolq", limit=40)
    docs = evaluation_documents(spec)
    share_true = sum(str(d["label"]).lower() == "true" for d in docs) / len(docs)
    result = run_task(Oracle(len(tok), yes), tok, "causal", spec, show_progress=False)
    assert result.score == pytest.approx(100 * share_true)
    assert result.per_example["correct"] == [int(str(d["label"]).lower() == "true") for d in docs]
    # confidence ~1 on every answer: calibration error = 1 - accuracy
    assert result.metrics["ece"] == pytest.approx(100 * (1 - share_true), abs=1e-3)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_batched_loglik_equals_one_by_one_forward(arch, tiny_llama_dir, tiny_t5_dir):
    model_dir = tiny_llama_dir if arch == "llama" else tiny_t5_dir
    loaded = load_model(build_config({"model": {"name": str(model_dir)}}).model, device=torch.device("cpu"))
    model, tok = loaded.model.eval(), loaded.tokenizer
    pairs = [("anna wants a", " red car"), ("hello , i want to buy a blue", " bike ."), ("yes", " no no no")]
    reqs = [encode_pair(tok, c, x, loaded.arch) for c, x in pairs]
    batched = loglikelihoods(model, tok, loaded.arch, reqs, batch_size=3, show_progress=False)
    for r, got in zip(reqs, batched):
        with torch.no_grad():
            if loaded.arch == "causal":
                ids = torch.tensor([r.context + r.continuation])
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
                want = sum(float(logp[len(r.context) - 1 + j, t]) for j, t in enumerate(r.continuation))
            else:
                out = model(input_ids=torch.tensor([r.context]), labels=torch.tensor([r.continuation]))
                logp = torch.log_softmax(out.logits[0], -1)
                want = sum(float(logp[j, t]) for j, t in enumerate(r.continuation))
        assert got == pytest.approx(want, abs=1e-4)


def test_trailing_context_space_moves_to_the_continuation():
    tok = make_tokenizer()
    r = encode_pair(tok, "anna wants a ", "car", "causal")
    assert tok.decode(r.continuation).strip() == "car" and tok.decode(r.context) == "anna wants a"


def test_suite_runs_end_to_end_offline(data_dir, tiny_llama_dir):
    loaded = load_model(build_config({"model": {"name": str(tiny_llama_dir)}}).model, device=torch.device("cpu"))
    for name, overrides in [
        ("boolq", {}),
        ("cb", {}),
        ("copa", {}),
        ("rte", {}),
        ("sst2", {}),
        ("mmlu", {"subjects": ["anatomy", "astronomy"], "num_fewshot": 1}),
        ("samsum", {"max_new_tokens": 4}),
        ("xsum", {"max_new_tokens": 4}),
        ("dialogsum", {"max_new_tokens": 4}),
        ("flores_deu_eng", {"max_new_tokens": 4}),
        ("wmt22_de_en", {"max_new_tokens": 4}),
    ]:
        spec = get_task(name, limit=3, **overrides)
        r = run_task(loaded.model, loaded.tokenizer, "causal", spec, batch_size=4, show_progress=False)
        assert r.n == 3 and r.examples_per_second > 0, name
        ex = r.per_example
        if spec.kind == "multiple_choice":  # the score is the accuracy of the argmax choice, re-derived here
            assert {"accuracy", "accuracy_norm", "ece"} <= r.metrics.keys()
            picked = [max(range(len(ll)), key=ll.__getitem__) for ll in ex["loglik"]]
            assert ex["correct"] == [int(p == y) for p, y in zip(picked, ex["label"], strict=True)], name
            assert r.score == pytest.approx(100 * sum(ex["correct"]) / 3), name
        elif spec.metric == "translation":  # corpus BLEU from sacrebleu itself
            assert {"bleu", "chrf"} <= r.metrics.keys() and r.metrics["bleu_signature"].startswith("nrefs:")
            streams = [list(s) for s in zip(*ex["references"], strict=True)]
            assert r.score == pytest.approx(sacrebleu.corpus_bleu(ex["predictions"], streams).score), name
        else:  # ROUGE-L: the mean of the per-example F1 scores
            assert len(ex["predictions"]) == 3
            assert r.score == pytest.approx(sum(ex["rougeL"]) / 3), name


def test_mmlu_prompt_has_the_description_and_k_shots(data_dir):
    spec = get_task("mmlu", subjects=["anatomy"], num_fewshot=2)
    doc = load_documents(spec)[0]
    prefix = fewshot_prefix(spec, doc)
    assert prefix.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert prefix.count("\nAnswer:") == 2
    dev = load_documents(spec, "dev")[:2]
    assert dev[0]["question"] in prefix and prefix.endswith(spec.choices[dev[1]["answer_index"]] + "\n\n")


def test_copa_prompt_follows_lm_eval(data_dir):
    spec = get_task("copa")
    doc = load_documents(spec)[0]
    assert doc["premise_stem"] + " " + doc["connector"] == "The man turned on the faucet therefore"
    assert doc["choice2_lower"] == "water flowed from the spout."


def _result(task, metric, values, n=None):
    key = {"accuracy": "correct", "rougeL": "rougeL"}[metric]
    score = (100 if metric == "accuracy" else 1) * sum(values) / len(values)
    return {
        "task": task,
        "main_metric": metric,
        "score": score,
        "n": n or len(values),
        "metrics": {},
        "per_example": {key: values},
    }


def test_forgetting_deltas_and_paired_bootstrap():
    before = {
        "boolq": _result("boolq", "accuracy", [1, 1, 1, 0] * 25),
        "samsum": _result("samsum", "rougeL", [30.0, 40.0] * 10),
    }
    after = {
        "boolq": _result("boolq", "accuracy", [1, 0, 0, 0] * 25),
        "samsum": _result("samsum", "rougeL", [30.0, 40.0] * 10),
    }
    rep = forgetting_report(before, after, {"dialogsum rouge1": 12.0}, samples=500)
    b = rep["tasks"]["boolq"]
    assert b["delta"] == pytest.approx(25 - 75)
    assert b["ci95_low"] <= b["delta"] <= b["ci95_high"] < 0 and b["significant"]
    s = rep["tasks"]["samsum"]
    assert s["delta"] == 0 and s["ci95_low"] == 0 and s["ci95_high"] == 0 and not s["significant"]
    assert rep["mean_delta"] == pytest.approx(-25)
    with pytest.raises(ValueError, match="examples before"):
        paired_bootstrap_delta(before["boolq"], _result("boolq", "accuracy", [1, 0]))


def test_expected_calibration_error():
    assert expected_calibration_error([1.0, 1.0], [True, True]) == pytest.approx(0)
    assert expected_calibration_error([0.9, 0.9], [True, False]) == pytest.approx(0.4)
    assert math.isclose(expected_calibration_error([0.55, 0.95], [False, True]), (0.55 + 0.05) / 2)


def test_unknown_task_lists_the_tasks():
    from tunelab.errors import ConfigError

    with pytest.raises(ConfigError, match="boolq.*mmlu"):
        get_task("superglue_everything")


def test_shared_context_scoring_equals_separate_scoring(tiny_llama_dir):
    loaded = load_model(build_config({"model": {"name": str(tiny_llama_dir)}}).model, device=torch.device("cpu"))
    tok = loaded.tokenizer
    reqs = [encode_pair(tok, "anna wants a red", c, "causal") for c in (" car", " bike", " lamp", " red car")]
    reqs.append(encode_pair(tok, "hello , ben here", " yes", "causal"))
    assert len({tuple(r.context) for r in reqs[:3]}) == 1 and all(len(r.continuation) == 1 for r in reqs[:3])
    together = loglikelihoods(loaded.model, tok, "causal", reqs, batch_size=8, show_progress=False)
    alone = [loglikelihoods(loaded.model, tok, "causal", [r], show_progress=False)[0] for r in reqs]
    assert together == pytest.approx(alone, abs=1e-4)


def test_paired_interval_uses_the_pairing():
    """Scores that move together: the paired CI of the change is far narrower than the spread of either side,
    which an unpaired resampling would show."""
    from tunelab.evaluation.metrics import bootstrap_ci

    rng = random.Random(0)
    base = [rng.uniform(0, 60) for _ in range(80)]
    moved = [b + 2 + rng.uniform(-0.5, 0.5) for b in base]
    result = paired_bootstrap_delta(_result("samsum", "rougeL", base), _result("samsum", "rougeL", moved), 1000)
    assert 1.8 < result["ci95_low"] < result["delta"] < result["ci95_high"] < 2.2
    lo, hi = bootstrap_ci(base, 1000)
    assert (result["ci95_high"] - result["ci95_low"]) < 0.1 * (hi - lo)


def test_bleu_change_significance_comes_from_sacrebleu_paired_test():
    """A translation task: the change's p-value is sacrebleu's paired bootstrap test (what `sacrebleu --paired-bs`
    prints), small for a clearly better system, large for an identical one."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    refs = [[f"the {w} is on the table today"] for w in ("cat", "dog", "book", "cup", "key", "pen") * 5]
    good = [r[0] for r in refs]
    bad = [f"a {r[0].split()[1]} sat somewhere" for r in refs]

    def result(preds, score):
        return {
            "task": "wmt",
            "main_metric": "bleu",
            "score": score,
            "n": len(preds),
            "metrics": {},
            "per_example": {"predictions": preds, "references": refs},
        }

    bleu = BLEU()
    before = result(bad, bleu.corpus_score(bad, [[r[0] for r in refs]]).score)
    after = result(good, bleu.corpus_score(good, [[r[0] for r in refs]]).score)
    report = forgetting_report({"wmt": before}, {"wmt": after}, samples=200)["tasks"]["wmt"]
    _, expected = PairedTest(
        [("before", bad), ("after", good)],
        {"BLEU": BLEU(references=[[r[0] for r in refs]])},
        references=None,
        test_type="bs",
        n_samples=200,
    )()
    assert report["p_value"] == pytest.approx(expected["BLEU"][1].p_value) and report["p_value"] < 0.05
    assert report["significant"] and report["delta"] > 50
    same = forgetting_report({"wmt": before}, {"wmt": result(bad, before["score"])}, samples=200)["tasks"]["wmt"]
    assert same["p_value"] == 1.0 and not same["significant"]
