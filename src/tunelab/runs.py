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

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from tunelab.config.loader import build_config, config_to_dict, read_yaml_mapping
from tunelab.config.schema import ExperimentConfig
from tunelab.errors import RunDirError
from tunelab.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, atomic_write_yaml

COMPLETE_MARKER = "COMPLETE"
LOCK_FILE = ".lock"  # held (flock) for the life of a process writing into the run
LOCK_OWNER = ".lock.owner.json"  # who holds it: pid, host, command, since


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def unique_path(path: Path) -> Path:
    """`path` if free, else the first free `path-2`, `path-3`, ..."""
    candidate, n = Path(path), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, cfg: ExperimentConfig, path: str | Path | None = None, unique: bool = False) -> RunDir:
        """A new run directory; an existing one is refused, or with `unique` a numbered sibling is made
        (`name-2`, `name-3`, ...) so a rerun writes a new folder and loses nothing."""
        path = Path(path) if path else Path(cfg.output_dir) / cfg.name
        if unique:
            path = unique_path(path)
        if path.exists():
            state = "a finished" if (path / COMPLETE_MARKER).exists() else "an unfinished"
            hint = "" if state == "a finished" else ", or continue it with --resume"
            raise RunDirError(f"{path} already holds {state} run; choose another name (--set name=...){hint}")
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
    def create_or_resume(cls, cfg: ExperimentConfig, path: str | Path | None = None) -> tuple[RunDir, bool]:
        """For `--resume`: a new run directory, or the unfinished one at that path (same config required)."""
        path = Path(path) if path else Path(cfg.output_dir) / cfg.name
        if not path.exists():
            return cls.create(cfg, path), False
        run = cls.open(path)
        if run.is_complete:
            raise RunDirError(f"{path} holds a finished run; nothing to resume")
        if diff := run.config_differences(cfg):
            raise RunDirError(f"cannot resume {path}: its config differs in {', '.join(diff[:8])}")
        return run, True

    def config_differences(self, cfg: ExperimentConfig) -> list[str]:
        """The keys in which this run's config differs from `cfg` (none: the same run)."""
        # through the current schema: keys added by a newer tunelab (with their defaults) are no difference
        stored = config_to_dict(build_config(read_yaml_mapping(self.config_path), source=str(self.config_path)))
        return sorted(_diff_keys(stored, config_to_dict(cfg)))

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

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def owner(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / LOCK_OWNER).read_text())
        except (OSError, ValueError):
            return None

    @contextmanager
    def locked(self) -> Iterator[RunDir]:
        """Hold the run directory for this process: a second process writing into it fails at once,
        naming the process that holds it. The lock is the kernel's (flock), so it dies with its process."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            who = self.owner() or {}
            by = (
                f"process {who.get('pid')} on {who.get('host')} ({who.get('command')}, since {who.get('since')})"
                if who
                else "another process"
            )
            raise RunDirError(f"{self.path} is in use by {by}; wait for it to finish or stop it") from None
        try:
            atomic_write_json(
                self.path / LOCK_OWNER,
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join(sys.argv),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                },
            )
            yield self
        finally:
            (self.path / LOCK_OWNER).unlink(missing_ok=True)
            lock.release()

    def read_json(self, name: str) -> dict[str, Any] | None:
        p = self.path / name
        return json.loads(p.read_text()) if p.is_file() else None
