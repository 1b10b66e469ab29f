"""Declarative benchmark tasks: one YAML file per task (in the spirit of lm-evaluation-harness)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunelab.errors import ConfigError

TASK_DIR = Path(__file__).parent / "tasks"


class HubSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str | None = None
    split: str = "test"


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["multiple_choice", "generation"]
    description: str = ""
    loader: Literal["jsonl", "json", "tsv", "mmlu", "parallel"]
    path: str  # relative to the data root
    preprocess: str | None = None  # a registered document transform (loaders.PREPROCESSORS)
    prompt: str  # Python format string over the document's fields
    limit: int | None = Field(100, gt=0)
    seed: int = 1234
    hub: HubSource | None = None
    # multiple choice
    choices: list[str] | None = None
    choice_fields: list[str] | None = None
    choice_prefix: str = ""
    label_field: str | None = None
    label_map: dict[str, int] | None = None
    # mmlu
    split: str = "test"
    fewshot_split: str = "dev"
    num_fewshot: int = Field(0, ge=0)
    subjects: Literal["all"] | list[str] = "all"
    description_prompt: str = ""
    # generation
    reference_fields: list[str] | None = None
    metric: Literal["rouge", "translation"] | None = None
    max_new_tokens: int = 64
    max_input_chars: int | None = None
    source_file: str | None = None
    reference_files: list[str] | None = None


def _load_spec(path: Path) -> TaskSpec:
    try:
        return TaskSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"task file {path}: {bad}") from None


def available_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TASK_DIR.glob("*.yaml"))}


def get_task(name_or_path: str, **overrides) -> TaskSpec:
    """A task by registry name or YAML path; keyword overrides (e.g. limit=20) replace spec fields."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        spec = _load_spec(path)
    else:
        tasks = available_tasks()
        if name_or_path not in tasks:
            raise ConfigError(f"unknown benchmark task {name_or_path!r}; tasks: {', '.join(tasks)}")
        spec = _load_spec(tasks[name_or_path])
    return spec.model_copy(update={k: v for k, v in overrides.items() if v is not None})
