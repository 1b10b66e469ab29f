"""Forgetting mitigations: multi-task mixtures, L2-SP and EWC; and the forgetting report in a run."""

import json

import pytest
import torch

import tunelab
from conftest import experiment
from test_training import _setup
from tunelab.config import build_config
from tunelab.config.schema import MixtureConfig
from tunelab.data import Example, TemplateSet
from tunelab.data.mixture import Component, mixture_rates, sample_mixture
from tunelab.training import train_model
from tunelab.training.regularization import AnchoredPenalty, estimate_fisher

CPU = torch.device("cpu")


def test_examples_proportional_rates_with_a_cap():
    rates = mixture_rates([10_000, 1_000, 100], MixtureConfig(strategy="proportional", cap=2_000))
    assert rates == pytest.approx([2000 / 3100, 1000 / 3100, 100 / 3100])


def test_temperature_rates():
    rates = mixture_rates([10_000, 100], MixtureConfig(strategy="temperature", temperature=2.0))
    assert rates == pytest.approx([100 / 110, 10 / 110])


def _component(name, n):
    return Component(
        name, [Example(f"{name}{i}", f"text {i}", ("t",)) for i in range(n)], TemplateSet("dialogue_summarization")
    )


@pytest.mark.parametrize("strategy", ["proportional", "temperature"])
def test_mixture_proportions_match_the_rates_within_sampling_error(strategy):
    comps = [_component("a", 3000), _component("b", 500), _component("c", 50)]
    cfg = MixtureConfig(strategy=strategy, cap=1000, temperature=3.0)
    total = 6000
    examples, templates, stats = sample_mixture(comps, cfg, total, seed=3)
    assert len(examples) == len(templates) == total
    for c, rate in zip(comps, mixture_rates([3000, 500, 50], cfg)):
        drawn = stats[c.name]["drawn"]
        sigma = (total * rate * (1 - rate)) ** 0.5
        assert abs(drawn - total * rate) < 4 * sigma, (c.name, drawn, total * rate)
    small = [e for e in examples if e.id.startswith("c")]
    assert len({e.id for e in small}) == 50  # a small component cycles through all its examples


def _penalty(params, anchors, strength, weights=None):
    """strength/2 * sum w * (theta - theta0)^2, as the formula reads."""
    weights = weights or [torch.ones_like(p) for p in params]
    return 0.5 * strength * sum((w * (p - a).pow(2)).sum() for p, a, w in zip(params, anchors, weights))


@pytest.mark.parametrize("kind", ["l2sp", "ewc"])
def test_the_penalty_adds_its_own_gradient_to_the_loss_gradient(kind):
    """What `add_to_gradients` adds is autograd's gradient of the penalty: onto a gradient already there, onto a
    parameter without one, times a loss scaler's factor; frozen parameters are left alone."""
    torch.manual_seed(0)
    a, b, frozen = (torch.nn.Parameter(torch.randn(n)) for n in (3, 4, 2))
    frozen.requires_grad_(False)
    fisher = {a: torch.rand(3), b: torch.rand(4), frozen: torch.rand(2)} if kind == "ewc" else None
    penalty = AnchoredPenalty([a, b, frozen], strength=0.7, weights=fisher)
    anchors = [a.detach().clone(), b.detach().clone()]
    with torch.no_grad():
        a.add_(torch.randn(3))
        b.add_(torch.randn(4))
    a.grad = torch.randn(3)
    loss_gradient = a.grad.clone()
    penalty.add_to_gradients(scale=4.0)
    weights = [fisher[a], fisher[b]] if fisher else None
    expected_a, expected_b = torch.autograd.grad(_penalty([a, b], anchors, 0.7, weights), (a, b))
    torch.testing.assert_close(a.grad, loss_gradient + 4.0 * expected_a)
    torch.testing.assert_close(b.grad, 4.0 * expected_b)
    assert frozen.grad is None
    AnchoredPenalty([a], strength=0.0).add_to_gradients()
    torch.testing.assert_close(a.grad, loss_gradient + 4.0 * expected_a)


