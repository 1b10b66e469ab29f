"""`training.padding_free`: causal batches as one row of examples end to end, attending example by example
(training/packing.py, data/collate.py)."""

import pytest
import torch

from conftest import tiny_llama
from test_training import _setup
from tunelab.data.collate import TrainCollator
from tunelab.data.encoding import IGNORE_INDEX, Encoded
from tunelab.errors import TrainingError
from tunelab.training import train_model
from tunelab.training.attention import matmul_attention
from tunelab.training.loss import completion_loss
from tunelab.training.packing import decide_padding_free, padding_free_attention


def _examples(lengths=((7, 3), (12, 5), (4, 2), (9, 9)), seed=0):
    """Encoded causal examples: (length, completion length) each; the last is all completion."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, completion in lengths:
        ids = torch.randint(4, 60, (n,), generator=g).tolist()
        out.append(Encoded(ids, [IGNORE_INDEX] * (n - completion) + ids[n - completion :]))
    return out


def _model():
    model = tiny_llama(64)
    model.set_attn_implementation("sdpa")
    return model


def test_a_packed_batch_is_one_row_with_positions_restarting_and_no_label_across_examples():
    examples = _examples()
    batch = TrainCollator(0, "causal", padding_free=True)(examples)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no padding, no attention mask
    assert batch["input_ids"].tolist() == [[t for e in examples for t in e.input_ids]]
    assert batch["position_ids"].tolist() == [[p for e in examples for p in range(len(e.input_ids))]]
    labels, starts = batch["labels"][0].tolist(), [0, 7, 19, 23]
    assert [labels[s] for s in starts] == [IGNORE_INDEX] * 4  # the all-completion example loses only its first
    assert labels[24:] == examples[3].labels[1:] and labels[:7] == examples[0].labels
    with pytest.raises(ValueError, match="causal"):
        TrainCollator(0, "seq2seq", padding_free=True)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_packed_loss_and_gradients_equal_the_padded_batch(method):
    from peft import LoraConfig, get_peft_model

    model = _model()
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
        for name, p in model.named_parameters():  # LoRA's B starts at 0: move it so its gradients mean something
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
    examples = _examples()

    def loss_and_grads(padding_free):
        model.zero_grad()
        collated = TrainCollator(0, "causal", padding_free)(examples)
        with padding_free_attention(model, padding_free):
            loss = completion_loss(model, collated, "causal")
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    padded_loss, padded_grads = loss_and_grads(False)
    packed_loss, packed_grads = loss_and_grads(True)
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-6, atol=1e-6)
    for packed, padded in zip(packed_grads, padded_grads, strict=True):
        torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-6)
    assert model.config._attn_implementation == "sdpa"  # as before the block


def test_packed_attention_under_bf16_autocast_is_the_padded_batchs():
    """Autocast leaves tunelab's attention operator alone: it casts the inputs itself, as autocast casts sdpa's."""
    model = _model()
    examples = _examples()
    losses = []
    for padding_free in (False, True):
        with padding_free_attention(model, padding_free), torch.autocast("cpu", torch.bfloat16):
            losses.append(completion_loss(model, TrainCollator(0, "causal", padding_free)(examples), "causal").item())
    assert losses[1] == pytest.approx(losses[0], abs=2e-2)


def batch_inputs(batch):
    # no key/value cache, as a loss forward (transformers detects packed rows only without one)
    return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}


def test_no_example_attends_to_another():
    """Changing the first example of a packed row changes nothing the other examples compute; also through the
    inner attention of `training.matmul_attention`, and outside the block (transformers' block-diagonal mask)."""
    model = _model().eval()
    examples = _examples()
    changed = [Encoded([(t + 1) % 60 + 4 for t in examples[0].input_ids], examples[0].labels), *examples[1:]]

    def logits(batch_examples, inner_matmul=False, packed_attention=True):
        batch = TrainCollator(0, "causal", padding_free=True)(batch_examples)
        with matmul_attention(model, inner_matmul), padding_free_attention(model, packed_attention):
            model.train(inner_matmul)  # matmul attention applies in train mode
            out = model(**batch_inputs(batch)).logits[0, 7:]
        return out

    for settings in ({}, {"inner_matmul": True}, {"packed_attention": False}):
        torch.testing.assert_close(logits(changed, **settings), logits(examples, **settings), rtol=0, atol=1e-5)
    alone = model(input_ids=torch.tensor([examples[1].input_ids])).logits[0]
    torch.testing.assert_close(logits(examples)[:12], alone, rtol=1e-5, atol=1e-5)  # as if alone in its row
    # the test can fail: attending across examples (one causal sequence) changes the later examples
    batch = TrainCollator(0, "causal", padding_free=True)(changed)
    across = model(input_ids=batch["input_ids"]).logits[0, 7:19]
    assert (across - alone).abs().max() > 1e-2


def test_padding_free_applies_to_plain_causal_models_only_and_says_why_not():
    from peft import PromptTuningConfig, get_peft_model

    model = _model()
    assert decide_padding_free("auto", model, "causal", 1) is True
    assert decide_padding_free("auto", model, "causal", 2) is False  # DDP/FSDP split batches by rows
    assert decide_padding_free("auto", model, "seq2seq", 1) is False
    assert decide_padding_free(False, model, "causal", 1) is False
    with pytest.raises(TrainingError, match="training.padding_free: .*several processes"):
        decide_padding_free(True, model, "causal", 2)
    prompted = get_peft_model(_model(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert decide_padding_free("auto", prompted, "causal", 1) is False
    with pytest.raises(TrainingError, match="prompt-learning"):
        decide_padding_free(True, prompted, "causal", 1)
    eager = _model()
    eager.set_attn_implementation("eager")
    with pytest.raises(TrainingError, match="'eager', not 'sdpa'"):
        decide_padding_free(True, eager, "causal", 1)
    windowed = _model()
    windowed.config.sliding_window = 16
    assert decide_padding_free("auto", windowed, "causal", 1) is False


@pytest.mark.parametrize("compile_setting", [False, True])
def test_training_padding_free_gives_the_padded_runs_losses_without_training_on_padding(
    compile_setting, tiny_llama_dir
):
    """The same examples in the same batches: the same losses (fp32, up to summation order), no padded tokens
    counted, the record says which, and the model attends as before afterwards."""
    runs = {}
    for padding_free in (False, True):
        training = {"max_steps": 6, "log_every": 1, "precision": "fp32", "compile": compile_setting}
        cfg, loaded, model, train, held = _setup(
            tiny_llama_dir, {"name": "full"}, {**training, "padding_free": padding_free}
        )
        runs[padding_free] = train_model(
            model, loaded.tokenizer, "causal", train, held, cfg.training, seed=0, device=torch.device("cpu"),
            show_progress=False,
        )  # fmt: skip
        assert model.config._attn_implementation == "sdpa"
    padded, packed = runs[False], runs[True]
    assert (padded.padding_free, packed.padding_free, packed.compiled) == (False, True, compile_setting)
    assert [x for _, x in packed.train_loss] == pytest.approx([x for _, x in padded.train_loss], rel=1e-4)
    assert packed.eval_loss[-1][1] == pytest.approx(padded.eval_loss[-1][1], rel=1e-4)
    assert packed.completion_tokens == padded.completion_tokens
    assert packed.padded_tokens < padded.padded_tokens  # every token counted is an example's own
