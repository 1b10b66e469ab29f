"""Exported GGUF files run in llama.cpp itself (`llama-cpp-python`): same prompt token ids as the Hugging Face
tokenizer, same greedy output as transformers, and base + LoRA file = merged file. Opt-in: the binding is
built from source (`make test-llamacpp`); without it these tests skip."""

from __future__ import annotations

import pytest
import torch

from test_export import SAMPLES, bpe_tokenizer, greedy, tiny_causal, write

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test-llamacpp)")


def run_llamacpp(path, ids: list[int], n: int = 12, lora=None) -> list[int]:
    llm = llama_cpp.Llama(
        model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=256, n_threads=2, verbose=False
    )
    out = []
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        out.append(token)
        if len(out) == n:
            return out
    return out


def tokenize(path, text: str) -> list[int]:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False, vocab_only=True)
    return llm.tokenize(text.encode(), add_bos=False, special=True)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_llamacpp_tokenizes_and_generates_as_transformers(model_type, tmp_path):
    tok = bpe_tokenizer()
    model = tiny_causal(model_type, len(tok))
    path = write(model, tok, tmp_path / "m.gguf", "f32")
    for text in SAMPLES:
        assert tokenize(path, text) == tok(text, add_special_tokens=False)["input_ids"]
    ids = tok(SAMPLES[1], add_special_tokens=False)["input_ids"]
    assert run_llamacpp(path, ids) == greedy(model, ids)


def test_llamacpp_lora_file_on_base_equals_merged_file(tmp_path):
    from peft import LoraConfig, get_peft_model

    from tunelab.export.gguf import write_lora_gguf

    tok = bpe_tokenizer()
    base = write(tiny_causal("llama", len(tok)), tok, tmp_path / "base.gguf", "f32")
    peft_model = get_peft_model(
        tiny_causal("llama", len(tok)),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter = write_lora_gguf(peft_model, tmp_path / "adapter.gguf")
    merged_model = peft_model.merge_and_unload()
    merged = write(merged_model, tok, tmp_path / "merged.gguf", "f32")
    ids = tok(SAMPLES[0], add_special_tokens=False)["input_ids"]
    expected = greedy(merged_model, ids)
    assert expected != greedy(tiny_causal("llama", len(tok)), ids)  # the adapter changes the answer
    assert run_llamacpp(merged, ids) == expected
    assert run_llamacpp(base, ids, lora=adapter) == expected
