"""What a server holds: one base model with its task adapters attached (PEFT, several at once, mixed in one
batch), and full fine-tuning runs as models of their own; and how a request's input becomes prompt ids."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.loader import build_config, load_config
from tunelab.data.encoding import Encoded, PromptEncoder, flatten_chat
from tunelab.data.records import Example
from tunelab.data.templates import Template, TemplateSet
from tunelab.errors import ConfigError, ModelError
from tunelab.inference.adapters import BASE, attach_adapter, read_adapter_meta
from tunelab.modeling import Arch

SERVABLE_ADAPTERS = ("lora", "qlora")  # PEFT mixes these in one batch (adapter_names)


@dataclass
class TaskPrompt:
    """How a model's own training prompt is applied to a raw input (what `tunelab generate --run` does)."""

    encoder: PromptEncoder
    template: Template
    max_new_tokens: int

    def encode(self, text: str) -> Encoded:
        return self.encoder.encode_for_generation(self.template, Example("request", text, ()))


@dataclass
class ServedModel:
    id: str
    group: str  # models of one group share weights and can share a batch
    adapter: str  # PEFT adapter name inside the group, or BASE
    root: str  # where it was loaded from
    parent: str | None  # an adapter names its base model, as vLLM does
    task: TaskPrompt | None = None


@dataclass
class Group:
    model: Any
    tokenizer: Any
    arch: Arch
    use_chat_template: bool
    encoder: PromptEncoder  # plain encoder (no truncation beyond the window) for chat/completion prompts
    max_length: int
    lock: threading.Lock = field(default_factory=threading.Lock)  # generation vs adapter loading


def _task_prompt(run_dir: Path | None, meta: dict[str, Any], tokenizer, arch: Arch, use_chat: bool) -> TaskPrompt:
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        cfg = load_config(run_dir / "config.yaml")
    else:  # an adapter folder outside a run: its task's default phrasing
        cfg = build_config({"template": {"task": meta.get("task", "dialogue_summarization")}})
    encoder = PromptEncoder.from_config(cfg, tokenizer, arch, use_chat)
    return TaskPrompt(encoder, TemplateSet.from_config(cfg.template).eval, cfg.evaluation.max_new_tokens)


def _window(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "n_positions", 0) or 2048)


class ModelPool:
    """The served models. Adapters can be attached and removed while serving (under the group's lock)."""

    def __init__(self) -> None:
        self.models: dict[str, ServedModel] = {}
        self.groups: dict[str, Group] = {}
        self.base_id: str | None = None

    # ---- loading ----------------------------------------------------------------------------------
    def _open(self, model_name: str, precision_cfg: dict[str, Any]):
        from tunelab.models.loading import load_model, pick_device

        cfg = build_config({"model": {"name": model_name, **precision_cfg}})
        return load_model(cfg.model, device=pick_device("auto"))

    def _add_group(self, key: str, loaded) -> Group:
        loaded.model.eval()
        encoder = PromptEncoder(loaded.tokenizer, loaded.arch, loaded.use_chat_template, _window(loaded.model), 1)
        group = Group(
            loaded.model, loaded.tokenizer, loaded.arch, loaded.use_chat_template, encoder, _window(loaded.model)
        )
        self.groups[key] = group
        return group

    def set_base(self, model_name: str, model_cfg: dict[str, Any] | None = None) -> None:
        loaded = self._open(model_name, model_cfg or {})
        self._add_group("base", loaded)
        self.base_id = model_name
        self.models[model_name] = ServedModel(model_name, "base", BASE, loaded.source.path, None)

    def add_adapter(self, name: str, path: str | Path) -> ServedModel:
        if self.base_id is None:
            raise ConfigError("adapters need a base model (--model)")
        if name in self.models:
            raise ConfigError(f"a model named {name!r} is served already")
        path = Path(path)
        folder = path / "adapter" if (path / "adapter").is_dir() else path
        meta = read_adapter_meta(folder)
        if meta.get("method") and meta["method"] not in SERVABLE_ADAPTERS:
            raise ModelError(
                f"adapter {folder} is {meta['method']}: serving mixes LoRA/QLoRA adapters in one batch; "
                "merge other methods (tunelab merge) or serve a full fine-tuning run"
            )
        group = self.groups["base"]
        with group.lock:
            group.model = attach_adapter(group.model, folder, self.base_id, adapter_name=name)
            group.model.eval()
        run_dir = folder.parent if folder.name == "adapter" else None
        task = _task_prompt(run_dir, meta, group.tokenizer, group.arch, group.use_chat_template)
        served = ServedModel(name, "base", name, str(folder.resolve()), self.base_id, task)
        self.models[name] = served
        return served

    def remove_adapter(self, name: str) -> None:
        served = self.models.get(name)
        if served is None or served.parent is None or served.group != "base":
            raise ModelError(f"no adapter named {name!r} is served")
        group = self.groups["base"]
        with group.lock:
            group.model.delete_adapter(name)
        del self.models[name]

    def add_full_run(self, name: str, run_dir: Path) -> None:
        from tunelab.runs import RunDir

        run = RunDir.open(run_dir)
        if name in self.models:
            raise ConfigError(f"a model named {name!r} is served already")
        loaded = self._open(str(run.model_dir), {})
        group = self._add_group(name, loaded)
        task = _task_prompt(run.path, {}, group.tokenizer, group.arch, group.use_chat_template)
        self.models[name] = ServedModel(name, name, BASE, str(run.model_dir), None, task)

    # ---- requests ---------------------------------------------------------------------------------
    def chat_prompt(self, served: ServedModel, messages: list[dict[str, str]], task_prompt: bool) -> Encoded:
        group = self.groups[served.group]
        if task_prompt:
            return self._task(served).encode(self._last_user(messages))
        if group.use_chat_template:
            text = group.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = group.tokenizer(text, add_special_tokens=False)["input_ids"]
            return Encoded(ids, prompt=text)
        text = flatten_chat(messages)
        return self._plain(group, text)

    def completion_prompt(self, served: ServedModel, prompt: str, task_prompt: bool) -> Encoded:
        if task_prompt:
            return self._task(served).encode(prompt)
        return self._plain(self.groups[served.group], prompt)

    @staticmethod
    def _plain(group: Group, text: str) -> Encoded:
        ids = group.tokenizer(text)["input_ids"]
        if group.arch == "seq2seq" and (not ids or ids[-1] != group.tokenizer.eos_token_id):
            ids = ids + [group.tokenizer.eos_token_id]
        return Encoded(ids, prompt=text)

    @staticmethod
    def _last_user(messages: list[dict[str, str]]) -> str:
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise ConfigError("task_prompt needs a user message (the raw input)")
        return users[-1]

    def _task(self, served: ServedModel) -> TaskPrompt:
        if served.task is None:
            group = self.groups[served.group]
            served.task = _task_prompt(None, {}, group.tokenizer, group.arch, group.use_chat_template)
        return served.task
