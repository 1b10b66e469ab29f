"""The fine-tuning recipe: evaluate the base model, train with the configured method, evaluate again.

Reads like the README's description of a run; every step is a component from `components.py` or a
function of the data, methods, training and evaluation packages.
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import PartialState
from accelerate.utils import broadcast_object_list, set_seed

from tunelab.benchmarks.leakage import leakage_report
from tunelab.config.schema import ExperimentConfig
from tunelab.data.encoding import Encoded, encode_training_set
from tunelab.data.sources import describe_split, load_split
from tunelab.environment import describe_environment
from tunelab.errors import TunelabError
from tunelab.evaluation.costs import full_checkpoint_bytes, parameter_counts, weight_file_bytes
from tunelab.evaluation.metrics import rouge_protocol
from tunelab.evaluation.summarization import evaluate_summaries, score_prompts
from tunelab.inference.adapters import base_fingerprint
from tunelab.methods.prompt_tuning import learned_prompt
from tunelab.models.loading import pick_device
from tunelab.recipes.benchmarking import benchmark_session, target_gain, task_specs, write_forgetting
from tunelab.recipes.components import (
    Session,
    build_regularizer,
    load_eval_examples,
    open_session,
    save_artefact,
    training_examples,
)
from tunelab.recipes.preflight import check_experiment
from tunelab.reporting.tables import before_after_table, cost_table
from tunelab.runs import RunDir
from tunelab.training.checkpoint import latest_checkpoint, list_checkpoints, remove_incomplete
from tunelab.training.distributed import is_sharded, whole_model_state, whole_trainable_state
from tunelab.training.loop import train_model
from tunelab.training.memory import PhaseMemory

if TYPE_CHECKING:
    import torch


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict[str, Any]


def finetune(
    cfg: ExperimentConfig,
    run_path: str | Path | None = None,
    show_progress: bool = True,
    echo=print,
    base_benchmarks: dict[str, Any] | None = None,
    resume: bool = False,
) -> FinetuneResult:
    """Evaluate the base, train with the configured method, evaluate again; see the module docstring.

    `base_benchmarks`: the base model's suite results when already known (a comparison shares them
    between arms on the same base), instead of running the suite again before training.
    `resume`: continue an unfinished run directory from its latest checkpoint (or start it)."""
    # one process, or one of several under torchrun / accelerate launch (gloo on CPU, nccl on GPU)
    dist = PartialState(cpu=pick_device(cfg.training.device).type == "cpu")
    main = dist.is_main_process
    path_and_state: list[Any] = [None, False]
    if main:  # only the main process creates, writes and reports; the others train and generate
        target = Path(run_path) if run_path else Path(cfg.output_dir) / cfg.name
        if not target.exists():
            check_experiment(cfg, target)  # before the run directory exists: a bad input leaves nothing behind
        run, resuming = RunDir.create_or_resume(cfg, run_path) if resume else (RunDir.create(cfg, run_path), False)
        path_and_state = [str(run.path), resuming]
    if dist.num_processes > 1:
        broadcast_object_list(path_and_state)
        run, resuming = RunDir(Path(path_and_state[0])), bool(path_and_state[1])
    try:
        with run.locked() if main else nullcontext():
            return _train_and_evaluate(cfg, run, resuming, dist, show_progress, echo, base_benchmarks)
    except TunelabError:
        if main and not resuming and not list_checkpoints(run.checkpoint_dir):
            shutil.rmtree(run.path, ignore_errors=True)  # nothing to resume: the corrected config may rerun
        raise


@dataclass
class RunState:
    """What the steps of one fine-tuning run share."""

    cfg: ExperimentConfig
    run: RunDir
    resuming: bool
    dist: PartialState
    show_progress: bool
    echo: Any
    session: Session
    eval_examples: list
    memory: PhaseMemory
    metrics: dict[str, Any]
    latest: Path | None = None  # the checkpoint a resumed run continues from
    bench_before: dict[str, Any] | None = None
    train_truncation: dict[str, int] = field(default_factory=dict)
    mixture_stats: dict[str, Any] | None = None  # multi-task mixtures: what each component contributed
    train_targets: list[str] = field(default_factory=list)  # the training completions (soft-prompt analysis)
    model: Any = None  # the model being trained (the method's wrapper around the base)

    @property
    def main(self) -> bool:
        return self.dist.is_main_process


def _train_and_evaluate(
    cfg: ExperimentConfig,
    run: RunDir,
    resuming: bool,
    dist: PartialState,
    show_progress: bool,
    echo,
    base_benchmarks: dict[str, Any] | None,
) -> FinetuneResult:
    state = _open(cfg, run, resuming, dist, show_progress, echo)
    _evaluate_before(state)
    _benchmarks_before(state, base_benchmarks)
    train_set, eval_set = _training_data(state)
    _train(state, train_set, eval_set)
    after = _evaluate_after(state)
    if not state.main:
        if is_sharded(state.model) and cfg.benchmarks.tasks:
            benchmark_session(state.session, show_progress=False)  # under FSDP every forward pass is collective
        dist.wait_for_everyone()
        return FinetuneResult(run.path, state.metrics)
    run.write_predictions(after.predictions)
    _benchmarks_after(state)
    _finish(state)
    return FinetuneResult(run.path, state.metrics)


def _open(
    cfg: ExperimentConfig, run: RunDir, resuming: bool, dist: PartialState, show_progress: bool, echo
) -> RunState:
    """Load the base model and the evaluation examples; start the metrics record."""
    if dist.is_main_process:
        remove_incomplete(run.checkpoint_dir)
    latest = latest_checkpoint(run.checkpoint_dir) if resuming else None
    memory = PhaseMemory(pick_device(cfg.training.device))  # peak memory of each phase, into metrics.json
    set_seed(cfg.seed)
    session = open_session(cfg)
    eval_examples = load_eval_examples(cfg)
    memory.end("load")
    metrics: dict[str, Any] = {
        "name": cfg.name,
        "model": cfg.model.name,
        "arch": session.loaded.arch,
        "method": cfg.method.name,
        "dataset": cfg.data.source,
        "evaluation_split": cfg.evaluation.split,
        "chat_template": session.loaded.use_chat_template,
        "protocol": {
            "rouge": rouge_protocol(),
            "decoding": "greedy" if cfg.evaluation.num_beams == 1 else f"beam search, {cfg.evaluation.num_beams} beams",
            "max_new_tokens": cfg.evaluation.max_new_tokens,
            "eval_template": session.templates.eval.prompt,
        },
    }
    if (carved := describe_split(cfg.data)) is not None:
        metrics["data_split"] = carved
    return RunState(cfg, run, resuming, dist, show_progress, echo, session, eval_examples, memory, metrics, latest)


def _evaluate(state: RunState, desc: str):
    s = state.session
    return evaluate_summaries(
        s.model,
        s.loaded.tokenizer,
        s.loaded.arch,
        s.encoder,
        s.templates.eval,
        state.eval_examples,
        state.cfg.evaluation,
        state.cfg.seed,
        desc,
    )


def _evaluate_before(state: RunState) -> None:
    """The base model's scores (kept from the first attempt when a run is resumed)."""
    earlier = state.run.read_json("metrics.json") if state.resuming else None
    if earlier and "before" in earlier:
        state.metrics["before"] = earlier["before"]
        if state.echo:
            state.echo(
                f"resuming {state.run.path}"
                + (f" from {state.latest.name}" if state.latest else " (no checkpoint yet)")
            )
    elif state.cfg.evaluation.before:
        before = _evaluate(state, "eval before")
        state.metrics["before"] = before.metrics
        if state.main:
            state.run.write_predictions(before.predictions, "predictions_before.jsonl")
            state.run.write_metrics(state.metrics)
        state.memory.end("evaluate_before")


