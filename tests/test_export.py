"""`tunelab export`: GGUF files read back by an independent reader (transformers' GGUF loader) give the same
logits, greedy outputs and token ids; LoRA files hold the same update as the merged model; refusals are clear."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import CHATML, bpe_tokenizer, experiment, make_tokenizer, tiny_t5
from tunelab.errors import ExportError, RunDirError

SAMPLES = [
    "#person1#: hello , anna here . i want to buy a red car . 1234",
    "<|im_start|>user\nSummarize the following conversation.<|im_end|>\n<|im_start|>assistant\n",
    "Ünïcödé  spaces\tand\nnewlines?!",
]


def tiny_causal(model_type: str, vocab_size: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=model_type == "qwen2",
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=1,
        initializer_range=0.2,
        **({"head_dim": 128} if model_type == "qwen3" else {}),
    )  # Qwen3's real head size; transformers reads no other from GGUF
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture(scope="module")
def bpe_llama_dir(tmp_path_factory) -> Path:
    tok = bpe_tokenizer()
    path = tmp_path_factory.mktemp("bpe-llama")
    tiny_causal("llama", len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write(model, tok, path: Path, dtype: str = "f32") -> Path:
    from tunelab.export.gguf import write_model_gguf
    from tunelab.export.vocab import vocab_from_tokenizer

    vocab = vocab_from_tokenizer(tok, path.parent / f"{path.stem}-tokenizer")
    return write_model_gguf(model, vocab, path, dtype)


def read_back(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def greedy(model, ids: list[int], n: int = 12) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3"])
def test_f32_round_trip_through_transformers_gguf_reader(model_type, tmp_path):
    tok = bpe_tokenizer()
    model = tiny_causal(model_type, len(tok))
    back, back_tok = read_back(write(model, tok, tmp_path / "m.gguf"))
    for text in SAMPLES:
        assert back_tok(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    ids = tok(SAMPLES[0])["input_ids"]
    assert (logits(model, ids) - logits(back, ids)).abs().max().item() < 1e-4
    assert greedy(back, ids) == greedy(model, ids)


@pytest.mark.parametrize(
    "dtype, matrix_type, bound", [("f16", "F16", 5e-3), ("bf16", "BF16", 5e-2), ("q8_0", "Q8_0", 1e-1)]
)
def test_smaller_dtypes_are_typed_as_llamacpp_expects_and_stay_close(dtype, matrix_type, bound, tmp_path):
    from gguf import GGUFReader

    tok = bpe_tokenizer()
    model = tiny_causal("llama", len(tok))
    path = write(model, tok, tmp_path / "m.gguf", dtype)
    types = {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}
    assert types["blk.0.attn_q.weight"] == matrix_type and types["blk.0.ffn_down.weight"] == matrix_type
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"
    assert path.stat().st_size < write(model, tok, tmp_path / "f32.gguf").stat().st_size * 0.6
    back, _ = read_back(path)
    ids = tok(SAMPLES[0])["input_ids"]
    exact = logits(model, ids)
    diff = (exact - logits(back, ids)).abs().max().item()
    assert 0 < diff < bound * exact.abs().max().item()  # relative to the largest logit


def test_tokenizer_metadata_marks_special_tokens_and_bos_rule(tmp_path):
    from gguf import GGUFReader

    tok = bpe_tokenizer()
    fields = GGUFReader(write(tiny_causal("llama", len(tok)), tok, tmp_path / "m.gguf")).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and types[:3] == [3, 3, 3]
    assert set(types[3:]) == {1}
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # this tokenizer adds no BOS
    assert fields["tokenizer.chat_template"].contents() == CHATML


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_file_holds_the_merged_update_in_llamacpp_layout(rslora, tmp_path):
    """base + alpha/r * B @ A, read from the adapter file, equals the merged model's file tensor by tensor
    (q/k included, whose rows llama.cpp permutes); rsLoRA's other scale is folded into B."""
    from gguf import GGUFReader
    from peft import LoraConfig, get_peft_model

    from tunelab.export.gguf import write_lora_gguf

    tok = bpe_tokenizer()
    write(tiny_causal("llama", len(tok)), tok, tmp_path / "base.gguf")
    peft_model = get_peft_model(
        tiny_causal("llama", len(tok)),
        LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"], use_rslora=rslora),
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter = GGUFReader(write_lora_gguf(peft_model, tmp_path / "adapter.gguf"))
    write(peft_model.merge_and_unload(), tok, tmp_path / "merged.gguf")
    base = {t.name: np.array(t.data) for t in GGUFReader(tmp_path / "base.gguf").tensors}
    merged = {t.name: np.array(t.data) for t in GGUFReader(tmp_path / "merged.gguf").tensors}
    lora = {t.name: np.array(t.data) for t in adapter.tensors}
    assert adapter.fields["general.type"].contents() == "adapter"
    assert adapter.fields["adapter.type"].contents() == "lora"
    alpha = adapter.fields["adapter.lora.alpha"].contents()
    assert len(lora) == 2 * 4 * 2  # A and B for 4 modules in 2 layers
    changed = 0
    for name in base:
        if f"{name}.lora_a" in lora:
            a, b = lora[f"{name}.lora_a"], lora[f"{name}.lora_b"]
            np.testing.assert_allclose(base[name] + alpha / a.shape[0] * b @ a, merged[name], atol=1e-5)
            changed += 1
        else:
            np.testing.assert_array_equal(base[name], merged[name])
    assert changed == 8


def test_unsupported_inputs_are_refused_with_what_is_supported(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tunelab.export.gguf import write_model_gguf, write_lora_gguf
    from tunelab.export.vocab import vocab_from_tokenizer

    with pytest.raises(ExportError, match="byte-level BPE"):
        vocab_from_tokenizer(make_tokenizer(), tmp_path / "wordlevel")
    vocab = vocab_from_tokenizer(bpe_tokenizer(), tmp_path / "bpe")
    with pytest.raises(ExportError, match="encoder-decoder"):
        write_model_gguf(tiny_t5(len(vocab.tokens)), vocab, tmp_path / "t5.gguf")
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab.tokens), n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ExportError, match="supported: llama, mistral, qwen2, qwen3"):
        write_model_gguf(gpt2, vocab, tmp_path / "gpt2.gguf")
    with pytest.raises(ExportError, match="not one of"):
        write_model_gguf(tiny_causal("llama", len(vocab.tokens)), vocab, tmp_path / "x.gguf", "q4_k")
    from peft import IA3Config, get_peft_model

    ia3 = get_peft_model(
        tiny_causal("llama", len(vocab.tokens)),
        IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    )
    with pytest.raises(ExportError, match="LoRA adapters only, not IA3"):
        write_lora_gguf(ia3, tmp_path / "ia3.gguf")
    assert not list(tmp_path.glob("*.gguf"))


