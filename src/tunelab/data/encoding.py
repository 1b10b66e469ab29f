"""Turning (template, example) into token ids: the prompt, the completion, and the loss mask.

Causal models see `prompt + completion + EOS` with labels -100 on the prompt, so the loss covers the
completion and EOS only. Seq2seq models see the prompt on the encoder and `completion + EOS` as labels.
For a causal model with a chat template, the prompt is the rendered user turn plus the assistant header.
Over-long inputs are cut in token space at `max_input_tokens` (the instruction is kept whole) and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tunelab.data.records import Example
from tunelab.data.templates import Template
from tunelab.errors import DataError
from tunelab.modeling import Arch

if TYPE_CHECKING:
    from tunelab.config.schema import ExperimentConfig

IGNORE_INDEX = -100


@dataclass
class TruncationStats:
    examples: int = 0
    inputs_truncated: int = 0
    targets_truncated: int = 0

    def reset(self) -> None:
        self.examples = self.inputs_truncated = self.targets_truncated = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "examples": self.examples,
            "inputs_truncated": self.inputs_truncated,
            "targets_truncated": self.targets_truncated,
        }


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int] = field(default_factory=list)  # empty for prompt-only (generation) encodings
    prompt: str | None = None  # generation: the exact prompt text the ids encode (kept in predictions.jsonl)

    @property
    def length(self) -> int:
        return len(self.input_ids) + (
            len(self.labels) if self.labels and len(self.labels) != len(self.input_ids) else 0
        )


TrainOn = Literal["all_assistant", "last_assistant"]


def _chat_turns(messages: Sequence[dict]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def flatten_chat(messages: Sequence[dict]) -> str:
    """A conversation as plain text for models without a chat template: `role: content` lines, ending with
    the assistant's cue (the answer follows)."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


