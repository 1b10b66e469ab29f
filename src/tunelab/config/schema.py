"""The experiment config: one YAML file, validated here. Unknown keys are errors."""

from __future__ import annotations

from typing import Any, Literal

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
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"] = "auto"
    """transformers' attention kernel; `auto` keeps its default (sdpa). Measured on a 2-core CPU in bf16
    (bench/results/methods_attention.md): `eager` made a LoRA step 0.77x as long but a full fine-tuning
    step 1.2x, and keeps each layer's attention matrix for backward (+0.9-1.2 GiB at 4 x 339 tokens)."""
    revision: str | None = None
    trust_remote_code: bool = False


class MixtureComponent(Strict):
    """One more training source mixed with the target data (FLAN-style multi-task or replay)."""

    source: str | None = None
    """A built-in dataset, `files`, or `hub:<id>` (as data.source)."""
    task: str | None = None
    """Or a benchmark task (`tunelab tasks`): its documents become instruction examples (prompt -> answer);
    the examples that task's evaluation uses are left out."""
    split: str = "train"
    path: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    input_column: str = "dialogue"
    target_columns: list[str] = Field(default_factory=lambda: ["summary"])
    template: str = "dialogue_summarization"
    max_examples: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_origin(self) -> MixtureComponent:
        if (self.source is None) == (self.task is None):
            raise ValueError("a mixture component needs exactly one of 'source' or 'task'")
        return self


class MixtureConfig(Strict):
    components: list[MixtureComponent] = Field(default_factory=list)
    strategy: Literal["proportional", "temperature"] = "proportional"
    """`proportional`: rate ~ min(size, cap) (examples-proportional with a cap, as in FLAN/T5);
    `temperature`: rate ~ size^(1/temperature)."""
    cap: int = Field(3000, gt=0)
    temperature: float = Field(2.0, gt=0)
    total: int | None = Field(None, gt=0)
    """Training examples drawn from the mixture (default: as many as the target data has)."""


class SplitConfig(Strict):
    validation: float = Field(0.0, ge=0, lt=1)
    test: float = Field(0.0, ge=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitConfig:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must leave some training data (sum < 1)")
        return self


class DataConfig(Strict):
    source: str = "dialogsum"
    """A built-in dataset name (`dialogsum`, `samsum`), `files` (see `files`), or `hub:<dataset id>`."""
    path: str | None = None
    """Built-in datasets: the local folder to read (default: $TUNELAB_DATA_DIR/<name>)."""
    files: dict[str, str] = Field(default_factory=dict)
    """For `source: files`: split name -> path of a .jsonl/.json/.csv/.parquet file."""
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = "auto"
    """The file type (from the extension when `auto`)."""
    layout: Literal["auto", "columns", "alpaca", "sharegpt", "messages"] = "auto"
    """How a record is laid out (`auto`: detected from the first record): `columns` (input_column ->
    target_columns), `alpaca` (instruction, optional input, output), `sharegpt` (conversations of from/value),
    `messages` (OpenAI/TRL chat: role/content, optional weight). See data/layouts.py."""
    roles: dict[str, str] = Field(default_factory=dict)
    """Chat layouts: extra role names mapped to system/user/assistant (e.g. {bot: assistant})."""
    train_on: Literal["all_assistant", "last_assistant"] = "all_assistant"
    """Chat records: the loss covers every assistant turn (default) or only the last one; never user/system."""
    split: SplitConfig | None = None
    """Cut validation and test sets out of the training file (deterministic, recorded in the run)."""
    hub_config: str | None = None
    """`hub:` datasets: the dataset's configuration name."""
    hub_splits: dict[str, str] = Field(default_factory=dict)
    """`hub:` datasets: tunelab split name -> the hub's split name (e.g. {validation: dev})."""
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
    mixture: MixtureConfig | None = None
    """Mix other tasks into training (multi-task fine-tuning, replay of general instruction data)."""

    @model_validator(mode="after")
    def _files_need_paths(self) -> DataConfig:
        if self.source == "files" and not self.files:
            raise ValueError("data.source is 'files' but data.files names no split (e.g. {train: train.jsonl})")
        return self


class RegularizationConfig(Strict):
    kind: Literal["none", "l2sp", "ewc"] = "none"
    strength: float = Field(0.0, ge=0)
    fisher_source: str = "samsum"
    """EWC: built-in dataset whose examples estimate the Fisher information (general, non-target data)."""
    fisher_split: str = "validation"
    fisher_samples: int = Field(64, gt=0)

    def record(self) -> dict[str, Any]:
        """What a run's record says of its regularization: the settings its kind uses (no Fisher for L2-SP)."""
        if self.kind == "none":
            return {"kind": "none"}
        return self.model_dump(include=None if self.kind == "ewc" else {"kind", "strength"})


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
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute activations in the backward pass: much less activation memory for ~30% more compute. `auto`
    turns it on when a micro-batch's activations would outweigh the training state (weights, gradients,
    optimizer) and exceed 512 MiB (training/memory.py: `checkpointing_pays`); metrics.json records the choice."""
    compile: bool | Literal["auto"] = "auto"
    """Train through `torch.compile`d decoder blocks (regional compilation: each repeated block compiled once, the
    model itself left as it is for evaluation and saving): ~0.54-0.71x the step time and ~0.7-0.8x the peak memory
    of the demo's training on a CPU (bench/results/compile.md), after ~10-30 s of compilation; needs a C++ compiler
    on a CPU. `auto` turns it on for single-process CPU training of models >= 50M parameters and >= 20 optimizer
    steps where it works (training/compiling.py); `true` where it cannot work is an error naming why.
    metrics.json records the choice."""
    frozen_weights: Literal["auto", "fp32"] = "auto"
    """How a PEFT method's frozen linear weights are stored while it trains. `auto`: in the autocast precision
    (bf16/fp16) when one process trains under autocast without generating during training (eval_generate_every:
    0). Autocast rounds them for every matmul anyway, so the losses are the same to the last bit, and the base
    takes half the memory (SmolLM2-135M LoRA: bench/results/memory_levers.md); the fp32 values are read back from
    the base model's safetensors checkpoint when training ends, so evaluation and benchmarks see the base as
    loaded. QLoRA stores its whole frozen base so (embeddings and norms too, as its recipe loads the model): the
    residual stream then runs in bf16, so its losses differ by rounding. `fp32`: as loaded. metrics.json records
    what was used (`training.frozen_weights`)."""
    matmul_attention: bool = False
    """Causal self-attention through two batched matrix products per layer instead of sdpa's kernel while a
    causal model trains (training/attention.py): the arithmetic of transformers' `eager` attention (scores
    rounded to the autocast precision, softmax in fp32). On a 2-core CPU without AMX, SmolLM2-135M's compiled bf16
    step takes 0.93x the time at ~1.2x the peak memory (bench/results/attention.md), so it is off by default.
    Evaluation and generation keep the model's attention; metrics.json records the choice."""
    fast_dropout: bool | Literal["auto"] = "auto"
    """Dropout masks from 16-bit random draws, four per 64-bit word of torch's generator, instead of one draw per
    element (training/dropout.py): the same Bernoulli masks in distribution (the rate realised to 1.5e-5) at a
    fraction of the cost, for the model's Dropout modules (T5's, LoRA's) and its attention dropout through sdpa.
    `auto`: on a CPU, where the draws are what dropout costs (bench/results/dropout.md). metrics.json records the
    choice."""
    padding_free: bool | Literal["auto"] = "auto"
    """Causal batches without padding: a batch's examples end to end in one row, positions restarting at 0 for
    each, attending example by example through the model's own attention (training/packing.py). The same examples,
    losses and gradients as padded batches (up to summation order), without the padding's matrix products and
    attention. `auto`: on for single-process training of causal models that attend as plain causal
    self-attention through sdpa (Llama, Mistral, Qwen2/3) with a method that keeps the input sequence (not prompt,
    p- or prefix tuning); `true` where it cannot apply is an error naming why. metrics.json records the choice."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding), in seeded random batch order."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision; `auto`: bf16 where the hardware has native bf16 (GPU, or CPU with
    AVX512-BF16/AMX), else fp32. Weights stay fp32."""
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    eval_generate_every: int = Field(0, ge=0)
    """Generate on the first `eval_generate_samples` validation examples every N optimizer steps and score
    ROUGE (beside the validation loss); 0: off."""
    eval_generate_samples: int = Field(32, gt=0)
    select_by: Literal["last", "eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum"] = "last"
    """Which weights the run keeps: the last step's, or those of the evaluation with the best validation loss
    (needs eval_every) or ROUGE F1 (needs eval_generate_every); the record names the step."""
    patience: int | None = Field(None, gt=0)
    """Early stopping: stop after this many evaluations of `select_by` without improvement."""

    @model_validator(mode="after")
    def _selection_is_measured(self) -> TrainingConfig:
        if self.select_by == "eval_loss" and not self.eval_every:
            raise ValueError("select_by: eval_loss needs eval_every > 0 (how often the validation loss is measured)")
        if self.select_by.startswith("rouge") and not self.eval_generate_every:
            raise ValueError(f"select_by: {self.select_by} needs eval_generate_every > 0")
        if self.patience and self.select_by == "last":
            raise ValueError("patience needs select_by (the validation metric that must improve)")
        return self


