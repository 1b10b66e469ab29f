"""Training and decoding settings do what they say: gradient accumulation equals the large batch, epochs count
optimizer steps, each learning-rate schedule follows its formula, beam search is transformers' beam search,
and merging a QLoRA run folds the adapter into a full-precision base."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from conftest import experiment, make_tokenizer, tiny_llama
from tunelab.config.schema import TrainingConfig
from tunelab.data.encoding import IGNORE_INDEX, Encoded
from tunelab.training import train_model


def equal_length_set(n: int, vocab: int, prompt: int = 6, completion: int = 6) -> list[Encoded]:
    """Examples of one length and one completion length, so a batch's mean loss is the mean of its halves'."""
    rng = random.Random(0)
    out = []
    for _ in range(n):
        ids = [rng.randrange(6, vocab) for _ in range(prompt + completion)]
        out.append(Encoded(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


def train(train_set, vocab: int, tmp_path=None, **training) -> tuple[torch.nn.Module, object]:
    model = tiny_llama(vocab)
    tok = make_tokenizer()
    cfg = TrainingConfig(
        **{
            "lr": 1e-2,
            "warmup_ratio": 0.0,
            "precision": "fp32",
            "group_by_length": False,
            "scheduler": "constant",
            "log_every": 1,
            **training,
        }
    )
    result = train_model(
        model,
        tok,
        "causal",
        train_set,
        None,
        cfg,
        seed=0,
        device=torch.device("cpu"),
        log_dir=tmp_path,
        show_progress=False,
    )
    return model, result


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_gradient_accumulation_equals_the_large_batch():
    vocab = len(make_tokenizer())
    data = equal_length_set(16, vocab)
    big, big_result = train(data, vocab, batch_size=8, grad_accum=1, max_steps=2)
    accumulated, acc_result = train(data, vocab, batch_size=4, grad_accum=2, max_steps=2)
    small, _ = train(data, vocab, batch_size=4, grad_accum=1, max_steps=2)
    assert acc_result.steps == big_result.steps == 2
    torch.testing.assert_close(weights(accumulated), weights(big), rtol=1e-4, atol=1e-5)
    assert [round(v, 4) for _, v in acc_result.train_loss] == [round(v, 4) for _, v in big_result.train_loss]
    assert not torch.allclose(weights(small), weights(big), atol=1e-4)  # the comparison can tell batches apart


@pytest.mark.parametrize("epochs, grad_accum, steps", [(2, 1, 8), (1.5, 1, 6), (2, 2, 4)])
def test_epochs_count_optimizer_steps(epochs, grad_accum, steps):
    vocab = len(make_tokenizer())
    _, result = train(equal_length_set(16, vocab), vocab, batch_size=4, grad_accum=grad_accum, epochs=epochs)
    assert result.steps == steps
    assert result.epochs == pytest.approx(epochs, abs=0.01)


def _expected_lr(kind: str, step: int, total: int, warmup: int, peak: float) -> float:
    """The learning rate used for optimizer step `step + 1` (what the scheduler holds after `step` steps)."""
    if kind != "constant" and step < warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return {
        "constant": peak,
        "constant_with_warmup": peak,
        "linear": peak * (1 - progress),
        "cosine": peak * 0.5 * (1 + math.cos(math.pi * progress)),
    }[kind]


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant", "constant_with_warmup"])
def test_learning_rate_schedules_follow_their_formula(kind, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    vocab = len(make_tokenizer())
    total, warmup_ratio, peak = 10, 0.3, 1e-2
    train(
        equal_length_set(40, vocab),
        vocab,
        tmp_path,
        batch_size=4,
        max_steps=total,
        scheduler=kind,
        warmup_ratio=warmup_ratio,
        lr=peak,
    )
    events = EventAccumulator(str(tmp_path)).Reload()
    logged = {e.step: e.value for e in events.Scalars("train/lr")}
    warmup = math.ceil(warmup_ratio * total)
    assert sorted(logged) == list(range(1, total + 1))
    for step, lr in logged.items():
        assert lr == pytest.approx(_expected_lr(kind, step, total, warmup, peak), rel=1e-5, abs=1e-9), step


def test_beam_search_is_transformers_beam_search(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.evaluation.generation import generate_texts

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [
        Encoded(input_ids=tok(t)["input_ids"])
        for t in ("hello anna here i want a red car", "ben wants a blue bike today", "no thanks maybe now")
    ]
    ours = generate_texts(
        model, tok, prompts, "causal", batch_size=1, max_new_tokens=6, num_beams=3, show_progress=False
    )
    for prompt, text in zip(prompts, ours, strict=True):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt.input_ids]),
                max_new_tokens=6,
                num_beams=3,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        assert text == tok.decode(out[0, len(prompt.input_ids) :], skip_special_tokens=True).strip()


def test_merging_a_qlora_run_folds_the_adapter_into_a_full_precision_base(tiny_llama_dir, dialogue_files, tmp_path):
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunelab import build_config, finetune, merge_run

    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        name="qlora",
        method={"name": "qlora", "r": 4, "alpha": 8, "dropout": 0.0},
        training={"max_steps": 3, "batch_size": 4, "lr": 1e-2, "warmup_ratio": 0.0},
        evaluation={"max_samples": 2, "batch_size": 2, "max_new_tokens": 4, "before": False},
    )
    run = finetune(build_config(tree), show_progress=False, echo=None).run_dir
    merged_dir = merge_run(run, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not getattr(merged.config, "quantization_config", None)
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), run / "adapter").eval()
    x = torch.tensor([[5, 9, 14, 20, 7, 11]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x).logits, reference(input_ids=x).logits, rtol=1e-4, atol=1e-4)
        base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
        assert not torch.allclose(merged(input_ids=x).logits, base(input_ids=x).logits, atol=1e-3)


@pytest.mark.parametrize("on_disk", [False, True])
def test_select_by_keeps_the_best_evaluation_and_patience_stops(tmp_path, on_disk):
    """A scripted validation metric (1, 3, 2, 2.5, ...): the run stops after 2 evaluations without improvement
    (step 4) and ends with the weights it had at step 2."""
    vocab = len(make_tokenizer())
    scores = iter([1.0, 3.0, 2.0, 2.5, 9.0, 9.0])
    seen: dict[int, torch.Tensor] = {}

    def validate(model):
        seen[len(seen) + 1] = weights(model).clone()
        return {"rougeL": next(scores)}

    model = tiny_llama(vocab)
    cfg = TrainingConfig(
        lr=1e-2,
        warmup_ratio=0.0,
        precision="fp32",
        group_by_length=False,
        scheduler="constant",
        batch_size=4,
        max_steps=10,
        eval_generate_every=1,
        select_by="rougeL",
        patience=2,
    )
    result = train_model(
        model,
        make_tokenizer(),
        "causal",
        equal_length_set(40, vocab),
        None,
        cfg,
        seed=0,
        device=torch.device("cpu"),
        checkpoint_dir=tmp_path / "ckpt" if on_disk else None,
        show_progress=False,
        validate=validate,
    )
    assert result.stopped_early_at == 4 and result.steps == 4
    assert [step for step, _ in result.eval_generation] == [1, 2, 3, 4]
    assert result.selected == {"by": "rougeL", "step": 2, "value": 3.0}
    torch.testing.assert_close(weights(model), seen[2])
    assert not torch.equal(seen[2], seen[4])
    assert (tmp_path / "ckpt" / "best" / "trainable.safetensors").is_file() == on_disk


def test_generation_metrics_during_training_are_recorded(tiny_llama_dir, dialogue_files, tmp_path):
    from tunelab import build_config, finetune

    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        name="select",
        training={
            "max_steps": 4,
            "batch_size": 4,
            "lr": 1e-2,
            "warmup_ratio": 0.0,
            "eval_generate_every": 2,
            "eval_generate_samples": 3,
            "select_by": "rougeL",
        },
        evaluation={"max_samples": 2, "batch_size": 2, "max_new_tokens": 4, "before": False},
    )
    training = finetune(build_config(tree), show_progress=False, echo=None).metrics["training"]
    assert [step for step, _ in training["eval_generation"]] == [2, 4]
    assert set(training["eval_generation"][0][1]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    best = max(training["eval_generation"], key=lambda e: e[1]["rougeL"])
    assert training["selected"]["by"] == "rougeL" and training["selected"]["value"] == best[1]["rougeL"]


def test_selection_settings_must_be_measurable():
    from tunelab import ConfigError, build_config

    with pytest.raises(ConfigError, match="eval_generate_every"):
        build_config({"training": {"select_by": "rougeL"}})
    with pytest.raises(ConfigError, match="eval_every"):
        build_config({"training": {"select_by": "eval_loss"}})
    with pytest.raises(ConfigError, match="patience needs select_by"):
        build_config({"training": {"patience": 3}})


def test_sweep_scores_each_grid_point_on_validation_and_resumes(tiny_llama_dir, dialogue_files, tmp_path, capsys):
    import json

    import yaml

    from tunelab.cli.main import main

    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        name="lr",
        training={"max_steps": 3, "batch_size": 4, "warmup_ratio": 0.0},
        evaluation={"max_samples": 50, "batch_size": 2, "max_new_tokens": 4},
    )
    tree["data"]["max_eval_samples"] = 3  # trials generate for these validation examples only, not 50
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(tree))
    argv = ["sweep", str(config), "--set-grid", "training.lr=1e-4,1e-2", "--set-grid", "method.r=2,4"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "runs" / "lr-sweep" / "sweep.json").read_text())
    assert len(record["trials"]) == 4 and record["split"] == "validation"
    assert record["best"] == min(record["trials"], key=lambda t: t["eval_loss"])
    trial = json.loads((tmp_path / "runs" / "lr-sweep" / "lr=1e-2_r=4" / "metrics.json").read_text())
    assert trial["evaluation_split"] == "validation" and "before" not in trial  # test split never touched
    assert trial["after"]["examples"] == 3
    assert "best on the validation split" in capsys.readouterr().out
    stamp = (tmp_path / "runs" / "lr-sweep" / "lr=1e-2_r=4" / "metrics.json").stat().st_mtime_ns
    assert main(argv) == 0  # finished trials are reused
    assert (tmp_path / "runs" / "lr-sweep" / "lr=1e-2_r=4" / "metrics.json").stat().st_mtime_ns == stamp


def test_a_sweep_whose_best_lies_at_an_edge_widens_past_it_until_the_best_lies_inside(tmp_path, monkeypatch):
    """Validation loss as a valley in log(lr) with its floor at 3e-3: the grid 1e-4..1e-3 has its best at the top
    edge; widening continues the grid's own steps (3e-3, then 1e-2) and stops once the best lies inside."""
    import math

    from tunelab.config.loader import build_config
    from tunelab.errors import ConfigError
    from tunelab.recipes import sweeping

    def valley(base, assignment, directory, metric, show_progress, echo):
        lr = assignment["training.lr"]
        return {"overrides": assignment, "run": str(directory / f"lr={lr}"), metric: (math.log10(lr / 3e-3)) ** 2}

    monkeypatch.setattr(sweeping, "_trial", valley)
    base = build_config({"name": "w", "output_dir": str(tmp_path)})
    grid = {"training.lr": [1e-4, 3e-4, 1e-3]}

    plain = sweeping.sweep(base, grid, echo=None)
    assert plain["best"]["overrides"] == {"training.lr": 1e-3} and plain["best_at_edge"] and "widened" not in plain

    once = sweeping.sweep(base, grid, echo=None, widen=1)
    assert once["widened"] == [0.003] and once["best"]["overrides"] == {"training.lr": 0.003}
    assert once["best_at_edge"]  # one more value was allowed, and the best is again at the edge

    wide = sweeping.sweep(base, grid, echo=None, widen=5)
    assert wide["widened"] == [0.003, 0.01]  # 1e-2 is worse: the best, 3e-3, lies inside; no further values
    assert wide["best"]["overrides"] == {"training.lr": 0.003} and not wide["best_at_edge"]
    assert json.loads((tmp_path / "w-sweep" / "sweep.json").read_text()) == json.loads(json.dumps(wide))

    low = sweeping.sweep(base, {"training.lr": [1e-2, 3e-2, 1e-1]}, echo=None, widen=5)
    assert low["widened"] == [0.003, 0.001] and low["best"]["overrides"] == {"training.lr": 0.003}

    with pytest.raises(ConfigError, match="one key"):
        sweeping.sweep(base, {"training.lr": [1e-4, 1e-3], "method.r": [2, 4]}, echo=None, widen=1)


def test_the_value_beyond_an_edge_continues_the_grids_steps():
    from tunelab.recipes.sweeping import beyond_edge

    assert beyond_edge([1e-4, 3e-4, 1e-3], 1e-3) == 0.003  # not 0.0029999999999999996
    assert beyond_edge([1e-4, 3e-4, 1e-3, 3e-3], 3e-3) == 0.01
    assert beyond_edge([1e-5, 3e-5, 1e-4], 1e-5) == 3e-6
    assert beyond_edge([1e-4, 3e-4, 1e-3], 3e-4) is None  # inside
    assert beyond_edge([8, 16, 32], 32) == 64 and isinstance(beyond_edge([8, 16, 32], 32), int)
    assert beyond_edge([0.0, 0.1, 0.2], 0.2) == pytest.approx(0.3)
    assert beyond_edge([0.0, 0.1, 0.2], 0.0) is None  # a non-negative grid does not turn negative
    assert beyond_edge(["a", "b"], "a") is None and beyond_edge([1e-3], 1e-3) is None
