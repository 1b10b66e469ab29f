"""The comparison config: one base experiment and a list of arms, each a partial experiment that is
deep-merged into the base (so an arm states only what differs: its method, learning rate, mixture...).

An arm may also name a `sweep` (config keys and the values to try, e.g. `{training.lr: [1e-4, 3e-4]}`): its
values are chosen on the validation split before the arm is trained (recipes/sweeping.py). `claims` state what
the comparison is meant to show, each judged with a paired 95% CI (reporting/claims.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunelab.config.loader import apply_overrides, build_config, config_to_dict, read_yaml_mapping
from tunelab.config.schema import ExperimentConfig
from tunelab.errors import ConfigError

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


SWEEP_METRICS = ("eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum")  # as recipes/sweeping.py scores trials
CLAIM_METRIC = re.compile(
    r"^(rouge1|rouge2|rougeL|rougeLsum|single_reference:(rouge1|rouge2|rougeL|rougeLsum)|benchmark:\w+"
    r"|soft_prompt:task_words|cost:(trainable_parameters|artefact_bytes|peak_memory|train_seconds))$"
)


# Settings that choose how the same computation runs, not what it computes (results differ only by rounding, by
# other random draws from the same distribution, or not at all: how often checkpoints are written): a finished arm
# is reused whatever they are.
EXECUTION_SETTINGS = (
    ("training", "compile"),
    ("training", "save_every"),
    ("training", "frozen_weights"),
    ("training", "matmul_attention"),
    ("training", "fast_dropout"),
    ("training", "padding_free"),
)


def without_execution_settings(experiment: dict[str, Any]) -> dict[str, Any]:
    for section, key in EXECUTION_SETTINGS:
        experiment.get(section, {}).pop(key, None)
    return experiment


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["finetune", "prompting"]
    shots: int = 0
    experiment: ExperimentConfig
    sweep: dict[str, list[Any]] | None = None
    """Config keys and the values to try on the validation split before training (the best is used)."""
    sweep_metric: Literal["eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum"] = "eval_loss"
    sweep_budget: dict[str, Any] = Field(default_factory=dict)
    """Settings for the sweep's trials only, e.g. a shorter budget {training.max_steps: 60}."""
    sweep_widen: int = Field(default=0, ge=0)
    """Up to this many more values past the edge of a one-key grid whose best lies at that edge
    (recipes/sweeping.py)."""

    def signature(self) -> dict[str, Any]:
        """What decides whether a finished arm can be reused."""
        return {
            "kind": self.kind,
            "shots": self.shots,
            "experiment": without_execution_settings(config_to_dict(self.experiment)),
            **(
                {
                    "sweep": self.sweep,
                    "sweep_metric": self.sweep_metric,
                    "sweep_budget": self.sweep_budget,
                    **({"sweep_widen": self.sweep_widen} if self.sweep_widen else {}),
                }
                if self.sweep
                else {}
            ),
        }


