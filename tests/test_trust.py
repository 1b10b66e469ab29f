"""Results that can be trusted: exact resume across epochs, no non-finite artefacts, no benchmark leakage,
fail-fast validation, one lock per run directory, base-model identity, file modes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import experiment


def _env(**extra):
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", **extra}
    if "TUNELAB_FAULT" not in extra:
        env.pop("TUNELAB_FAULT", None)
    return env


def _cli(*args, fault=None, launcher=None, cwd=None):
    cmd = [*(launcher or [sys.executable, "-m"]), "tunelab.cli.main", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=_env(**({"TUNELAB_FAULT": fault} if fault else {})))


def _epoch_config(tmp_path, model_dir, files, name):
    # 16 examples, batch 4: 4 optimizer steps per epoch, 3 epochs; a checkpoint after every step
    tree = experiment(model_dir, files, tmp_path, name=name, method={"name": "lora", "r": 4, "dropout": 0.0},
                      data={"max_train_samples": 16},
                      training={"epochs": 3, "max_steps": None, "batch_size": 4, "save_every": 1, "log_every": 1,
                                "precision": "fp32", "lr": 5e-3},
                      evaluation={"max_samples": 4, "precision": "fp32"})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _losses(run: Path) -> list[tuple[int, float]]:
    return [tuple(x) for x in json.loads((run / "metrics.json").read_text())["training"]["train_loss"]]


TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "-m"]


@pytest.mark.parametrize("launcher", ["single", "ddp"])
def test_resume_is_exact_before_at_and_after_an_epoch_boundary(launcher, tiny_t5_dir, dialogue_files, tmp_path):
    launch = TORCHRUN if launcher == "ddp" else None
    ref = _epoch_config(tmp_path, tiny_t5_dir, dialogue_files, "uninterrupted")
    done = _cli("train", ref, launcher=launch, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _losses(tmp_path / "runs" / "uninterrupted")
    assert [s for s, _ in expected] == list(range(1, 13))
    for kill_at in (3, 4, 5):  # inside epoch 0, at its end, inside epoch 1
        cfg = _epoch_config(tmp_path, tiny_t5_dir, dialogue_files, f"killed-{kill_at}")
        killed = _cli("train", cfg, fault=f"after-checkpoint:{kill_at}", launcher=launch, cwd=tmp_path)
        assert killed.returncode != 0
        resumed = _cli("train", cfg, "--resume", launcher=launch, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        got = _losses(tmp_path / "runs" / f"killed-{kill_at}")
        assert [s for s, _ in got] == [s for s, _ in expected]
        for (step, a), (_, b) in zip(expected, got):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-7), f"kill at {kill_at}: step {step} differs"
