"""Tiny randomly initialised models and a tiny word-level tokenizer, built in the tests (no downloads)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import tunelab  # noqa: F401  (quiets bitsandbytes' import warning)

NAMES = ["anna", "ben", "carl", "dora", "emma", "fred", "gina", "hugo"]
THINGS = ["car", "book", "ticket", "phone", "dress", "lamp", "bike", "watch"]
COLORS = ["red", "blue", "green", "black", "white", "pink"]
FILLER = ["hello", "hi", "yes", "no", "please", "thanks", "okay", "sure", "well", "maybe", "today", "now"]
SPECIAL = ["<pad>", "</s>", "<unk>", "<s>", "<|user|>", "<|assistant|>"]
WORDS = sorted(
    set(
        NAMES
        + THINGS
        + COLORS
        + FILLER
        + [
            "#person1#:",
            "#person2#:",
            "i",
            "want",
            "to",
            "buy",
            "a",
            "wants",
            "the",
            ".",
            ",",
            "?",
            "!",
            ":",
            "summarize",
            "following",
            "conversation",
            "summary",
            "briefly",
            "that",
            "dialogue",
            "here",
            "is",
            "write",
            "short",
            "what",
            "of",
            "this",
            "was",
            "about",
            "in",
            "two",
            "sentences",
            "or",
            "less",
            "brief",
            "between",
            "speakers",
            "text",
            "above",
            "one-sentence",
            "article",
            "\n",
        ]
    )
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def make_tokenizer(chat: bool = False):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit()])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins word tokens with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", bos_token="<s>"
    )
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def bpe_tokenizer():
    """A tiny byte-level BPE tokenizer (GPT-2 style, as SmolLM2's) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(synthetic_dialogue(rng)) for _ in range(300)] + [" ".join(WORDS)] * 5
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tok.chat_template = CHATML
    return tok


def tiny_llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=3,
        initializer_range=0.2,
    )  # larger than default so LoRA alone can move the logits
    return LlamaForCausalLM(cfg)


def tiny_t5(vocab_size: int, dropout_rate: float = 0.0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        dropout_rate=dropout_rate,
    )
    return T5ForConditionalGeneration(cfg)


def _save(model, tok, path: Path) -> Path:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    tok = make_tokenizer()
    return _save(tiny_llama(len(tok)), tok, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama_chat_dir(tmp_path_factory) -> Path:
    tok = make_tokenizer(chat=True)
    return _save(tiny_llama(len(tok)), tok, tmp_path_factory.mktemp("tiny-llama-chat"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    tok = make_tokenizer()
    return _save(tiny_t5(len(tok)), tok, tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_t5_dropout_dir(tmp_path_factory) -> Path:
    """tiny T5 with T5's own dropout rate (0.1) in its Dropout modules and attention."""
    tok = make_tokenizer()
    return _save(tiny_t5(len(tok), dropout_rate=0.1), tok, tmp_path_factory.mktemp("tiny-t5-dropout"))


def synthetic_dialogue(rng: random.Random) -> tuple[str, str]:
    """A dialogue whose summary ('anna wants a red car .') is recoverable from its words."""
    name, thing, color = rng.choice(NAMES), rng.choice(THINGS), rng.choice(COLORS)
    pre = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 4)))
    dialogue = (
        f"#person1#: {pre} , {name} here . i want to buy a {color} {thing} . \n"
        f"#person2#: {rng.choice(FILLER)} {rng.choice(FILLER)} ."
    )
    return dialogue, f"{name} wants a {color} {thing} ."


def write_dialogue_files(
    folder: Path, n_train: int = 64, n_val: int = 8, n_test: int = 6, seed: int = 0
) -> dict[str, str]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        path = folder / f"{split}.jsonl"
        with open(path, "w") as f:
            for i in range(n):
                d, s = synthetic_dialogue(rng)
                f.write(json.dumps({"fname": f"{split}_{i}", "dialogue": d, "summary": s}) + "\n")
        files[split] = str(path)
    return files


@pytest.fixture
def dialogue_files(tmp_path) -> dict[str, str]:
    return write_dialogue_files(tmp_path / "data")


def experiment(model_dir: Path, files: dict[str, str], tmp_path: Path, **sections) -> dict:
    """A small experiment config tree for the tiny models."""
    tree = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {"source": "files", "files": files, "id_column": "fname", "max_eval_samples": 8},
        "template": {"max_input_tokens": 64, "max_target_tokens": 16},
        "method": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "training": {"max_steps": 30, "batch_size": 8, "lr": 1e-2, "warmup_ratio": 0.0, "log_every": 5},
        "evaluation": {"max_samples": 6, "batch_size": 4, "max_new_tokens": 8, "bootstrap_samples": 50},
    }
    for key, value in sections.items():
        merge = isinstance(value, dict) and key != "method"
        tree[key] = {**tree.get(key, {}), **value} if merge else value
    return tree


@pytest.fixture(scope="session")
def dialogsum_dir() -> Path:
    from tunelab.paths import data_root

    root = data_root()
    if root is None or not (root / "dialogsum").is_dir():
        pytest.skip("DialogSum not found: set TUNELAB_DATA_DIR to the folder holding dialogsum/")
    return root / "dialogsum"
