"""Data-parallel training with torchrun (2 processes, gloo on CPU) matches one process with the same
global batch; only rank 0 writes; distributed generation returns predictions in input order."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import experiment


def _run(cmd, cwd):
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TUNELAB_FAULT", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "dropout": 0.0}, {"name": "full"}])
def test_two_process_ddp_matches_one_process(method, tiny_t5_dir, dialogue_files, tmp_path):
    tree = experiment(tiny_t5_dir, dialogue_files, tmp_path, method=method,
                      training={"max_steps": 6, "batch_size": 8, "log_every": 1, "precision": "fp32",
                                "save_every": 3, "eval_every": 3},
                      evaluation={"max_samples": 6, "precision": "fp32"})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    torchrun = Path(sys.executable).with_name("torchrun")
    ddp = _run([str(torchrun), "--nproc_per_node", "2", "-m", "tunelab.cli.main", "train", str(cfg),
                "--set", "name=ddp"], tmp_path)
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
    assert sorted(p.name for p in (runs / "ddp" / "checkpoints").iterdir()) == ["step-3"]
    assert not list((runs / "ddp").rglob("*.tmp"))
