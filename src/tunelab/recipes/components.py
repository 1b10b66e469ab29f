"""Reusable pieces the recipes are assembled from: a session on a config's base model (`open_session`) or on a
run's trained model (`open_run`), data, templates, artefacts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tunelab.config.schema import ExperimentConfig
from tunelab.data.encoding import PromptEncoder
from tunelab.data.records import Example, first_n, seeded_sample
from tunelab.data.sources import load_split
from tunelab.data.templates import TemplateSet
from tunelab.config.loader import load_config
from tunelab.errors import RunDirError, TrainingError
from tunelab.inference.adapters import ADAPTER_META, attach_adapter
from tunelab.io import atomic_write_json, staged_dir
from tunelab.methods import Method, ModelContext, get_method
from tunelab.modeling import Model
from tunelab.models.loading import LoadedModel, load_model, pick_device
from tunelab.runs import RunDir
from tunelab.training.finite import non_finite_names

if TYPE_CHECKING:
    from tunelab.training.regularization import AnchoredPenalty


@dataclass
class Session:
    """A loaded base model with the templates and prompt encoder of one experiment."""

    cfg: ExperimentConfig
    method: Method
    loaded: LoadedModel
    templates: TemplateSet
    encoder: PromptEncoder
    device: torch.device

    @property
    def model(self) -> Model:
        return self.loaded.model

    @property
    def context(self) -> ModelContext:
        return ModelContext(
            arch=self.loaded.arch, model_path=self.loaded.source.path, instruction=self.templates.eval.instruction
        )


def open_session(cfg: ExperimentConfig, quantize_for_method: bool = True) -> Session:
    method = get_method(cfg.method.name)
    device = pick_device(cfg.training.device)
    extra = method.load_kwargs(cfg.method) if quantize_for_method else {}
    loaded = load_model(cfg.model, device=device, extra_kwargs=extra)
    templates = TemplateSet.from_config(cfg.template)
    encoder = PromptEncoder.from_config(cfg, loaded.tokenizer, loaded.arch, loaded.use_chat_template)
    return Session(cfg=cfg, method=method, loaded=loaded, templates=templates, encoder=encoder, device=device)


def open_run(run_path: str | Path) -> Session:
    """A session whose model is the run's trained artefact (base + adapter, or the full model)."""
    run = RunDir.open(run_path)
    cfg = load_config(run.config_path)
    if run.adapter_dir.is_dir():
        session = open_session(cfg)
        session.loaded.model = attach_adapter(session.model, run.adapter_dir, cfg.model.name)
        return session
    if run.model_dir.is_dir():
        full_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": str(run.model_dir)})})
        return open_session(full_cfg, quantize_for_method=False)
    raise RunDirError(f"{run.path} holds no trained artefact (adapter/ or model/); did training finish?")


def load_eval_examples(
    cfg: ExperimentConfig, split: str | None = None, max_samples: int | None = None
) -> list[Example]:
    return first_n(load_split(cfg.data, split or cfg.evaluation.split), max_samples or cfg.evaluation.max_samples)


def save_artefact(
    model: Model,
    tokenizer,
    cfg: ExperimentConfig,
    is_peft: bool,
    run_path: Path,
    base_path: str,
    state_dict: dict[str, torch.Tensor] | None = None,
    base_fingerprint: dict | None = None,
) -> Path:
    """Save the trained adapter (PEFT format) or full model, written to a temp folder and renamed.
    `state_dict`: whole tensors gathered from a sharded (FSDP) model, saved instead of its own slices.
    `base_fingerprint`: the base model's identity (inference.adapters.base_fingerprint), kept beside an adapter."""
    final = run_path / ("adapter" if is_peft else "model")
    named = (
        state_dict.items()
        if state_dict is not None
        else ((n, p) for n, p in model.named_parameters() if p.requires_grad or not is_peft)
    )
    bad = non_finite_names(named)
    if bad:
        raise TrainingError(f"refusing to save {final}: non-finite weights in {', '.join(bad)}")
    with staged_dir(final, "the trained artefact", "checkpoints already written are intact") as stage:
        model.save_pretrained(stage, **({"state_dict": state_dict} if state_dict is not None else {}))
        if is_peft:
            atomic_write_json(
                stage / ADAPTER_META,
                {
                    "base_model": cfg.model.name,
                    "base_model_path": base_path,
                    "method": cfg.method.name,
                    "task": cfg.template.task,
                    "dataset": cfg.data.source,
                    "base_fingerprint": base_fingerprint,
                },
            )
        else:
            tokenizer.save_pretrained(stage)
    return final


def training_examples(session: Session) -> tuple[list[Example], list, dict]:
    """The training examples and their templates: the target data, or a multi-task mixture around it."""
    from tunelab.data.mixture import Component, load_component, sample_mixture

    cfg = session.cfg
    target = seeded_sample(load_split(cfg.data, cfg.data.train_split), cfg.data.max_train_samples, cfg.seed)
    mixture = cfg.data.mixture
    if mixture is None or not mixture.components:
        return target, session.templates.for_training(len(target), cfg.seed), {}
    components = [
        Component(f"{cfg.data.source}:{cfg.data.train_split}", target, session.templates),
        *(load_component(c) for c in mixture.components),
    ]
    examples, templates, stats = sample_mixture(components, mixture, mixture.total or len(target), cfg.seed)
    return examples, templates, stats


def build_regularizer(session: Session, model: torch.nn.Module) -> AnchoredPenalty | None:
    """L2-SP or EWC anchored at the weights the method starts training from (None when off)."""
    from torch.utils.data import DataLoader

    from tunelab.config.schema import DataConfig
    from tunelab.data.collate import TrainCollator, as_dataset
    from tunelab.data.encoding import encode_training_set
    from tunelab.training.regularization import AnchoredPenalty, estimate_fisher

    reg = session.cfg.training.regularization
    if reg.kind == "none":
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    if reg.kind == "l2sp":
        return AnchoredPenalty(params, reg.strength)
    general = first_n(load_split(DataConfig(source=reg.fisher_source), reg.fisher_split), reg.fisher_samples)
    encoded = encode_training_set(session.encoder, general, [session.templates.eval] * len(general))
    loader: DataLoader = DataLoader(
        as_dataset(encoded),
        batch_size=session.cfg.training.batch_size,
        collate_fn=TrainCollator(session.loaded.tokenizer.pad_token_id, session.loaded.arch),
    )
    fisher = estimate_fisher(model, loader, session.loaded.arch)
    return AnchoredPenalty(params, reg.strength, fisher)