def _benchmarks_before(state: RunState, base_benchmarks: dict[str, Any] | None) -> None:
    if not state.cfg.benchmarks.tasks:
        return
    if state.main:
        state.bench_before = (
            (state.run.read_json("benchmarks_before.json") if state.resuming else None)
            or base_benchmarks
            or benchmark_session(state.session, show_progress=state.show_progress)
        )
        state.run.write_metrics(state.bench_before, "benchmarks_before.json")
    state.dist.wait_for_everyone()
    state.memory.end("benchmarks_before")


def _training_data(state: RunState) -> tuple[list[Encoded], list[Encoded] | None]:
    """Encoded training (and validation-loss) examples; the leakage record against the evaluation sets."""
    cfg, session = state.cfg, state.session
    train_examples, train_templates, state.mixture_stats = training_examples(session)
    state.train_targets = [e.target for e in train_examples]
    state.metrics["leakage"] = leakage_report(
        train_examples, task_specs(cfg.benchmarks), f"{cfg.data.source}:{cfg.evaluation.split}", state.eval_examples
    )
    session.encoder.stats.reset()
    train_set = encode_training_set(session.encoder, train_examples, train_templates)
    state.train_truncation = session.encoder.stats.as_dict()
    eval_set = None
    if cfg.data.eval_split:
        val = load_split(cfg.data, cfg.data.eval_split)[: cfg.data.max_eval_samples]
        eval_set = encode_training_set(session.encoder, val, [session.templates.eval] * len(val))
    return train_set, eval_set


