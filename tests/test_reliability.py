"""Surviving a kill (exact resume), faults that must fail cleanly, and nothing half-written."""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import tunelab
from conftest import experiment
from tunelab.errors import RunDirError, TrainingError

METHODS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 4, "dropout": 0.1},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 4, "init": "random"},
    "ia3": {"name": "ia3"},
}


def _config(tmp_path, model_dir, files, method, name="run", **extra):
    tree = experiment(
        model_dir,
        files,
        tmp_path,
        name=name,
        method=method,
        training={
            "max_steps": 8,
            "save_every": 2,
            "log_every": 1,
            "batch_size": 4,
            "precision": "fp32",
            **extra.pop("training", {}),
        },
        evaluation={"max_samples": 4, "precision": "fp32"},
        **extra,
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _train(config, *args, fault=None):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env.pop("TUNELAB_FAULT", None)
    if fault:
        env["TUNELAB_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "tunelab.cli.main", "train", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_sigkilled_run_resumes_to_the_same_result(method, tiny_t5_dir, dialogue_files, tmp_path):
    reference = _config(tmp_path, tiny_t5_dir, dialogue_files, METHODS[method], name="uninterrupted")
    assert _train(reference).returncode == 0
    config = _config(tmp_path, tiny_t5_dir, dialogue_files, METHODS[method], name="killed")
    killed = _train(config, fault="after-checkpoint:4")
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "runs" / "killed"
    assert not (run / "COMPLETE").exists() and (run / "checkpoints" / "step-4" / "state.json").is_file()
    again = _train(config)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = _train(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "runs" / "uninterrupted" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert [s for s, _ in a["training"]["train_loss"]] == [s for s, _ in b["training"]["train_loss"]]
    for (_, x), (_, y) in zip(a["training"]["train_loss"], b["training"]["train_loss"]):
        assert x == pytest.approx(y, rel=1e-5, abs=1e-6)
    for key in ("rouge1", "rougeL"):
        assert a["after"]["rouge"][key]["f1"] == pytest.approx(b["after"]["rouge"][key]["f1"])
    assert a["after"]["bleu"]["score"] == pytest.approx(b["after"]["bleu"]["score"])


def test_run_killed_after_its_last_step_resumes_without_training_again(tiny_t5_dir, dialogue_files, tmp_path):
    reference = _config(tmp_path, tiny_t5_dir, dialogue_files, METHODS["lora"], name="uninterrupted")
    assert _train(reference).returncode == 0
    config = _config(tmp_path, tiny_t5_dir, dialogue_files, METHODS["lora"], name="late")
    assert _train(config, fault="after-checkpoint:8").returncode == -9  # killed before the evaluation after
    resumed = _train(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "runs" / "uninterrupted" / "metrics.json").read_text())
    b = json.loads((tmp_path / "runs" / "late" / "metrics.json").read_text())
    assert b["training"]["resumed_from"] == "step-8"
    assert [s for s, _ in b["training"]["train_loss"]] == list(range(1, 9))
    for (_, x), (_, y) in zip(a["training"]["train_loss"], b["training"]["train_loss"]):
        assert x == pytest.approx(y, rel=1e-5, abs=1e-6)
    assert b["after"]["rouge"]["rougeL"]["f1"] == pytest.approx(a["after"]["rouge"]["rougeL"]["f1"])


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tiny_t5_dir, dialogue_files, tmp_path):
    config = _config(tmp_path, tiny_t5_dir, dialogue_files, METHODS["lora"], name="torn")
    killed = _train(config, fault="checkpoint-write:4")
    assert killed.returncode == -9
    ckpts = tmp_path / "runs" / "torn" / "checkpoints"
    assert (ckpts / "step-2" / "state.json").is_file()
    assert not (ckpts / "step-4").exists()
    assert list(ckpts.glob(".step-4*.tmp"))  # the torn write stayed in its temporary folder
    assert _train(config, "--resume").returncode == 0
    assert not list(ckpts.glob(".*.tmp"))
    assert (tmp_path / "runs" / "torn" / "COMPLETE").exists()


def test_resume_refuses_a_changed_config_and_a_finished_run(tiny_t5_dir, dialogue_files, tmp_path):
    config = _config(tmp_path, tiny_t5_dir, dialogue_files, METHODS["lora"], name="r")
    assert _train(config, fault="after-checkpoint:2").returncode == -9
    changed = _train(config, "--resume", "--set", "training.lr=0.5")
    assert changed.returncode == 2 and "differs in training.lr" in changed.stderr
    assert _train(config, "--resume").returncode == 0
    done = _train(config, "--resume")
    assert done.returncode == 2 and "finished run" in done.stderr


def test_non_finite_loss_stops_and_names_the_step(tiny_t5_dir, dialogue_files, tmp_path, monkeypatch):
    import torch

    import tunelab.training.loop as loop

    real = loop.completion_loss
    calls = {"n": 0}

    def exploding(model, batch, arch):
        calls["n"] += 1
        loss = real(model, batch, arch)
        return loss * torch.tensor(float("nan")) if calls["n"] == 5 else loss

    monkeypatch.setattr(loop, "completion_loss", exploding)
    cfg = tunelab.load_config(_config(tmp_path, tiny_t5_dir, dialogue_files, METHODS["lora"], name="nan"))
    with pytest.raises(
        TrainingError, match=r"non-finite training loss .* at optimizer step 5.*last finite checkpoint: .*step-4"
    ):
        tunelab.finetune(cfg, show_progress=False, echo=None)
    run = tmp_path / "runs" / "nan"
    assert (run / "checkpoints" / "step-4" / "trainable.safetensors").is_file()
    assert not (run / "COMPLETE").exists()


def test_unwritable_output_directory(tiny_t5_dir, dialogue_files, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = tunelab.build_config(experiment(tiny_t5_dir, dialogue_files, tmp_path, output_dir=str(blocker / "runs")))
    with pytest.raises(RunDirError, match="cannot create run directory"):
        tunelab.finetune(cfg, show_progress=False, echo=None)


def test_full_disk_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    from tunelab.io import atomic_write_json

    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"ok": 1})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    from tunelab.io import DiskFullError

    with pytest.raises(DiskFullError, match="no space left on the device writing file .*metrics.json"):
        atomic_write_json(target, {"ok": 2, "big": "x" * 1000})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_truncation_is_counted_and_reported(tiny_t5_dir, dialogue_files, tmp_path):
    cfg = tunelab.build_config(
        experiment(
            tiny_t5_dir,
            dialogue_files,
            tmp_path,
            name="short",
            template={"max_input_tokens": 6, "max_target_tokens": 16},
            training={"max_steps": 2},
        )
    )
    lines = []
    result = tunelab.finetune(cfg, show_progress=False, echo=lines.append)
    assert result.metrics["training"]["truncation"]["inputs_truncated"] == result.metrics["training"]["examples"]
    assert result.metrics["after"]["truncation"]["inputs_truncated"] == 6
    assert any("inputs cut at 6 tokens" in line for line in lines)


def test_checkpoint_with_position_keyed_optimizer_state_is_refused_clearly(tmp_path, tiny_llama_dir):
    """A checkpoint whose optimizer state is keyed by position (torch's Optimizer.state_dict(), as tunelab
    wrote before FSDP support) cannot be matched to parameters: a TrainingError says so."""
    from transformers import AutoModelForCausalLM

    from tunelab.errors import TrainingError
    from tunelab.training.distributed import load_optimizer_state

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    optimizer = torch.optim.AdamW(model.parameters())
    model(input_ids=torch.tensor([[3, 4, 5]]), labels=torch.tensor([[3, 4, 5]])).loss.backward()
    optimizer.step()
    with pytest.raises(TrainingError, match="keyed by position"):
        load_optimizer_state(model, optimizer, optimizer.state_dict())
