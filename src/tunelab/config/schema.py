"""The experiment config: one YAML file, validated here. Unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tunelab.methods import MethodConfig
from tunelab.methods.lora import LoraMethodConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    name: str = "smollm2-135m-instruct"
    """A built-in alias (`tunelab models list`), a Hugging Face hub id, a local folder, or a `.gguf` file."""
    arch: Literal["auto", "causal", "seq2seq"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    chat_template: Literal["auto", "on", "off"] = "auto"
    """`auto`: wrap prompts in the tokenizer's chat template when the model has one (instruct models)."""
    revision: str | None = None
    trust_remote_code: bool = False


class DataConfig(Strict):
    source: str = "dialogsum"
    """A built-in dataset name (`dialogsum`, `samsum`), `files` (see `files`), or `hub:<dataset id>`."""
    path: str | None = None
    """Built-in datasets: the local folder to read (default: $TUNELAB_DATA_DIR/<name>)."""
    files: dict[str, str] = Field(default_factory=dict)
    """For `source: files`: split name -> path of a .jsonl/.json/.csv/.parquet file."""
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = "auto"
    id_column: str | None = None
    input_column: str = "dialogue"
    target_columns: list[str] = Field(default_factory=lambda: ["summary"])
    """One or more reference columns; several give multi-reference evaluation."""
    train_split: str = "train"
    eval_split: str | None = "validation"
    test_split: str = "test"
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(64, gt=0)
    """Examples used for the periodic validation loss."""

    @model_validator(mode="after")
    def _files_need_paths(self) -> DataConfig:
        if self.source == "files" and not self.files:
            raise ValueError("data.source is 'files' but data.files names no split (e.g. {train: train.jsonl})")
        return self


class TemplateConfig(Strict):
    task: str = "dialogue_summarization"
    """A template set of `tunelab templates list`."""
    train_phrasings: Literal["all"] | list[int] = "all"
    """Which phrasings training samples from (one per example, seeded)."""
    eval_phrasing: int = 0
    custom: str | None = None
    """Your own prompt with an `{input}` placeholder; replaces the task's phrasings."""
    max_input_tokens: int = Field(512, gt=0)
    max_target_tokens: int = Field(128, gt=0)


class TrainingConfig(Strict):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    """Optimizer steps; overrides `epochs` when set."""
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float | None = 1.0
    eval_every: int = Field(0, ge=0)
    """Validation loss every N optimizer steps (0: only at the end)."""
    save_every: int = Field(0, ge=0)
    """Checkpoint every N optimizer steps (0: only the final artefact)."""
    log_every: int = Field(10, gt=0)
    group_by_length: bool = True
    """Batch examples of similar length together (less padding), in seeded random batch order."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """`auto`: bf16 on a GPU that supports it, else fp32."""


class EvaluationConfig(Strict):
    split: str = "test"
    max_samples: int | None = Field(50, gt=0)
    batch_size: int = Field(16, gt=0)
    max_new_tokens: int = Field(96, gt=0)
    num_beams: int = Field(1, gt=0)
    metrics: list[Literal["rouge", "bleu"]] = Field(default_factory=lambda: ["rouge", "bleu"])
    before: bool = True
    """Also evaluate the base model before training, for a before/after table."""
    bootstrap_samples: int = Field(1000, ge=0)


class BenchmarksConfig(Strict):
    tasks: list[str] = Field(default_factory=list)
    """Benchmark tasks (`tunelab tasks list`) run before and after training to measure forgetting."""
    limit: int | None = Field(None, gt=0)
    """Examples per task (overrides each task's own limit)."""
    num_fewshot: int | None = Field(None, ge=0)
    batch_size: int = Field(8, gt=0)
    bootstrap_samples: int = Field(1000, ge=0)


class ExperimentConfig(Strict):
    name: str = "experiment"
    seed: int = 42
    output_dir: str = "runs"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    template: TemplateConfig = Field(default_factory=TemplateConfig)
    method: MethodConfig = Field(default_factory=LoraMethodConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    benchmarks: BenchmarksConfig = Field(default_factory=BenchmarksConfig)