# ---- the recipe and the CLI, on finished runs ----------------------------------------------------------


def _train(bpe_llama_dir: Path, dialogue_files, tmp_path: Path, method: dict, name: str):
    from tunelab import build_config, finetune

    tree = experiment(
        bpe_llama_dir,
        dialogue_files,
        tmp_path,
        name=name,
        method=method,
        training={"max_steps": 4, "batch_size": 8, "lr": 1e-2, "warmup_ratio": 0.0, "log_every": 2},
        evaluation={"max_samples": 2, "batch_size": 2, "max_new_tokens": 6, "bootstrap_samples": 10},
    )
    return finetune(build_config(tree)).run_dir


def test_export_recipe_on_a_lora_run_and_modelfile_reproduces_the_prompt(bpe_llama_dir, dialogue_files, tmp_path):
    from tunelab.cli.main import main
    from tunelab.recipes.components import load_eval_examples
    from tunelab.recipes.evaluating import open_run
    from tunelab.recipes.export import export_run

    run = _train(bpe_llama_dir, dialogue_files, tmp_path, {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0}, "lora")
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out), "--dtype", "f32"]) == 0
    manifest = json.loads((out / "export.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == [
        "Modelfile",
        "README.md",
        "export.json",
        "model.gguf",
        "prompt-template.txt",
    ]
    assert manifest["files"]["model.gguf"]["bytes"] == (out / "model.gguf").stat().st_size
    assert manifest["files"]["model.gguf"]["sha256"] == hashlib.sha256((out / "model.gguf").read_bytes()).hexdigest()

    session = open_run(run)
    test_example = load_eval_examples(session.cfg, "test", 1)[0]
    expected = session.encoder.encode_for_generation(session.templates.eval, test_example)
    modelfile = (out / "Modelfile").read_text()
    template = modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert template.replace("{{ .Prompt }}", test_example.input) == expected.prompt
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER num_predict 6" in modelfile
    prompt_file = (out / "prompt-template.txt").read_text()
    assert prompt_file.replace("{input}", test_example.input) == expected.prompt
    assert "ollama create lora -f Modelfile" in (out / "README.md").read_text()

    merged = session.model.merge_and_unload().eval()
    back, back_tok = read_back(out / "model.gguf")
    assert back_tok(expected.prompt, add_special_tokens=False)["input_ids"] == expected.input_ids
    assert (logits(merged, expected.input_ids) - logits(back, expected.input_ids)).abs().max().item() < 1e-4
    assert greedy(back, expected.input_ids) == greedy(merged, expected.input_ids)

    before = (out / "model.gguf").read_bytes()
    with pytest.raises(RunDirError, match="exists already"):
        export_run(run, out)
    assert (out / "model.gguf").read_bytes() == before

    pair = tmp_path / "pair"
    assert main(["export", str(run), "--out", str(pair), "--adapter-only"]) == 0
    assert {"base.gguf", "adapter.gguf"} <= {p.name for p in pair.iterdir()}
    assert "FROM ./base.gguf\nADAPTER ./adapter.gguf" in (pair / "Modelfile").read_text()


def test_full_and_ia3_runs_export_merged_and_prompt_tuning_is_refused(bpe_llama_dir, dialogue_files, tmp_path):
    from tunelab.recipes.evaluating import open_run
    from tunelab.recipes.export import export_run

    full = _train(bpe_llama_dir, dialogue_files, tmp_path, {"name": "full"}, "full")
    out = export_run(full, tmp_path / "full-export", dtype="f32").out
    trained = open_run(full).model.eval()
    back, _ = read_back(out / "model.gguf")
    ids = bpe_tokenizer()(SAMPLES[0])["input_ids"]
    assert (logits(trained, ids) - logits(back, ids)).abs().max().item() < 1e-4
    with pytest.raises(ExportError, match="full fine-tuning run"):
        export_run(full, tmp_path / "x", adapter_only=True)

    ia3 = _train(bpe_llama_dir, dialogue_files, tmp_path, {"name": "ia3"}, "ia3")
    with pytest.raises(ExportError, match="LoRA adapters only, not IA3"):
        export_run(ia3, tmp_path / "y", adapter_only=True)
    out = export_run(ia3, tmp_path / "ia3-export", dtype="f32").out
    session = open_run(ia3)
    merged = session.model.merge_and_unload().eval()
    back, _ = read_back(out / "model.gguf")
    assert (logits(merged, ids) - logits(back, ids)).abs().max().item() < 1e-4

    pt = _train(bpe_llama_dir, dialogue_files, tmp_path, {"name": "prompt_tuning", "num_virtual_tokens": 4}, "pt")
    with pytest.raises(ExportError, match="cannot be merged"):
        export_run(pt, tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_seq2seq_run_is_refused_before_loading_weights(tiny_t5_dir, dialogue_files, tmp_path):
    from tunelab import build_config
    from tunelab.recipes.export import export_run
    from tunelab.runs import RunDir

    cfg = build_config(experiment(tiny_t5_dir, dialogue_files, tmp_path, name="t5"))
    run = RunDir.create(cfg)
    shutil.copytree(tiny_t5_dir, run.model_dir)  # as a full fine-tuning run leaves it
    with pytest.raises(ExportError, match="encoder-decoder"):
        export_run(run.path, tmp_path / "t5-export")
    assert yaml.safe_load(run.config_path.read_text())["name"] == "t5"
