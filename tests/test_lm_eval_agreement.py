"""tunelab's multiple-choice scoring agrees with lm-evaluation-harness on the same model, data, prompt."""

import pytest
import torch

from tunelab.benchmarks import get_task, run_task
from tunelab.config import build_config
from tunelab.models import load_model

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is installed by `make test` (pip install lm-eval)")


@pytest.mark.parametrize(
    "task,overrides",
    [
        ("boolq", {"limit": 12}),
        ("copa", {"limit": 12}),
        ("mmlu", {"limit": 12, "subjects": ["anatomy"], "num_fewshot": 2}),
    ],
)
def test_accuracy_and_logliks_equal_lm_eval(task, overrides, tiny_llama_dir, tmp_path, monkeypatch):
    from tunelab.benchmarks.lm_eval_bridge import run_lm_eval
    from tunelab.paths import data_root

    if data_root() is None:
        pytest.skip("benchmark data not found: set TUNELAB_DATA_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = get_task(task, **overrides)
    loaded = load_model(build_config({"model": {"name": str(tiny_llama_dir)}}).model, device=torch.device("cpu"))
    ours = run_task(loaded.model, loaded.tokenizer, "causal", spec, show_progress=False)
    theirs = run_lm_eval(tiny_llama_dir, spec, tmp_path)
    assert ours.per_example["correct"] == theirs["correct"]
    assert ours.score == pytest.approx(theirs["accuracy"])
    for a, b in zip(ours.per_example["loglik"], theirs["loglik"]):
        assert a == pytest.approx(b, abs=1e-4)
