"""A Hugging Face tokenizer folder read with `tokenizers` and `jinja2` alone, for the commands that must start
without torch or transformers (`tunelab data preview`): the same ids and offsets (the `tokenizers` library is
what transformers' fast tokenizers run on) and the same chat-template rendering (transformers' sandboxed jinja
environment, rebuilt here with its filters and globals). Anything else falls back to transformers."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _content(token: Any) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


def _chat_environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class LightTokenizer:
    """The parts of a transformers tokenizer that prompt encoding and data preview use."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        special_file = folder / "special_tokens_map.json"
        special = json.loads(special_file.read_text(encoding="utf-8")) if special_file.is_file() else {}
        self.special_tokens_map = {
            k: _content(config.get(k, special.get(k)))
            for k in SPECIAL_KEYS
            if _content(config.get(k, special.get(k))) is not None
        }
        if "pad_token" not in self.special_tokens_map and "eos_token" in self.special_tokens_map:
            self.special_tokens_map["pad_token"] = self.special_tokens_map["eos_token"]  # as load_tokenizer does
        jinja_file = folder / "chat_template.jinja"
        self.chat_template = (
            jinja_file.read_text(encoding="utf-8") if jinja_file.is_file() else config.get("chat_template")
        )
        self.clean_up_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self._template: Any = None  # the compiled jinja2 template, on first use

    @classmethod
    def from_folder(cls, folder: str | Path) -> LightTokenizer | None:
        """None where the folder has no tokenizer.json (a slow-only tokenizer): use transformers then."""
        folder = Path(folder)
        return cls(folder) if (folder / "tokenizer.json").is_file() else None

    def _id(self, key: str) -> int | None:
        token = self.special_tokens_map.get(key)
        return self.backend.token_to_id(token) if token is not None else None

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens_map.get("eos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._id("pad_token")

    @property
    def bos_token_id(self) -> int | None:
        return self._id("bos_token")

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        enc = self.backend.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": list(enc.ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = [tuple(o) for o in enc.offsets]
        return out

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        text = self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if self.clean_up_spaces:  # transformers' clean_up_tokenization
            for before, after in (
                (" .", "."),
                (" ?", "?"),
                (" !", "!"),
                (" ,", ","),
                (" ' ", "'"),
                (" n't", "n't"),
                (" 'm", "'m"),
                (" 's", "'s"),
                (" 've", "'ve"),
                (" 're", "'re"),
            ):
                text = text.replace(before, after)
        return text

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = False) -> str:
        if tokenize:
            raise NotImplementedError("LightTokenizer renders chat templates as text only")
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template")
        if self._template is None:
            self._template = _chat_environment().from_string(self.chat_template)
        template = self._template
        return template.render(
            messages=list(messages),
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )
