"""Integration test on the real SmolLM2-135M-Instruct (pulled from PyPI as GGUF and converted once),
with a handful of DialogSum examples. A few minutes on two CPU cores."""

import pytest
import torch

import tunelab
from tunelab.data import PromptEncoder, TemplateSet, TrainCollator
from tunelab.data.encoding import encode_training_set
from tunelab.data.sources import load_split
from tunelab.evaluation import generate_texts
from tunelab.methods import ModelContext, get_method
from tunelab.models import load_model
from tunelab.training import evaluation_loss, train_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    try:
        tunelab.pull_model("smollm2-135m-instruct")
    except tunelab.ModelError as e:  # no package index reachable
        pytest.skip(f"smollm2-135m-instruct could not be pulled: {e}")
    cfg = tunelab.build_config(
        {
            "template": {"max_input_tokens": 160, "max_target_tokens": 48},
            "training": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_ratio": 0.0, "log_every": 1},
        }
    )
    return cfg, load_model(cfg.model, device=torch.device("cpu"))


def test_lora_on_real_model_lowers_loss_and_generates(smollm2, dialogsum_dir):
    cfg, loaded = smollm2
    assert loaded.arch == "causal" and loaded.use_chat_template
    assert loaded.tokenizer.eos_token == "<|im_end|>"
    data_cfg = cfg.data.model_copy(update={"path": str(dialogsum_dir)})
    examples = load_split(data_cfg, "validation")[:8]
    ts = TemplateSet("dialogue_summarization")
    enc = PromptEncoder(loaded.tokenizer, "causal", True, 160, 48)
    train = encode_training_set(enc, examples, ts.for_training(len(examples), 0))
    from torch.utils.data import DataLoader

    held = DataLoader(train, batch_size=4, collate_fn=TrainCollator(loaded.tokenizer.pad_token_id, "causal"))
    model = get_method("lora").prepare(loaded.model, cfg.method, ModelContext("causal", loaded.source.path))
    before = evaluation_loss(model, held, "causal")
    result = train_model(
        model,
        loaded.tokenizer,
        "causal",
        train,
        None,
        cfg.training,
        seed=0,
        device=torch.device("cpu"),
        show_progress=False,
    )
    after = evaluation_loss(model, held, "causal")
    assert result.steps == 4
    assert after < before - 0.1, (before, after)
    prompts = [enc.encode_for_generation(ts.eval, ex) for ex in examples[:2]]
    outputs = generate_texts(model, loaded.tokenizer, prompts, "causal", max_new_tokens=24, show_progress=False)
    assert all(o.strip() for o in outputs), outputs
    assert not any("<|im_end|>" in o for o in outputs)


def test_multi_turn_messages_file_on_real_model(smollm2, dialogsum_dir, tmp_path):
    """Chat records with the real chat template: the loss mask is exactly each assistant turn and its
    <|im_end|>, and a few LoRA steps on a messages file lower the loss."""
    import json

    cfg, loaded = smollm2
    rows = [json.loads(x) for x in (dialogsum_dir / "dialogsum.dev.jsonl").read_text().splitlines()[:12]]
    records = [
        {
            "messages": [
                {"role": "system", "content": "You summarize dialogues in one sentence."},
                {"role": "user", "content": r["dialogue"][:400]},
                {"role": "assistant", "content": "Got it."},
                {"role": "user", "content": "Summarize it."},
                {"role": "assistant", "content": r["summary"]},
            ]
        }
        for r in rows
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    tok = loaded.tokenizer
    enc = PromptEncoder(tok, "causal", True, 256, 64)
    ex = load_split(tunelab.build_config({"data": {"source": "files", "files": {"train": str(data)}}}).data, "train")[0]
    encoded = enc.encode_for_training(TemplateSet("dialogue_summarization").eval, ex)
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != -100]
    expected = [
        tok(m["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        for m in records[0]["messages"]
        if m["role"] == "assistant"
    ]
    assert trained == [t for turn in expected for t in turn]
    tree = {
        "name": "chat",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "source": "files",
            "files": {"train": str(data), "validation": str(data), "test": str(data)},
            "max_eval_samples": 8,
        },
        "template": {"max_input_tokens": 192, "max_target_tokens": 48},
        "method": {"name": "lora", "r": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_ratio": 0.0, "log_every": 1},
        "evaluation": {"max_samples": 2, "max_new_tokens": 16, "before": False, "bootstrap_samples": 0},
    }
    metrics = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).metrics
    losses = [loss for _, loss in metrics["training"]["train_loss"]]
    assert losses[-1] < losses[0], losses
    assert metrics["training"]["eval_loss"][-1][1] < 10
