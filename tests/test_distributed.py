"""Data-parallel training with torchrun (2 processes, gloo on CPU) matches one process with the same
global batch; only rank 0 writes; distributed generation returns predictions in input order."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import experiment

from tunelab.training.distributed import read_sharded_weights


def _run(cmd, cwd):
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TUNELAB_FAULT", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "dropout": 0.0}, {"name": "full"}])
def test_two_process_ddp_matches_one_process(method, tiny_t5_dir, dialogue_files, tmp_path):
    tree = experiment(
        tiny_t5_dir,
        dialogue_files,
        tmp_path,
        method=method,
        training={
            "max_steps": 6,
            "batch_size": 8,
            "log_every": 1,
            "precision": "fp32",
            "save_every": 3,
            "eval_every": 3,
        },
        evaluation={"max_samples": 6, "precision": "fp32"},
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    torchrun = Path(sys.executable).with_name("torchrun")
    ddp = _run(
        [str(torchrun), "--nproc_per_node", "2", "-m", "tunelab.cli.main", "train", str(cfg), "--set", "name=ddp"],
        tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = _run([sys.executable, "-m", "tunelab.cli.main", "train", str(cfg), "--set", "name=single"], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    runs = tmp_path / "runs"
    a = json.loads((runs / "ddp" / "metrics.json").read_text())
    b = json.loads((runs / "single" / "metrics.json").read_text())
    assert a["training"]["completion_tokens"] == b["training"]["completion_tokens"]
    for (sa, la), (sb, lb) in zip(a["training"]["train_loss"], b["training"]["train_loss"]):
        assert sa == sb and la == pytest.approx(lb, rel=1e-3)
    for (_, la), (_, lb) in zip(a["training"]["eval_loss"], b["training"]["eval_loss"]):
        assert la == pytest.approx(lb, rel=1e-3)
    assert a["after"]["rouge"]["rouge1"]["f1"] == pytest.approx(b["after"]["rouge"]["rouge1"]["f1"], abs=1e-6)
    # distributed generation gathered back in input order, identical to one process
    pa = [json.loads(x) for x in (runs / "ddp" / "predictions.jsonl").read_text().splitlines()]
    pb = [json.loads(x) for x in (runs / "single" / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in pa] == [f"test_{i}" for i in range(6)]
    assert [p["prediction"] for p in pa] == [p["prediction"] for p in pb]
    # only rank 0 wrote: one event file, one checkpoint folder per save, no stray temporary folders
    assert len(list((runs / "ddp" / "tensorboard").iterdir())) == 1
    assert sorted(p.name for p in (runs / "ddp" / "checkpoints").iterdir()) == ["step-3", "step-6"]
    assert not list((runs / "ddp").rglob("*.tmp"))


def _accelerate_launch(config_name: str, cfg: Path, name: str, cwd: Path, fault: str | None = None):
    accelerate = Path(sys.executable).with_name("accelerate")
    config = Path(__file__).parents[1] / "configs" / "accelerate" / config_name
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TUNELAB_FAULT", None)
    if fault:
        env["TUNELAB_FAULT"] = fault
    cmd = [
        str(accelerate),
        "launch",
        "--config_file",
        str(config),
        "-m",
        "tunelab.cli.main",
        "train",
        str(cfg),
        "--set",
        f"name={name}",
    ] + (["--resume"] if fault is None and name.endswith("killed") else [])
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize(
    "arch,method", [("causal", {"name": "full"}), ("seq2seq", {"name": "lora", "r": 4, "dropout": 0.0})]
)
def test_fsdp_on_cpu_matches_one_process_and_resumes(
    arch, method, tiny_llama_dir, tiny_t5_dir, dialogue_files, tmp_path
):
    """FSDP2 through `accelerate launch` with configs/accelerate/fsdp_cpu.yaml (2 processes, gloo): same
    loss curve, saved weights and predictions as one process; checkpoints are sharded (each process writes its
    slice); a run SIGKILLed after its first checkpoint resumes to the same result under FSDP and in one process."""
    model_dir = tiny_llama_dir if arch == "causal" else tiny_t5_dir
    tree = experiment(
        model_dir,
        dialogue_files,
        tmp_path,
        method=method,
        training={
            "max_steps": 6,
            "batch_size": 8,
            "log_every": 1,
            "precision": "fp32",
            "save_every": 3,
            "eval_every": 3,
        },
        evaluation={"max_samples": 5, "precision": "fp32"},
    )  # 5: unequal shards, padded
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    fsdp = _accelerate_launch("fsdp_cpu.yaml", cfg, "fsdp", tmp_path)
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    single = _run([sys.executable, "-m", "tunelab.cli.main", "train", str(cfg), "--set", "name=single"], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    killed = _accelerate_launch("fsdp_cpu.yaml", cfg, "killed", tmp_path, fault="after-checkpoint:3")
    assert killed.returncode != 0
    runs = tmp_path / "runs"
    shards = runs / "killed" / "checkpoints" / "step-3" / "sharded"
    assert sorted(p.name for p in shards.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one per process
    assert not (shards.parent / "trainable.safetensors").exists()  # nothing gathered onto rank 0
    # the same sharded checkpoint also resumes in one process, without FSDP
    shutil.copytree(runs / "killed", runs / "killed-alone")
    stored = yaml.safe_load((runs / "killed-alone" / "config.yaml").read_text())
    (runs / "killed-alone" / "config.yaml").write_text(yaml.safe_dump({**stored, "name": "killed-alone"}))
    alone = _run(
        [sys.executable, "-m", "tunelab.cli.main", "train", str(cfg), "--set", "name=killed-alone", "--resume"],
        tmp_path,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    resumed = _accelerate_launch("fsdp_cpu.yaml", cfg, "killed", tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    b = json.loads((runs / "single" / "metrics.json").read_text())
    artefact = "model" if method["name"] == "full" else "adapter"
    wb = _weights(runs / "single" / artefact)
    cb = _weights(runs / "single" / "checkpoints" / "step-3")
    for name in ("fsdp", "killed", "killed-alone"):
        a = json.loads((runs / name / "metrics.json").read_text())
        for (sa, la), (sb, lb) in zip(a["training"]["train_loss"], b["training"]["train_loss"], strict=True):
            assert sa == sb and la == pytest.approx(lb, rel=1e-4)
        for (_, la), (_, lb) in zip(a["training"]["eval_loss"], b["training"]["eval_loss"], strict=True):
            assert la == pytest.approx(lb, rel=1e-4)
        pa = [json.loads(x)["prediction"] for x in (runs / name / "predictions.jsonl").read_text().splitlines()]
        pb = [json.loads(x)["prediction"] for x in (runs / "single" / "predictions.jsonl").read_text().splitlines()]
        assert pa == pb and len(pa) == 5
        wa = _weights(runs / name / artefact)  # whole tensors, not rank 0's shard
        assert sorted(wa) == sorted(wb)
        for k in wb:
            assert wa[k].shape == wb[k].shape
            torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)
        ca = read_sharded_weights(runs / name / "checkpoints" / "step-3" / "sharded")
        assert sorted(ca) == sorted(cb)
        for k in cb:
            torch.testing.assert_close(ca[k], cb[k], atol=1e-5, rtol=1e-4)
    assert (runs / "killed" / "COMPLETE").exists() and (runs / "killed-alone" / "COMPLETE").exists()


def test_fsdp_refuses_what_it_cannot_shard(tiny_llama_dir):
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.errors import TrainingError
    from tunelab.training.distributed import check_fsdp_supported

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with pytest.raises(TrainingError, match="regularization"):
        check_fsdp_supported(model, has_regularizer=True)
    check_fsdp_supported(model, has_regularizer=False)  # full fine-tuning is fine
    soft = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
    with pytest.raises(TrainingError, match="prompt_tuning.*data-parallel"):
        check_fsdp_supported(soft, has_regularizer=False)