class PromptEncoder:
    def __init__(
        self,
        tokenizer,
        arch: Arch,
        use_chat_template: bool,
        max_input_tokens: int,
        max_target_tokens: int,
        train_on: TrainOn = "all_assistant",
    ):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; generation could not stop")
        self.tok = tokenizer
        self.arch = arch
        self.use_chat_template = use_chat_template
        self.max_input_tokens = max_input_tokens
        self.max_target_tokens = max_target_tokens
        self.train_on = train_on
        self.stats = TruncationStats()

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, tokenizer, arch: Arch, use_chat_template: bool) -> PromptEncoder:
        """The encoder a config's `template:` lengths and `data.train_on` describe, for this tokenizer."""
        return cls(
            tokenizer,
            arch,
            use_chat_template,
            cfg.template.max_input_tokens,
            cfg.template.max_target_tokens,
            cfg.data.train_on,
        )

    # ---- text -------------------------------------------------------------------------------------
    def truncate_input(self, text: str, keep_end: bool = False) -> tuple[str, bool]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        n = len(enc["input_ids"])
        if n <= self.max_input_tokens:
            return text, False
        if keep_end:  # a conversation keeps its latest turns
            return text[enc["offset_mapping"][n - self.max_input_tokens][0] :], True
        end = enc["offset_mapping"][self.max_input_tokens - 1][1]
        return text[:end], True

    def _count(self, cut: bool) -> None:
        self.stats.examples += 1
        self.stats.inputs_truncated += int(cut)

    def _render_counted(self, template: Template, example: Example) -> str:
        if example.messages is not None:  # chat record on a model without a chat template
            text, cut = self.truncate_input(flatten_chat(example.messages[:-1]), keep_end=True)
            self._count(cut)
            return text
        text, cut = self.truncate_input(example.input)
        self._count(cut)
        if example.template and not template.custom:
            template = Template(example.template)
        return template.render(text, example.fields, example.input_column)

    def _chat(self, messages: Sequence[dict], generation_prompt: bool) -> str:
        return self.tok.apply_chat_template(
            _chat_turns(messages), tokenize=False, add_generation_prompt=generation_prompt
        )

    def prompt_text(self, template: Template, example: Example) -> str:
        """The exact text the model is given (chat template applied), before tokenization."""
        if example.messages is not None and self.use_chat_template:
            return self._chat(example.messages[:-1], True)
        rendered = self._render_counted(template, example)
        if self.use_chat_template:
            system = [{"role": "system", "content": example.system}] if example.system else []
            return self._chat([*system, {"role": "user", "content": rendered}], True)
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
        if example.messages is not None and self.use_chat_template:
            encoded = self._encode_conversation(example.messages)
            if all(t == IGNORE_INDEX for t in encoded.labels):
                raise DataError(f"example {example.id}: no assistant turn is trained (every weight is 0)")
            return encoded
        prompt = self._prompt_ids(self.prompt_text(template, example))
        completion = self._completion_ids(example.target)
        if self.arch == "seq2seq":
            return Encoded(input_ids=prompt, labels=completion)
        return Encoded(input_ids=prompt + completion, labels=[IGNORE_INDEX] * len(prompt) + completion)

    def encode_for_generation(self, template: Template, example: Example) -> Encoded:
        text = self.prompt_text(template, example)
        ids = self._prompt_ids(text)
        if example.messages is not None and self.use_chat_template:  # long conversations keep their latest turns
            self._count(len(ids) > self.max_input_tokens)
            ids = ids[-self.max_input_tokens :]
        return Encoded(input_ids=ids, prompt=text)

    def assistant_spans(self, messages: Sequence[dict]) -> list[tuple[int, int]]:
        """Character spans of the rendered conversation that are trained: each assistant turn's content and
        end-of-turn marker (not the header the template puts before it, not the whitespace after it); every
        assistant turn of weight 1, or only the last one (`train_on: last_assistant`)."""
        full = self._chat(messages, False)
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1)]
        if self.train_on == "last_assistant":
            turns = [len(messages) - 1] if messages[-1].get("weight", 1) else []
        spans = []
        for i in turns:
            before, through = self._chat(messages[:i], True), self._chat(messages[: i + 1], False)
            if not (full.startswith(through) and through.startswith(before)):
                raise DataError(
                    "the model's chat template does not render a conversation as a prefix of its "
                    "continuation, so assistant turns cannot be located for the loss mask; use "
                    "train_on: last_assistant or model.chat_template: off"
                )
            spans.append((len(before), len(through.rstrip())))
        return spans

    def _encode_conversation(self, messages: Sequence[dict]) -> Encoded:
        full = self._chat(messages, False)
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        spans = self.assistant_spans(messages)
        ids = list(enc["input_ids"])
        labels = [
            t if any(a <= start < b for a, b in spans) else IGNORE_INDEX
            for t, (start, _) in zip(ids, enc["offset_mapping"])
        ]
        budget = self.max_input_tokens + self.max_target_tokens
        self._count(len(ids) > budget)
        if len(ids) > budget:  # keep the latest turns (the last answer is always kept)
            ids, labels = ids[-budget:], labels[-budget:]
        return Encoded(input_ids=ids, labels=labels)

    def few_shot_prompt_text(self, template: Template, shots: Sequence[Example], example: Example) -> str:
        """k solved examples before the query: chat turns for chat models, else blank-line separated blocks."""
        rendered = []
        for shot in shots:
            text, _ = self.truncate_input(shot.input)
            rendered.append((template.render(text, shot.fields, shot.input_column), shot.target))
        query = self._render_counted(template, example)
        if self.use_chat_template:
            messages = [
                m
                for prompt, answer in rendered
                for m in ({"role": "user", "content": prompt}, {"role": "assistant", "content": answer})
            ]
            return self.tok.apply_chat_template(
                [*messages, {"role": "user", "content": query}], tokenize=False, add_generation_prompt=True
            )
        return "".join(f"{prompt} {answer}\n\n" for prompt, answer in rendered) + query

    def encode_few_shot(
        self, template: Template, shots: Sequence[Example], example: Example, max_prompt_tokens: int | None = None
    ) -> tuple[Encoded, int]:
        """Prompt ids with k in-context examples, and the untruncated length. Past `max_prompt_tokens`
        (the model's window minus the generation budget) the oldest tokens are dropped."""
        text = self.few_shot_prompt_text(template, shots, example)
        ids = self._prompt_ids(text)
        full = len(ids)
        if max_prompt_tokens is not None and full > max_prompt_tokens:
            # cut in token space: the prompt text is decoded from the ids kept
            return Encoded(input_ids=ids[-max_prompt_tokens:], prompt=None), full
        return Encoded(input_ids=ids, prompt=text), full


def encode_training_set(
    encoder: PromptEncoder, examples: Sequence[Example], templates: Sequence[Template]
) -> list[Encoded]:
    return [encoder.encode_for_training(t, ex) for t, ex in zip(templates, examples, strict=True)]
