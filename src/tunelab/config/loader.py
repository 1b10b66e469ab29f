"""Reading a YAML config, applying `--set key.path=value` overrides, and turning pydantic errors into
messages that name the bad key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunelab.config.schema import ExperimentConfig
from tunelab.errors import ConfigError
from tunelab.methods import METHODS


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        # pydantic puts the method union's tag (the method name) into error locations; drop it for readability
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in METHODS))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(
            f"  {loc or '<root>'}: {msg}"
            + (
                f" (got {e['input']!r})"
                if e["type"] != "extra_forbidden" and not isinstance(e.get("input"), dict)
                else ""
            )
        )
    return "\n".join(lines)


def set_by_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`training.lr=1e-4` -> ("training.lr", 0.0001); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects key.path=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key.path=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _method_switch(tree: dict[str, Any], key: str, value: Any) -> None:
    # `--set method.name=full` on a LoRA config must not keep LoRA-only keys around.
    if key == "method.name" and isinstance(tree.get("method"), dict) and tree["method"].get("name") != value:
        tree["method"] = {}


def apply_overrides(tree: Mapping[str, Any] | None, overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of `tree` with each `key.path=value` applied (the one place --set is interpreted)."""
    import copy

    data: dict[str, Any] = copy.deepcopy(dict(tree or {}))
    for item in overrides:
        key, value = parse_override(item)
        _method_switch(data, key, value)
        set_by_path(data, key, value)
    return data


def build_config(
    tree: Mapping[str, Any] | None, overrides: Iterable[str] = (), source: str = "<dict>"
) -> ExperimentConfig:
    data = apply_overrides(tree, overrides)
    if isinstance(data.get("method"), dict) and "name" not in data["method"]:
        data["method"] = {"name": "lora", **data["method"]}
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); every problem is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(tree).__name__}")
    return tree or {}


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Load and validate an experiment config; `path=None` gives the defaults (the embedded demo)."""
    if path is None:
        return build_config({}, overrides, "<defaults>")
    return build_config(read_yaml_mapping(path), overrides, str(path))


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