class EvaluationConfig(Strict):
    split: str = "test"
    max_samples: int | None = Field(50, gt=0)
    batch_size: int = Field(16, gt=0)
    max_new_tokens: int = Field(96, gt=0)
    num_beams: int = Field(1, gt=0)
    metrics: list[Literal["rouge", "bleu"]] = ["rouge", "bleu"]  # pydantic copies mutable defaults
    before: bool = True
    """Also evaluate the base model before training, for a before/after table."""
    bootstrap_samples: int = Field(1000, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision for generation (as training.precision)."""


class BenchmarksConfig(Strict):
    tasks: list[str] = Field(default_factory=list)
    """Benchmark tasks (`tunelab tasks list`) run before and after training to measure forgetting."""
    limit: int | None = Field(None, gt=0)
    """Score the first N documents of each task's evaluation set (as lm-evaluation-harness's --limit)."""
    sample: int | None = Field(None, gt=0)
    """Or a seeded sample of N documents per task (the task's own seed unless `seed` is set)."""
    task_sample: dict[str, int] = Field(default_factory=dict)
    """Per task, a seeded sample size replacing `limit`/`sample` for that task, e.g. {mmlu: 1000, samsum: 200}."""
    seed: int | None = None
    num_fewshot: int | None = Field(None, ge=0)
    batch_size: int = Field(8, gt=0)
    bootstrap_samples: int = Field(1000, ge=0)

    @model_validator(mode="after")
    def _one_subset(self) -> BenchmarksConfig:
        if self.limit and self.sample:
            raise ValueError("give either limit (first N documents) or sample (seeded N documents), not both")
        return self


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

    @model_validator(mode="after")
    def _validation_split_for_selection(self) -> ExperimentConfig:
        t = self.training
        if (t.eval_generate_every or t.select_by != "last") and not self.data.eval_split:
            raise ValueError(
                "training.eval_generate_every and select_by measure on the validation split, but "
                "data.eval_split is null"
            )
        return self
