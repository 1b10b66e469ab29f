"""The tokenizer as llama.cpp reads it from GGUF metadata, built from the Hugging Face tokenizer in use.

llama.cpp re-implements tokenization from the vocabulary, the merges and a named pre-tokenizer (the regex
that splits text before merging), so the name must describe the split the model was trained with.
Supported: byte-level BPE tokenizers (GPT-2 style: SmolLM2, Llama 3, Qwen2/3), whose split is recognised
from `tokenizer.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import ExportError

# Canonical llama.cpp pre-tokenizer names for the regexes transformers' GGUF reader knows.
_PREFERRED_PRE = ("llama-bpe", "qwen2", "tekken", "gpt-4o", "qwen35")


def _split_regexes() -> dict[str, str]:
    """regex -> llama.cpp pre-tokenizer name, from transformers' table for reading GGUF files."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    table: dict[str, str] = {}
    for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
        if name in _PREFERRED_PRE or regex not in table:
            table[regex] = name
    return table


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenization, or an error naming what was found."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        name = _split_regexes().get(regex) if isinstance(regex, str) else None
        if name is not None:
            return name
    raise ExportError(
        f"the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) has no llama.cpp "
        "equivalent the exporter knows, so llama.cpp would split text differently from training; "
        "supported: GPT-2, SmolLM, Llama 3, Qwen2 and the other regexes transformers' GGUF reader knows"
    )


def _check_byte_level_bpe(tokenizer_json: dict[str, Any]) -> None:
    model = tokenizer_json.get("model") or {}
    decoder = (tokenizer_json.get("decoder") or {}).get("type")
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder != "ByteLevel":
        kind = model.get("type", "unknown")
        kind += " with byte fallback (SentencePiece style)" if model.get("byte_fallback") else ""
        raise ExportError(
            f"the GGUF exporter handles byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen2/3); this one "
            f"is {kind} with a {decoder} decoder"
        )


@dataclass
class GgufVocab:
    """Tokens, their llama.cpp types, the pre-tokenizer name and the tokenizer folder (merges, special ids,
    add-BOS flag and chat template are read from it by `gguf.SpecialVocab`)."""

    tokens: list[str]
    types: list[int]  # gguf.TokenType values
    pre: str
    folder: Path
    add_bos: bool  # whether the tokenizer puts BOS before a plain prompt (llama.cpp must do the same)

    def write(self, writer: Any, vocab_size: int) -> None:
        import gguf

        if len(self.tokens) > vocab_size:
            raise ExportError(
                f"the tokenizer has {len(self.tokens)} tokens but the model's embedding only {vocab_size} rows"
            )
        pad = vocab_size - len(self.tokens)  # embedding rows past the tokenizer (padded vocabularies)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens + [f"[PAD{i}]" for i in range(len(self.tokens), vocab_size)])
        writer.add_token_types(self.types + [gguf.TokenType.UNUSED] * pad)
        writer.add_add_space_prefix(False)
        special = gguf.SpecialVocab(self.folder, load_merges=True, n_vocab=vocab_size)
        special.add_special_token.setdefault("bos", self.add_bos)
        special.add_to_gguf(writer, quiet=True)


def vocab_from_tokenizer(tokenizer: Any, folder: Path) -> GgufVocab:
    """Save `tokenizer` into `folder` and describe it for llama.cpp."""
    import gguf

    tokenizer.save_pretrained(folder)
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise ExportError("the GGUF exporter needs a fast tokenizer (tokenizer.json); this one has none")
    tokenizer_json = json.loads(path.read_text(encoding="utf-8"))
    _check_byte_level_bpe(tokenizer_json)
    pre = pre_tokenizer_name(tokenizer_json)
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(max(by_id) + 1):
        if i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    probe = tokenizer("a")["input_ids"]
    add_bos = tokenizer.bos_token_id is not None and bool(probe) and probe[0] == tokenizer.bos_token_id
    return GgufVocab(tokens, [int(t) for t in types], pre, Path(folder), add_bos)