class Claim(BaseModel):
    """`arm` minus `versus` on `metric` is claimed to be at least `at_least` (or at most `at_most`): reproduced
    when the paired 95% CI of the difference lies on the claimed side of the threshold, not reproduced when it
    lies on the other side, inconclusive when it contains it."""

    model_config = ConfigDict(extra="forbid")
    claim: str
    arm: str
    versus: str
    """Another arm, `base` for a benchmark metric (the base model's score before training: forgetting), or
    `chance` for soft_prompt:task_words (random vocabulary tokens)."""
    metric: str = "rouge1"
    """rouge1/rouge2/rougeL/rougeLsum (best of the references), single_reference:<rouge type> (the mean over
    single references), benchmark:<task> (a benchmark of the suite, after training), or soft_prompt:task_words
    (the share of a prompt-tuning arm's virtual tokens with a task word among their nearest vocabulary tokens;
    evaluation/soft_prompt.py), or cost:<trainable_parameters|artefact_bytes|peak_memory|train_seconds>: then the
    threshold bounds the ratio arm / versus of one measurement each (no CI), and must be given."""
    at_least: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _one_threshold(self) -> Claim:
        if self.at_least is not None and self.at_most is not None:
            raise ValueError("give at_least or at_most, not both")
        if self.at_least is None and self.at_most is None:
            self.at_least = 0.0  # "arm is better than versus"
        return self


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    output_dir: str = "runs"
    arms: list[Arm] = Field(min_length=1)
    claims: list[Claim] = Field(default_factory=list)
    isolate_arms: bool = True
    """Each arm in a fresh process of its own (nothing of an earlier arm stays in memory; each arm's peak is its
    own); false runs them all in this process (faster to start, for tiny models)."""

    @property
    def directory(self) -> Path:
        return Path(self.output_dir) / self.name


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        if k == "method" and isinstance(v, dict):
            out[k] = v  # a method replaces the base's method whole (keys differ between methods)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_compare_config(path: str | Path, overrides: tuple[str, ...] = ()) -> CompareConfig:
    path = Path(path)
    tree = read_yaml_mapping(path, "comparison config")
    unknown = set(tree) - {"name", "output_dir", "experiment", "arms", "claims", "isolate_arms"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(unknown)}; expected name, output_dir, experiment, arms, claims, "
            "isolate_arms"
        )
    isolate = tree.get("isolate_arms", True)
    if not isinstance(isolate, bool):
        raise ConfigError(f"{path}: isolate_arms must be true or false, got {isolate!r}")
    base = tree.get("experiment") or {}
    if isinstance(base, str):
        base = read_yaml_mapping(path.parent / base, f"base experiment of {path}")  # absolute paths stay absolute
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: experiment must be a mapping or the path of an experiment config")
    base = apply_overrides(base, overrides)  # --set applies to the base experiment of every arm, as in train
    name = tree.get("name") or path.stem
    output_dir = tree.get("output_dir", "runs")
    arms = []
    for i, raw in enumerate(tree.get("arms") or []):
        if not isinstance(raw, dict) or "name" not in raw:
            raise ConfigError(f"{path}: arms[{i}] needs a name")
        raw = dict(raw)
        arm_name, kind, shots = raw.pop("name"), raw.pop("kind", "finetune"), raw.pop("shots", 0)
        sweep, sweep_metric = _sweep_of(path, arm_name, raw.pop("sweep", None)), raw.pop("sweep_metric", "eval_loss")
        sweep_budget = raw.pop("sweep_budget", None) or {}
        if not isinstance(sweep_budget, dict):
            raise ConfigError(f"{path}: arm {arm_name!r}: sweep_budget must map config keys to values")
        sweep_widen = raw.pop("sweep_widen", 0)
        if not isinstance(sweep_widen, int) or isinstance(sweep_widen, bool) or sweep_widen < 0:
            raise ConfigError(f"{path}: arm {arm_name!r}: sweep_widen must be a whole number >= 0, got {sweep_widen!r}")
        if sweep_widen and (not sweep or len(sweep) != 1):
            raise ConfigError(f"{path}: arm {arm_name!r}: sweep_widen widens a sweep of one key (e.g. training.lr)")
        if sweep and kind != "finetune":
            raise ConfigError(f"{path}: arm {arm_name!r}: a sweep needs a fine-tuning arm")
        if not _SLUG.match(str(arm_name)):
            raise ConfigError(f"{path}: arm name {arm_name!r} must be letters, digits, '-', '_' or '.'")
        exp_tree = _deep_merge(base, raw)
        exp_tree.update({"name": arm_name, "output_dir": str(Path(output_dir) / name)})
        try:
            experiment = build_config(exp_tree, source=f"{path} arm {arm_name!r}")
        except ConfigError as e:
            raise ConfigError(str(e)) from None
        if sweep_metric not in SWEEP_METRICS:
            raise ConfigError(f"{path}: arm {arm_name!r}: sweep_metric must be one of {', '.join(SWEEP_METRICS)}")
        arms.append(
            Arm(
                name=arm_name,
                kind=kind,
                shots=shots,
                experiment=experiment,
                sweep=sweep,
                sweep_metric=sweep_metric,
                sweep_budget=sweep_budget,
                sweep_widen=sweep_widen,
            )
        )
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: arm names must be unique, got {names}")
    return CompareConfig(
        name=name, output_dir=output_dir, arms=arms, claims=_claims_of(path, tree, names), isolate_arms=isolate
    )


def _sweep_of(path: Path, arm: str, raw: Any) -> dict[str, list[Any]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, list) and v for v in raw.values()):
        raise ConfigError(
            f"{path}: arm {arm!r}: sweep must map config keys to lists of values, e.g. training.lr: [1e-4]"
        )
    return {str(k): list(v) for k, v in raw.items()}


def _claims_of(path: Path, tree: dict[str, Any], arm_names: list[str]) -> list[Claim]:
    claims = []
    for i, raw in enumerate(tree.get("claims") or []):
        try:
            claim = Claim.model_validate(raw)
        except ValidationError as e:
            bad = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"{path}: claims[{i}]: {bad}") from None
        if not CLAIM_METRIC.match(claim.metric):
            raise ConfigError(
                f"{path}: claims[{i}]: metric {claim.metric!r}: use rouge1/rouge2/rougeL/rougeLsum, "
                "single_reference:<rouge type>, benchmark:<task>, soft_prompt:task_words or cost:<quantity> "
                "(trainable_parameters, artefact_bytes, peak_memory, train_seconds)"
            )
        for role, name in (("arm", claim.arm), ("versus", claim.versus)):
            if name not in arm_names and not (role == "versus" and name in ("base", "chance")):
                raise ConfigError(f"{path}: claims[{i}]: {role} {name!r} is not an arm ({', '.join(arm_names)})")
        if claim.versus == "base" and not claim.metric.startswith("benchmark:"):
            raise ConfigError(f"{path}: claims[{i}]: versus: base goes with a benchmark:<task> metric")
        if (claim.versus == "chance") != claim.metric.startswith("soft_prompt:"):
            raise ConfigError(f"{path}: claims[{i}]: soft_prompt:task_words goes with versus: chance, and only it")
        if claim.metric.startswith("cost:") and raw.get("at_least") is None and raw.get("at_most") is None:
            raise ConfigError(
                f"{path}: claims[{i}]: a {claim.metric} claim bounds the ratio {claim.arm} / {claim.versus}: "
                "give at_most (e.g. 0.05 for 'a few %') or at_least"
            )
        claims.append(claim)
    return claims
