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
    cfg = tunelab.build_config({"template": {"max_input_tokens": 160, "max_target_tokens": 48},
                                "training": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_ratio": 0.0,
                                             "log_every": 1}})
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
    result = train_model(model, loaded.tokenizer, "causal", train, None, cfg.training, seed=0,
                         device=torch.device("cpu"), show_progress=False)
    after = evaluation_loss(model, held, "causal")
    assert result.steps == 4
    assert after < before - 0.1, (before, after)
    prompts = [enc.encode_for_generation(ts.eval, ex) for ex in examples[:2]]
    outputs = generate_texts(model, loaded.tokenizer, prompts, "causal", max_new_tokens=24, show_progress=False)
    assert all(o.strip() for o in outputs), outputs
    assert not any("<|im_end|>" in o for o in outputs)
