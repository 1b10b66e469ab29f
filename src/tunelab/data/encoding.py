"""Turning (template, example) into token ids: the prompt, the completion, and the loss mask.

Causal models see `prompt + completion + EOS` with labels -100 on the prompt, so the loss covers the
completion and EOS only. Seq2seq models see the prompt on the encoder and `completion + EOS` as labels.
For a causal model with a chat template, the prompt is the rendered user turn plus the assistant header.
Over-long inputs are cut in token space at `max_input_tokens` (the instruction is kept whole) and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tunelab.data.records import Example
from tunelab.data.templates import Template

IGNORE_INDEX = -100
Arch = Literal["causal", "seq2seq"]


@dataclass
class TruncationStats:
    examples: int = 0
    inputs_truncated: int = 0
    targets_truncated: int = 0

    def reset(self) -> None:
        self.examples = self.inputs_truncated = self.targets_truncated = 0

    def as_dict(self) -> dict[str, int]:
        return {"examples": self.examples, "inputs_truncated": self.inputs_truncated,
                "targets_truncated": self.targets_truncated}


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int] = field(default_factory=list)  # empty for prompt-only (generation) encodings

    @property
    def length(self) -> int:
        return len(self.input_ids) + (len(self.labels) if self.labels and len(self.labels) != len(self.input_ids) else 0)


class PromptEncoder:
    def __init__(self, tokenizer, arch: Arch, use_chat_template: bool, max_input_tokens: int,
                 max_target_tokens: int):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; generation could not stop")
        self.tok = tokenizer
        self.arch = arch
        self.use_chat_template = use_chat_template
        self.max_input_tokens = max_input_tokens
        self.max_target_tokens = max_target_tokens
        self.stats = TruncationStats()

    # ---- text -------------------------------------------------------------------------------------
    def truncate_input(self, text: str) -> tuple[str, bool]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= self.max_input_tokens:
            return text, False
        end = enc["offset_mapping"][self.max_input_tokens - 1][1]
        return text[:end], True

    def _render_counted(self, template: Template, example: Example) -> str:
        text, cut = self.truncate_input(example.input)
        self.stats.examples += 1
        self.stats.inputs_truncated += int(cut)
        return template.render(text)

    def prompt_text(self, template: Template, example: Example) -> str:
        rendered = self._render_counted(template, example)
        if self.use_chat_template:
            return self.tok.apply_chat_template([{"role": "user", "content": rendered}], tokenize=False,
                                                add_generation_prompt=True)
        return rendered

    # ---- ids --------------------------------------------------------------------------------------
    def _prompt_ids(self, prompt: str) -> list[int]:
        # A chat-rendered prompt already holds its special tokens.
        ids = self.tok(prompt, add_special_tokens=not self.use_chat_template)["input_ids"]
        if self.arch == "seq2seq" and (not ids or ids[-1] != self.tok.eos_token_id):
            ids = ids + [self.tok.eos_token_id]
        return ids

    def _completion_ids(self, target: str) -> list[int]:
        text = target if self.arch == "seq2seq" or self.use_chat_template else " " + target
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_target_tokens - 1:
            ids = ids[: self.max_target_tokens - 1]
            self.stats.targets_truncated += 1
        return ids + [self.tok.eos_token_id]

    def encode_for_training(self, template: Template, example: Example) -> Encoded:
        prompt = self._prompt_ids(self.prompt_text(template, example))
        completion = self._completion_ids(example.target)
        if self.arch == "seq2seq":
            return Encoded(input_ids=prompt, labels=completion)
        return Encoded(input_ids=prompt + completion, labels=[IGNORE_INDEX] * len(prompt) + completion)

    def encode_for_generation(self, template: Template, example: Example) -> Encoded:
        return Encoded(input_ids=self._prompt_ids(self.prompt_text(template, example)))

    def few_shot_prompt_text(self, template: Template, shots: Sequence[Example], example: Example) -> str:
        """k solved examples before the query: chat turns for chat models, else blank-line separated blocks."""
        rendered = []
        for shot in shots:
            text, _ = self.truncate_input(shot.input)
            rendered.append((template.render(text), shot.target))
        query = self._render_counted(template, example)
        if self.use_chat_template:
            messages = [m for prompt, answer in rendered
                        for m in ({"role": "user", "content": prompt}, {"role": "assistant", "content": answer})]
            return self.tok.apply_chat_template([*messages, {"role": "user", "content": query}], tokenize=False,
                                                add_generation_prompt=True)
        return "".join(f"{prompt} {answer}\n\n" for prompt, answer in rendered) + query

    def encode_few_shot(self, template: Template, shots: Sequence[Example], example: Example,
                        max_prompt_tokens: int | None = None) -> tuple[Encoded, int]:
        """Prompt ids with k in-context examples, and the untruncated length. Past `max_prompt_tokens`
        (the model's window minus the generation budget) the oldest tokens are dropped."""
        ids = self._prompt_ids(self.few_shot_prompt_text(template, shots, example))
        full = len(ids)
        if max_prompt_tokens is not None and full > max_prompt_tokens:
            ids = ids[-max_prompt_tokens:]
        return Encoded(input_ids=ids), full


def encode_training_set(encoder: PromptEncoder, examples: Sequence[Example], templates: Sequence[Template]) -> list[Encoded]:
    return [encoder.encode_for_training(t, ex) for t, ex in zip(templates, examples, strict=True)]
