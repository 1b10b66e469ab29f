"""The comparison config: one base experiment and a list of arms, each a partial experiment that is
deep-merged into the base (so an arm states only what differs: its method, learning rate, mixture...)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunelab.config.loader import apply_overrides, build_config, config_to_dict, read_yaml_mapping
from tunelab.config.schema import ExperimentConfig
from tunelab.errors import ConfigError

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["finetune", "prompting"]
    shots: int = 0
    experiment: ExperimentConfig

    def signature(self) -> dict[str, Any]:
        """What decides whether a finished arm can be reused."""
        return {"kind": self.kind, "shots": self.shots, "experiment": config_to_dict(self.experiment)}


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    output_dir: str = "runs"
    arms: list[Arm] = Field(min_length=1)

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
    unknown = set(tree) - {"name", "output_dir", "experiment", "arms"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; expected name, output_dir, experiment, arms")
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
        if not _SLUG.match(str(arm_name)):
            raise ConfigError(f"{path}: arm name {arm_name!r} must be letters, digits, '-', '_' or '.'")
        exp_tree = _deep_merge(base, raw)
        exp_tree.update({"name": arm_name, "output_dir": str(Path(output_dir) / name)})
        try:
            experiment = build_config(exp_tree, source=f"{path} arm {arm_name!r}")
        except ConfigError as e:
            raise ConfigError(str(e)) from None
        arms.append(Arm(name=arm_name, kind=kind, shots=shots, experiment=experiment))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: arm names must be unique, got {names}")
    return CompareConfig(name=name, output_dir=output_dir, arms=arms)
