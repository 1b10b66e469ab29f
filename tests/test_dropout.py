"""`training.fast_dropout`: dropout masks from 16-bit random draws (training/dropout.py)."""

import pytest
import torch

from test_training import _held_loss, _setup
from tunelab.training import train_model
from tunelab.training.dropout import effective_rate, fast_dropout, fast_dropout_masks, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_each_element_is_kept_independently_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    n = 1 << 22
    kept = keep_mask(torch.empty(n), p).double()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(kept.mean().item() - (1 - p)) < 5 * sigma
    assert abs(effective_rate(p) - p) <= 1 / 131072
    by_word = kept.view(-1, 4)  # the four draws of one 64-bit word, and each slot of the word alike
    assert all(abs(m - (1 - p)) < 5 * sigma * 2 for m in by_word.mean(0).tolist())
    correlations = torch.corrcoef(by_word.T) - torch.eye(4, dtype=torch.float64)
    assert correlations.abs().max().item() < 5 / (n / 4) ** 0.5
    assert abs(torch.corrcoef(torch.stack([kept[:-1], kept[1:]]))[0, 1].item()) < 5 / n**0.5


def test_fast_dropout_scales_what_it_keeps_and_is_torch_dropout_at_the_edges():
    torch.manual_seed(0)
    x = torch.rand(1 << 20) + 0.5
    dropped = fast_dropout(x, 0.1)
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], x[kept] / (1 - effective_rate(0.1)))
    assert abs(dropped.mean().item() / x.mean().item() - 1) < 0.005  # the expectation is kept
    assert fast_dropout(x, 0.1, training=False) is x and fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    torch.manual_seed(1)
    first = fast_dropout(x, 0.3)
    torch.manual_seed(1)
    assert torch.equal(fast_dropout(x, 0.3), first)  # seeded by torch's generator


def test_compiled_it_draws_as_eager_and_each_call_draws_anew():
    def twice(x):
        return fast_dropout(x * 2, 0.5), fast_dropout(x * 2, 0.5)

    x = torch.rand(64, 33) + 0.5
    torch.manual_seed(0)
    eager = twice(x)
    torch._dynamo.reset()
    torch.manual_seed(0)
    compiled = torch.compile(twice)(x)
    assert not torch.equal(compiled[0], compiled[1])  # two masks, not one draw reused
    torch.testing.assert_close(compiled, eager)


def _attention_inputs(groups: int):
    module = torch.nn.Module().train()
    module.num_key_value_groups, module.is_causal = groups, False
    torch.manual_seed(0)
    q = torch.randn(2, 4, 6, 8, requires_grad=True)
    k, v = (torch.randn(2, 4 // groups, 6, 8, requires_grad=True) for _ in range(2))
    return module, q, k, v


@pytest.mark.parametrize(
    "case", ["t5 position bias and padding", "causal", "grouped-query causal", "float mask", "boolean mask"]
)
def test_attention_with_dropout_computes_what_sdpa_computes(case, monkeypatch):
    """Where it drops probabilities out, the attention is sdpa's arithmetic (position bias, masks, causality,
    grouped-query heads) with the mask applied: with the mask replaced by all-kept, it equals sdpa without dropout,
    output and gradients. Without dropout, or in evaluation mode, it is sdpa itself."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    import tunelab.training.dropout as dropout

    module, q, k, v = _attention_inputs(2 if "grouped" in case else 1)
    kwargs: dict = {"scaling": 1.0 if "t5" in case else None}
    mask = None
    if "t5" in case:
        kwargs["position_bias"] = torch.randn(1, 4, 6, 6)
        mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
        mask[1, ..., 4:] = False
    elif "causal" in case:
        kwargs["is_causal"] = True
    elif "float" in case:
        mask = torch.randn(2, 1, 6, 6)
    else:
        mask = torch.rand(2, 1, 6, 6) > 0.3
        mask[..., 0] = True

    def run(attention, rate):
        out, _ = attention(module, q, k, v, mask, dropout=rate, **kwargs)
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        return out, torch.autograd.grad((out * weights).sum(), (q, k, v))

    reference = run(sdpa_attention_forward, 0.0)
    monkeypatch.setattr(dropout, "fast_dropout", lambda x, p, training=True: x)
    ours = run(dropout.fast_dropout_attention, 0.1)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    assert torch.equal(run(dropout.fast_dropout_attention, 0.0)[0], reference[0])
    module.eval()
    torch.manual_seed(1)
    ours_in_eval = run(dropout.fast_dropout_attention, 0.1)[0]
    torch.manual_seed(1)
    assert torch.equal(ours_in_eval, run(sdpa_attention_forward, 0.1)[0])


def test_activation_checkpointing_recomputes_the_same_masks(tiny_t5_dropout_dir):
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(tiny_t5_dropout_dir).train()
    ids, labels = torch.randint(3, 40, (2, 9)), torch.randint(3, 40, (2, 5))

    def gradients(checkpointing: bool):
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.zero_grad()
        torch.manual_seed(0)
        with fast_dropout_masks(model, True):
            model(input_ids=ids, labels=labels).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    plain, checkpointed = gradients(False), gradients(True)
    assert model.is_gradient_checkpointing
    assert all(torch.equal(a, b) for a, b in zip(plain, checkpointed))


def test_training_draws_its_masks_so_and_learns_as_with_torch_dropout(tiny_t5_dropout_dir, monkeypatch):
    """T5 (dropout 0.1) trains without one per-element dropout draw (no `F.dropout`, no sdpa with dropout), lowers
    the held-out loss as much as with torch's dropout, and is left as it was: Dropout modules, sdpa attention."""
    import torch.nn.functional as F

    calls = {"dropout": 0, "sdpa_dropout": 0}
    real_dropout, real_sdpa = F.dropout, F.scaled_dot_product_attention

    def counting_dropout(x, p=0.5, training=True, inplace=False):
        calls["dropout"] += bool(training and p)
        return real_dropout(x, p, training, inplace)

    def counting_sdpa(*args, **kwargs):
        calls["sdpa_dropout"] += bool(kwargs.get("dropout_p"))
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "dropout", counting_dropout)
    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    held_losses = {}
    for fast in (False, True):
        cfg, loaded, model, train, held = _setup(
            tiny_t5_dropout_dir, {"name": "full"}, {"precision": "fp32", "compile": False, "fast_dropout": fast}
        )
        before = _held_loss(model, loaded, held)
        calls.update(dropout=0, sdpa_dropout=0)
        result = train_model(model, loaded.tokenizer, loaded.arch, train, None, cfg.training, seed=0,
                             device=torch.device("cpu"), show_progress=False)  # fmt: skip
        assert result.fast_dropout is fast
        assert (calls["dropout"] == calls["sdpa_dropout"] == 0) is fast  # torch's side draws per element
        assert all(type(m) is torch.nn.Dropout for m in model.modules() if isinstance(m, torch.nn.Dropout))
        assert model.config._attn_implementation == "sdpa"
        held_losses[fast] = (before, _held_loss(model, loaded, held))
    (before, with_torch), (_, with_fast) = held_losses[False], held_losses[True]
    assert with_fast < before - 1 and abs(with_fast - with_torch) < 0.1 * (before - with_torch)