def _distance_after_training(model_dir, regularizer_factory):
    cfg, loaded, model, train, _ = _setup(model_dir, {"name": "full"}, {"max_steps": 15})
    start = [p.detach().clone() for p in model.parameters()]
    reg = regularizer_factory(model, loaded) if regularizer_factory else None
    train_model(
        model,
        loaded.tokenizer,
        loaded.arch,
        train,
        None,
        cfg.training,
        seed=0,
        device=CPU,
        regularizer=reg,
        show_progress=False,
    )
    params = list(model.parameters())
    return sum(float((p.detach() - s).pow(2).sum()) for p, s in zip(params, start)), params


def test_zero_strength_equals_no_regularization_and_large_strength_stays_near_start(tiny_t5_dir):
    d_none, p_none = _distance_after_training(tiny_t5_dir, None)
    d_zero, p_zero = _distance_after_training(tiny_t5_dir, lambda m, _: AnchoredPenalty(m.parameters(), 0.0))
    assert all(torch.equal(a, b) for a, b in zip(p_none, p_zero))
    d_big, _ = _distance_after_training(tiny_t5_dir, lambda m, _: AnchoredPenalty(m.parameters(), 1e4))
    assert d_big < 0.05 * d_none


def test_ewc_fisher_estimate_and_effect(tiny_t5_dir):
    from torch.utils.data import DataLoader

    from tunelab.data import TrainCollator

    def ewc(model, loaded):
        _, _, _, general, _ = _setup(tiny_t5_dir, {"name": "full"})
        loader = DataLoader(
            general[:16], batch_size=8, collate_fn=TrainCollator(loaded.tokenizer.pad_token_id, "seq2seq")
        )
        fisher = estimate_fisher(model, loader, "seq2seq")
        assert all((f >= 0).all() for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())
        return AnchoredPenalty(model.parameters(), 1e6, fisher)

    d_none, _ = _distance_after_training(tiny_t5_dir, None)
    d_ewc, _ = _distance_after_training(tiny_t5_dir, ewc)
    assert d_ewc < d_none


def test_finetune_with_mixture_ewc_and_forgetting_report(tiny_llama_dir, dialogue_files, tmp_path, dialogsum_dir):
    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        data={
            "mixture": {
                "components": [
                    {"task": "sst2", "max_examples": 40},
                    {"source": "samsum", "split": "validation", "max_examples": 40},
                ],
                "total": 80,
            }
        },
        training={"max_steps": 6, "regularization": {"kind": "ewc", "strength": 10.0, "fisher_samples": 8}},
        benchmarks={"tasks": ["boolq", "sst2"], "limit": 8, "bootstrap_samples": 50},
        evaluation={"max_samples": 3},
    )
    result = tunelab.finetune(build_config(tree), show_progress=False, echo=None)
    m = result.metrics
    assert set(m["training"]["mixture"]) == {"files:train", "task:sst2", "samsum:validation"}
    assert m["training"]["regularization"] == {"kind": "ewc", "strength": 10.0, "fisher_source": "samsum",
                                               "fisher_split": "validation", "fisher_samples": 8}  # fmt: skip
    assert sum(c["drawn"] for c in m["training"]["mixture"].values()) == 80
    assert set(m["forgetting"]) == {"boolq", "sst2"}
    report = json.loads((result.run_dir / "forgetting.json").read_text())
    runs = {when: json.loads((result.run_dir / f"benchmarks_{when}.json").read_text()) for when in ("before", "after")}
    for name, t in report["tasks"].items():  # accuracies re-derived from the per-question results
        accuracy = {when: 100 * sum(r[name]["per_example"]["correct"]) / 8 for when, r in runs.items()}
        assert (t["before"], t["after"]) == pytest.approx((accuracy["before"], accuracy["after"]))
        assert t["delta"] == pytest.approx(accuracy["after"] - accuracy["before"])
    assert (result.run_dir / "forgetting.md").read_text().startswith("| task")
    # the standalone command gives the same numbers
    again = tunelab.measure_forgetting(result.run_dir)
    assert {k: v["delta"] for k, v in again["tasks"].items()} == pytest.approx(
        {k: v["delta"] for k, v in report["tasks"].items()}
    )