def _train(state: RunState, train_set: list[Encoded], eval_set: list[Encoded] | None) -> None:
    """Apply the method, train, save the artefact (adapter/ or model/) and record the cost."""
    cfg, session, run = state.cfg, state.session, state.run
    set_seed(cfg.seed)
    fingerprint = base_fingerprint(session.model)  # before any sharding: identifies the base of the adapter
    model = session.method.prepare(session.model, cfg.method, session.context)
    session.loaded.model = state.model = model
    counts = parameter_counts(model)
    initial_prompt = learned_prompt(model)  # prompt tuning: where the virtual tokens start
    training = train_model(
        model,
        session.loaded.tokenizer,
        session.loaded.arch,
        train_set,
        eval_set,
        cfg.training,
        seed=cfg.seed,
        device=session.device,
        log_dir=run.path / "tensorboard",
        checkpoint_dir=run.checkpoint_dir,
        resume_from=state.latest,
        regularizer=build_regularizer(session, model),
        show_progress=state.show_progress,
        validate=_generation_validator(state),
        base_checkpoint=session.loaded.source.path,
    )
    artefact = run.path / ("adapter" if session.method.is_peft else "model")
    sharded = is_sharded(model)  # FSDP: gather whole tensors on every process, the main one writes them
    whole = (whole_trainable_state(model) if session.method.is_peft else whole_model_state(model)) if sharded else None
    if state.main:
        save_artefact(
            model,
            session.loaded.tokenizer,
            cfg,
            session.method.is_peft,
            run.path,
            session.loaded.source.path,
            state_dict=whole,
            base_fingerprint=fingerprint,
        )
    state.dist.wait_for_everyone()
    if initial_prompt is not None:
        state.metrics["soft_prompt"] = _soft_prompt_analysis(state, model, initial_prompt)
    state.memory.end("train")
    state.metrics["training"] = {
        **training.as_dict(),
        "examples": len(train_set),
        "truncation": state.train_truncation,
        **({"mixture": state.mixture_stats} if state.mixture_stats else {}),
        "regularization": cfg.training.regularization.record(),
        **({"resumed_from": state.latest.name} if state.latest is not None else {}),
    }
    state.metrics["cost"] = {
        **counts,
        "artefact": artefact.name,
        "artefact_bytes": weight_file_bytes(artefact),
        "full_checkpoint_bytes": full_checkpoint_bytes(model, counts, session.method.is_peft),
    }


