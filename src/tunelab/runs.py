"""Run directories. A run directory is created once and never overwritten: an existing one is refused.

Layout:
    config.yaml          resolved config
    metrics.json         before/after metrics, training record, costs, protocol
    predictions.jsonl    id, prediction, references (after training); predictions_before.jsonl
    tensorboard/         training curves
    checkpoints/step-N/  intermediate checkpoints (when training.save_every > 0)
    adapter/             the trained PEFT adapter (PEFT format), or model/ for full fine-tuning
    COMPLETE             written last: the run finished
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.loader import config_to_dict
from tunelab.config.schema import ExperimentConfig
from tunelab.errors import RunDirError
from tunelab.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, atomic_write_yaml

COMPLETE_MARKER = "COMPLETE"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, cfg: ExperimentConfig, path: str | Path | None = None) -> RunDir:
        path = Path(path) if path else Path(cfg.output_dir) / cfg.name
        if path.exists():
            state = "a finished" if (path / COMPLETE_MARKER).exists() else "an unfinished"
            raise RunDirError(f"{path} already holds {state} run; choose another name (--set name=...) or remove it")
        try:
            path.mkdir(parents=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {path}: {e.strerror}") from None
        if not os.access(path, os.W_OK):
            raise RunDirError(f"run directory {path} is not writable")
        run = cls(path)
        atomic_write_yaml(run.config_path, config_to_dict(cfg))
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise RunDirError(f"{path} is not a tunelab run directory (no config.yaml)")
        return cls(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def artefact_dir(self) -> Path:
        return self.adapter_dir if self.adapter_dir.is_dir() else self.model_dir

    @property
    def is_complete(self) -> bool:
        return (self.path / COMPLETE_MARKER).exists()

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> Path:
        return atomic_write_json(self.path / name, metrics)

    def write_predictions(self, rows: list[dict[str, Any]], name: str = "predictions.jsonl") -> Path:
        return atomic_write_jsonl(self.path / name, rows)

    def mark_complete(self) -> None:
        atomic_write_text(self.path / COMPLETE_MARKER, "")

    def remove_partial_checkpoints(self) -> None:
        for p in (self.path / "checkpoints").glob(".*.tmp"):
            shutil.rmtree(p, ignore_errors=True)
