"""The light tokenizer (tokenizers + jinja2, no transformers) gives what transformers gives: ids, offsets, decoded
text, chat-template renderings, and so the same data preview."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import bpe_tokenizer, experiment, make_tokenizer
from tunelab.data.light_tokenizer import LightTokenizer

TEXTS = [
    "#Person1#: hello , anna here . i want to buy a red car . \n#Person2#: okay .",
    "Ünïcödé  spaces\tand\nnewlines?! 1234 don't",
    "",
]
CONVERSATIONS = [
    [{"role": "user", "content": "Summarize: anna wants a car."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ],
]


def _both(folder: Path):
    from transformers import AutoTokenizer

    return LightTokenizer.from_folder(folder), AutoTokenizer.from_pretrained(folder)


def _tokenizer_folders(tmp_path) -> list[Path]:
    from tunelab.models.registry import alias_dir, is_pulled

    folders = []
    for name, tok in (("wordlevel-chat", make_tokenizer(chat=True)), ("bpe-chatml", bpe_tokenizer())):
        tok.save_pretrained(tmp_path / name)
        folders.append(tmp_path / name)
    if is_pulled("smollm2-135m-instruct"):
        folders.append(alias_dir("smollm2-135m-instruct"))
    return folders


def test_same_ids_offsets_text_and_chat_renderings_as_transformers(tmp_path):
    for folder in _tokenizer_folders(tmp_path):
        light, full = _both(folder)
        assert light.eos_token_id == full.eos_token_id and light.eos_token == full.eos_token
        for text in TEXTS:
            for special in (True, False):
                a = light(text, add_special_tokens=special, return_offsets_mapping=True)
                b = full(text, add_special_tokens=special, return_offsets_mapping=True)
                assert a["input_ids"] == b["input_ids"], (folder.name, text)
                assert a["offset_mapping"] == [tuple(o) for o in b["offset_mapping"]]
                assert light.decode(a["input_ids"]) == full.decode(b["input_ids"])
        for messages in CONVERSATIONS:
            for generation_prompt in (True, False):
                assert light.apply_chat_template(
                    messages, add_generation_prompt=generation_prompt
                ) == full.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def test_data_preview_is_the_same_through_both_tokenizers(tiny_llama_chat_dir, dialogue_files, tmp_path, monkeypatch):
    from tunelab import build_config
    from tunelab.data import preview

    cfg = build_config(experiment(tiny_llama_chat_dir, dialogue_files, tmp_path))
    light = preview.preview_data(cfg, n=3)
    monkeypatch.setattr(preview, "_light_tokenizer", lambda cfg: None)
    full = preview.preview_data(cfg, n=3)
    assert light == full and light.examples


def test_a_folder_without_tokenizer_json_falls_back(tmp_path):
    assert LightTokenizer.from_folder(tmp_path) is None
    with pytest.raises(ValueError, match="no chat template"):
        make_tokenizer().save_pretrained(tmp_path / "plain")
        LightTokenizer.from_folder(tmp_path / "plain").apply_chat_template([{"role": "user", "content": "x"}])