def _generation_validator(state: RunState):
    """ROUGE F1 of generations on the first `eval_generate_samples` validation examples (training.eval_generate_every),
    prompts encoded once; None when off."""
    cfg, session = state.cfg, state.session
    if not cfg.training.eval_generate_every:
        return None
    split = cfg.data.eval_split or "validation"  # the config's validator requires one here
    examples = load_split(cfg.data, split)[: cfg.training.eval_generate_samples]
    prompts = [session.encoder.encode_for_generation(session.templates.eval, ex) for ex in examples]
    evaluation = cfg.evaluation.model_copy(update={"bootstrap_samples": 0, "metrics": ["rouge"]})

    def validate(model) -> dict[str, float]:
        result = score_prompts(
            model,
            session.loaded.tokenizer,
            session.loaded.arch,
            prompts,
            examples,
            evaluation,
            cfg.seed,
            "eval generate",
        )
        return {name: scores["f1"] for name, scores in result.metrics["rouge"].items()}

    return validate


def _evaluate_after(state: RunState):
    after = _evaluate(state, "eval after")
    state.metrics["after"] = after.metrics
    state.memory.end("evaluate_after")
    state.metrics["environment"] = describe_environment(
        state.session.device, state.cfg.evaluation.precision, state.metrics["training"]["precision"]
    )
    return after


def _benchmarks_after(state: RunState) -> None:
    """The suite on the trained model; the change against before, with paired CIs (forgetting)."""
    if state.bench_before is None:
        return
    cfg, metrics = state.cfg, state.metrics
    bench_after = benchmark_session(state.session, show_progress=state.show_progress)
    report = write_forgetting(
        state.run.path,
        state.bench_before,
        bench_after,
        target_gain(metrics),
        cfg.benchmarks.bootstrap_samples,
        cfg.seed,
    )
    metrics["forgetting"] = {
        name: {k: t[k] for k in ("metric", "before", "after", "delta", "ci95_low", "ci95_high", "significant")}
        for name, t in report["tasks"].items()
    }
    metrics["forgetting_mean_delta"] = report["mean_delta"]
    state.memory.end("benchmarks_after")


def _soft_prompt_analysis(state: RunState, model, initial: torch.Tensor) -> dict[str, Any]:
    """Nearest vocabulary tokens of the learned virtual tokens against the task's words, and against chance."""
    from tunelab.evaluation.soft_prompt import soft_prompt_record, task_words

    learned = learned_prompt(model)
    assert learned is not None
    words = task_words(state.session.templates.eval.instruction, state.train_targets)
    vocab = model.get_base_model().get_input_embeddings().weight.detach()
    return soft_prompt_record(learned, initial, vocab, state.session.loaded.tokenizer, words, seed=state.cfg.seed)


def _finish(state: RunState) -> None:
    """Write metrics.json, mark the run complete, print the summary."""
    cfg, metrics, run = state.cfg, state.metrics, state.run
    metrics["memory_phases"] = state.memory.as_dict()
    run.write_metrics(metrics)
    run.mark_complete()
    state.dist.wait_for_everyone()
    if not state.echo:
        return
    echo = state.echo
    echo(
        f"\nrun: {run.path}  ({cfg.method.name} on {cfg.model.name}, {len(state.eval_examples)} "
        f"{cfg.evaluation.split} examples)\n"
    )
    echo(before_after_table(metrics.get("before"), metrics["after"]))
    echo("")
    echo(cost_table(metrics["cost"], metrics["training"]))
    if "forgetting" in metrics:
        echo("\nforgetting (benchmark suite, after - before):\n")
        echo((run.path / "forgetting.md").read_text())
    trunc = metrics["after"]["truncation"]
    train_truncation = state.train_truncation
    if trunc["inputs_truncated"] or train_truncation["inputs_truncated"]:
        echo(
            f"\nnote: inputs cut at {cfg.template.max_input_tokens} tokens: "
            f"{train_truncation['inputs_truncated']}/{train_truncation['examples']} training, "
            f"{trunc['inputs_truncated']}/{trunc['examples']} evaluation examples"
        )
