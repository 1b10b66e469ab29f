"""Declarative benchmark tasks: one YAML file per task (in the spirit of lm-evaluation-harness)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunelab.config.loader import read_yaml_mapping
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
    path: str  # absolute, relative to the task file's folder, or relative to the data root
    preprocess: str | None = None  # a registered document transform (loaders.PREPROCESSORS)
    prompt: str  # Python format string over the document's fields
    # Which documents are scored (benchmarks/loaders.py decides, in one place):
    eval_pool: int | None = Field(None, gt=0)
    """The evaluation set: the first N documents of `path` (None: all). Evaluation only ever scores these;
    training use of the task (a mixture component) only ever sees documents outside them."""
    train_source: str | None = None
    """Where training use of the task reads instead (then the whole evaluation set is held out): a file
    like `path` (same loader), or for the mmlu loader a split folder (e.g. `val`)."""
    limit: int | None = Field(None, gt=0)
    """Score the first N documents of the evaluation set (as lm-evaluation-harness's --limit)."""
    sample: int | None = Field(None, gt=0)
    """Or score a seeded sample of N documents of the evaluation set (ignored when `limit` is set)."""
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

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> TaskSpec:
        if self.kind == "multiple_choice" and self.label_field is None:
            raise ValueError("a multiple_choice task needs label_field")
        if self.kind == "multiple_choice" and not (self.choices or self.choice_fields):
            raise ValueError("a multiple_choice task needs choices or choice_fields")
        if self.loader == "parallel" and self.source_file is None:
            raise ValueError("the parallel loader needs source_file")
        return self

    @property
    def label_key(self) -> str:
        if self.label_field is None:  # excluded by the validator for multiple choice
            raise ConfigError(f"task {self.name} has no label_field")
        return self.label_field


def _load_spec(path: Path) -> TaskSpec:
    try:
        return TaskSpec.model_validate(read_yaml_mapping(path, "task file"))
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"task file {path}: {bad}") from None


def available_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TASK_DIR.glob("*.yaml"))}


def _anchor(spec: TaskSpec, folder: Path) -> TaskSpec:
    """A user's task file may name its data relative to itself; such paths are made absolute."""
    update = {}
    for key in ("path", "train_source"):
        value = getattr(spec, key)
        if value and not Path(value).is_absolute() and (folder / value).exists():
            update[key] = str((folder / value).resolve())
    return spec.model_copy(update=update)


def get_task(name_or_path: str, **overrides) -> TaskSpec:
    """A task by registry name or YAML path; keyword overrides replace spec fields (None: keep).

    `limit` (first N) and `sample` (seeded N) are alternatives: overriding one clears the other."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"benchmark task file not found: {path}")
        spec = _anchor(_load_spec(path), path.parent)
    else:
        tasks = available_tasks()
        if name_or_path not in tasks:
            raise ConfigError(
                f"unknown benchmark task {name_or_path!r}; tasks: {', '.join(tasks)} (or the path of a task .yaml file)"
            )
        spec = _load_spec(tasks[name_or_path])
    update = {k: v for k, v in overrides.items() if v is not None}
    if update.get("limit"):
        update["sample"] = None
    elif update.get("sample"):
        update["limit"] = None
    return spec.model_copy(update=update)
