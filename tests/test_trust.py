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


class _NanGradient(__import__("torch").autograd.Function):
    """Identity forward, NaN backward: a finite loss whose update would poison the weights."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _nan_config(tmp_path, model_dir, files, name, **training):
    tree = experiment(model_dir, files, tmp_path, name=name, method={"name": "lora", "r": 4, "dropout": 0.0},
                      training={"max_steps": 8, "save_every": 2, "log_every": 1, "batch_size": 4, "precision": "fp32",
                                **training},
                      evaluation={"max_samples": 4, "precision": "fp32"})
    import tunelab

    return tunelab.build_config(tree)


def test_nan_gradient_on_the_last_step_saves_nothing(tiny_t5_dir, dialogue_files, tmp_path, monkeypatch):
    import tunelab
    import tunelab.training.loop as loop
    from tunelab.errors import TrainingError

    real, calls = loop.completion_loss, {"n": 0}

    def poisoned(model, batch, arch):
        calls["n"] += 1
        loss = real(model, batch, arch)
        return _NanGradient.apply(loss) if calls["n"] == 8 and model.training else loss

    monkeypatch.setattr(loop, "completion_loss", poisoned)
    cfg = _nan_config(tmp_path, tiny_t5_dir, dialogue_files, "nan-grad")
    with pytest.raises(TrainingError, match=r"non-finite gradient at optimizer step 8.*last finite checkpoint: .*step-6"):
        tunelab.finetune(cfg, show_progress=False, echo=None)
    run = tmp_path / "runs" / "nan-grad"
    assert not (run / "COMPLETE").exists() and not (run / "adapter").exists()
    from tunelab.training.finite import checkpoint_is_finite

    assert all(checkpoint_is_finite(c) for c in (run / "checkpoints").iterdir())


def test_non_finite_weights_after_a_step_stop_training(tiny_t5_dir, dialogue_files, tmp_path, monkeypatch):
    """Without gradient clipping (no norm computed) the weights themselves are checked after each update."""
    import torch

    import tunelab
    from tunelab.errors import TrainingError

    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    cfg = _nan_config(tmp_path, tiny_t5_dir, dialogue_files, "nan-weights", max_grad_norm=None)
    with pytest.raises(TrainingError, match=r"non-finite weights after the update at optimizer step 3.*step-2"):
        tunelab.finetune(cfg, show_progress=False, echo=None)


def test_a_non_finite_checkpoint_is_never_written_or_resumed(tmp_path):
    import torch
    from safetensors.torch import save_file

    from tunelab.errors import TrainingError
    from tunelab.training.checkpoint import TrainingState, save_checkpoint
    from tunelab.training.finite import latest_finite_checkpoint, stop_message

    folder = tmp_path / "checkpoints"
    with pytest.raises(TrainingError, match="refusing to write checkpoint .*step-3.*w"):
        save_checkpoint(folder, {"w": torch.tensor([1.0, float("nan")])}, {}, None, TrainingState(3, 0, 0, {}))
    assert not folder.exists() or not list(folder.iterdir())
    for step, value in ((2, 1.0), (4, float("nan"))):  # an older tunelab could leave a NaN checkpoint behind
        (folder / f"step-{step}").mkdir(parents=True)
        save_file({"w": torch.tensor([value])}, str(folder / f"step-{step}" / "trainable.safetensors"))
        (folder / f"step-{step}" / "state.json").write_text("{}")
    assert latest_finite_checkpoint(folder) == folder / "step-2"
    assert "last finite checkpoint: " + str(folder / "step-2") in stop_message("x", 5, folder)
    assert "no finite checkpoint" in stop_message("x", 5, tmp_path / "none")
