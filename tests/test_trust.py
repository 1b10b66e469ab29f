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
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=_env(**({"TUNELAB_FAULT": fault} if fault else {})),
    )


def _epoch_config(tmp_path, model_dir, files, name):
    # 16 examples, batch 4: 4 optimizer steps per epoch, 3 epochs; a checkpoint after every step
    tree = experiment(
        model_dir,
        files,
        tmp_path,
        name=name,
        method={"name": "lora", "r": 4, "dropout": 0.0},
        data={"max_train_samples": 16},
        training={
            "epochs": 3,
            "max_steps": None,
            "batch_size": 4,
            "save_every": 1,
            "log_every": 1,
            "precision": "fp32",
            "lr": 5e-3,
        },
        evaluation={"max_samples": 4, "precision": "fp32"},
    )
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
    # One run killed three times: inside epoch 0, at its end, inside epoch 1. Each process after the first resumes
    # from the checkpoint its predecessor wrote (the later ones from a resumed run's checkpoint), so the first
    # step each one trains is the step after a resume point.
    cfg = _epoch_config(tmp_path, tiny_t5_dir, dialogue_files, "killed")
    first = _cli("train", cfg, fault="after-checkpoint:3", launcher=launch, cwd=tmp_path)
    assert first.returncode != 0
    for kill_at in (4, 5):
        killed = _cli("train", cfg, "--resume", fault=f"after-checkpoint:{kill_at}", launcher=launch, cwd=tmp_path)
        assert killed.returncode != 0 and not (tmp_path / "runs" / "killed" / "COMPLETE").exists()
    resumed = _cli("train", cfg, "--resume", launcher=launch, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "killed" / "metrics.json").read_text())
    assert metrics["training"]["resumed_from"] == "step-5"
    got = _losses(tmp_path / "runs" / "killed")
    assert [s for s, _ in got] == [s for s, _ in expected]
    for (step, a), (_, b) in zip(expected, got):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), f"step {step} differs (resumed after steps 3, 4 and 5)"


class _NanGradient(__import__("torch").autograd.Function):
    """Identity forward, NaN backward: a finite loss whose update would poison the weights."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _nan_config(tmp_path, model_dir, files, name, **training):
    tree = experiment(
        model_dir,
        files,
        tmp_path,
        name=name,
        method={"name": "lora", "r": 4, "dropout": 0.0},
        training={"max_steps": 8, "save_every": 2, "log_every": 1, "batch_size": 4, "precision": "fp32", **training},
        evaluation={"max_samples": 4, "precision": "fp32"},
    )
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
    with pytest.raises(
        TrainingError, match=r"non-finite gradient at optimizer step 8.*last finite checkpoint: .*step-6"
    ):
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


# --- benchmark leakage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sst2", "boolq", "mmlu", "rte"])
def test_no_document_any_evaluation_scores_is_training_data(task, dialogsum_dir):
    """The held-out set is the task's evaluation set, whatever limit or sample an evaluation asks for."""
    from tunelab.benchmarks import get_task
    from tunelab.benchmarks.loaders import evaluation_documents, evaluation_pool, training_documents
    from tunelab.benchmarks.prompts import document_key
    from tunelab.config.schema import MixtureComponent
    from tunelab.data.mixture import load_component

    spec = get_task(task)
    trained = {e.input for e in load_component(MixtureComponent(task=task)).examples}
    assert trained and len(trained) == len({document_key(spec, d) for d in training_documents(spec)})
    pool = evaluation_pool(spec)
    assert not trained & {document_key(spec, d) for d in pool}
    for subset in (
        {"limit": 10},
        {"limit": 200},
        {"sample": 24},
        {"sample": 100},
        {"sample": 200},
        {"limit": len(pool)},
    ):
        scored = evaluation_documents(get_task(task, **subset))
        assert len(scored) == next(iter(subset.values()))
        assert not trained & {document_key(spec, d) for d in scored}, subset


def test_samples_are_nested_and_limits_are_the_first_documents(dialogsum_dir):
    from tunelab.benchmarks import get_task
    from tunelab.benchmarks.loaders import evaluation_documents, load_documents
    from tunelab.benchmarks.prompts import document_key

    spec = get_task("boolq")
    keys = lambda docs: [document_key(spec, d) for d in docs]  # noqa: E731
    assert keys(evaluation_documents(get_task("boolq", limit=7))) == keys(load_documents(spec)[:7])
    small, large = (set(keys(evaluation_documents(get_task("boolq", sample=n)))) for n in (24, 200))
    assert small < large
    assert set(keys(evaluation_documents(get_task("boolq", sample=24, seed=7)))) != small
    from tunelab.errors import ConfigError

    with pytest.raises(ConfigError, match="evaluation set holds 1000"):
        evaluation_documents(get_task("boolq", limit=2000))
    with pytest.raises(ConfigError, match="every document is in its evaluation set"):
        from tunelab.benchmarks.loaders import training_documents

        training_documents(get_task("copa"))


def test_a_run_records_zero_overlap_between_training_and_scored_documents(
    tiny_llama_dir, dialogue_files, tmp_path, dialogsum_dir
):
    import tunelab

    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        name="mix",
        data={"mixture": {"components": [{"task": "sst2"}, {"task": "boolq", "max_examples": 300}], "total": 64}},
        training={"max_steps": 2},
        evaluation={"max_samples": 3, "before": False},
        benchmarks={"tasks": ["sst2", "boolq"], "sample": 200, "bootstrap_samples": 0},
    )
    metrics = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).metrics
    leak = metrics["leakage"]
    assert leak["sst2"] == {
        "scored": 200,
        "evaluation_set": 500,
        "scored_in_training": 0,
        "evaluation_set_in_training": 0,
    }
    assert leak["boolq"]["scored"] == 200 and leak["boolq"]["evaluation_set_in_training"] == 0
    assert leak["files:test"] == {"scored": 3, "scored_in_training": 0}


def test_leakage_report_counts_what_was_trained_on(dialogsum_dir):
    """The record is not a constant: documents put into training are counted."""
    from tunelab.benchmarks import get_task
    from tunelab.benchmarks.leakage import leakage_report
    from tunelab.benchmarks.loaders import evaluation_documents
    from tunelab.benchmarks.prompts import document_key
    from tunelab.data.records import Example

    spec = get_task("sst2", sample=50)
    leaked = [
        Example(f"x{i}", document_key(spec, d), ("positive",)) for i, d in enumerate(evaluation_documents(spec)[:5])
    ]
    report = leakage_report(leaked, [spec], "t:test", [leaked[0]])
    assert report["sst2"]["scored_in_training"] == 5 and report["t:test"]["scored_in_training"] == 1


# --- files as a normal write makes them ------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_respect_the_umask(umask, tmp_path):
    from tunelab.io import atomic_replace_dir, atomic_write_json, staging_dir

    old = os.umask(umask)
    try:
        f = atomic_write_json(tmp_path / "a" / "metrics.json", {"x": 1})
        stage = staging_dir(tmp_path / "adapter")
        (stage / "w.bin").write_bytes(b"1")
        atomic_replace_dir(stage, tmp_path / "adapter")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        plain_dir = tmp_path / "plain-dir"
        plain_dir.mkdir()
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "adapter").stat().st_mode & 0o777 == plain_dir.stat().st_mode & 0o777 == 0o777 & ~umask


# --- fail fast, lose nothing ---------------------------------------------------------------------------


def _cfg_file(tmp_path, tree, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize(
    "problem,message",
    [
        ("bad_train_file", r"train.jsonl:3: "),
        ("missing_test_column", r"column\(s\) 'summary' not found; columns present: 'fname', 'dialogue'"),
        (
            "target_modules",
            r"method.target_modules: 'q_projj' matches no module of the model; its linear layers are "
            r"named .*q_proj",
        ),
        ("unknown_task", r"unknown benchmark task 'boolqq'"),
        ("template", r"template phrasing index 9 out of range"),
    ],
)
def test_bad_input_fails_before_any_work_and_leaves_nothing(
    problem, message, tiny_llama_dir, dialogue_files, tmp_path, monkeypatch
):
    import tunelab

    finetune_module = __import__("importlib").import_module("tunelab.recipes.finetuning")
    from tunelab.errors import TunelabError

    files = dict(dialogue_files)
    tree = experiment(
        tiny_llama_dir,
        files,
        tmp_path,
        name="bad",
        training={"max_steps": 2},
        method={"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
    )
    if problem == "bad_train_file":
        lines = Path(files["train"]).read_text().splitlines()
        lines[2] = "{not json"
        Path(files["train"]).write_text("\n".join(lines) + "\n")
    elif problem == "missing_test_column":
        rows = [json.loads(x) for x in Path(files["test"]).read_text().splitlines()]
        Path(files["test"]).write_text(
            "".join(json.dumps({"fname": r["fname"], "dialogue": r["dialogue"]}) + "\n" for r in rows)
        )
    elif problem == "target_modules":
        tree["method"]["target_modules"] = ["q_proj", "q_projj"]
    elif problem == "unknown_task":
        tree["benchmarks"] = {"tasks": ["boolqq"]}
    else:
        tree["template"]["eval_phrasing"] = 9
    worked = []
    monkeypatch.setattr(finetune_module, "evaluate_summaries", lambda *a, **k: worked.append(1))
    with pytest.raises(TunelabError, match=message):
        tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None)
    assert not worked, "the 'before' evaluation ran before the bad input was found"
    assert not (tmp_path / "runs" / "bad").exists()
    result = _cli("train", _cfg_file(tmp_path, tree))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_failure_before_any_checkpoint_leaves_no_directory_blocking_the_rerun(
    tiny_t5_dir, dialogue_files, tmp_path, monkeypatch
):
    import tunelab

    finetune_module = __import__("importlib").import_module("tunelab.recipes.finetuning")
    from tunelab.errors import TrainingError

    def fail(*a, **k):
        raise TrainingError("boom")

    monkeypatch.setattr(finetune_module, "train_model", fail)
    tree = experiment(tiny_t5_dir, dialogue_files, tmp_path, name="again", training={"max_steps": 2})
    with pytest.raises(TrainingError):
        tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None)
    assert not (tmp_path / "runs" / "again").exists()
    monkeypatch.undo()
    assert tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).run_dir.is_dir()


def test_mistyped_alias_or_unreachable_hub_fails_at_once(monkeypatch, tmp_path):
    import time

    from tunelab.errors import ModelError
    from tunelab.models.loading import resolve_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(
        ModelError,
        match=r"'smollm2-135-instruct' is not a built-in alias \(did you mean "
        r"'smollm2-135m-instruct'\?\).*hub cannot be reached",
    ):
        resolve_source("smollm2-135-instruct")
    with pytest.raises(ModelError, match="'google/flan-t5-bass' is not a built-in alias, .*hub cannot be reached"):
        resolve_source("google/flan-t5-bass")
    assert time.perf_counter() - t0 < 5
    # unreachable without offline mode: the probe fails fast too
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ModelError, match="hub cannot be reached"):
        resolve_source("someone/some-model")
    result = _cli("train", "--set", "model.name=smollm2-135-instruct", "--set", f"output_dir={tmp_path}")
    assert result.returncode == 2 and "did you mean 'smollm2-135m-instruct'" in result.stderr
    assert "Traceback" not in result.stderr


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_full_disk_names_the_path_and_keeps_the_previous_checkpoint(tiny_t5_dir, dialogue_files, tmp_path, monkeypatch):
    """A real full device (a small tmpfs filled up after the first checkpoint), not a simulated error."""
    import tunelab
    import tunelab.training.loop as loop
    from tunelab.io import DiskFullError
    from tunelab.training.finite import checkpoint_is_finite

    disk = tmp_path / "disk"
    if not _tmpfs(disk, "8m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        real_save, filler = loop.save_checkpoint, disk / "filler"

        def save_then_fill(folder, *a, **k):
            out = real_save(folder, *a, **k)
            with open(filler, "wb") as f:  # take every byte left
                try:
                    while True:
                        f.write(b"\0" * (1 << 16))
                        f.flush()
                except OSError:
                    pass
            return out

        monkeypatch.setattr(loop, "save_checkpoint", save_then_fill)
        tree = experiment(
            tiny_t5_dir,
            dialogue_files,
            tmp_path,
            name="full-disk",
            output_dir=str(disk / "runs"),
            method={"name": "lora", "r": 4},
            training={"max_steps": 6, "save_every": 2, "precision": "fp32"},
        )
        with pytest.raises(
            DiskFullError,
            match=r"no space left on the device writing checkpoint .*step-4; the "
            r"previous checkpoint .*step-2 is intact",
        ):
            tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None)
        ckpts = disk / "runs" / "full-disk" / "checkpoints"
        assert sorted(p.name for p in ckpts.iterdir()) == ["step-2"] and checkpoint_is_finite(ckpts / "step-2")
        filler.unlink()
        monkeypatch.undo()
        done = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None, resume=True)
        assert (done.run_dir / "COMPLETE").exists()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_second_process_on_the_same_run_directory_fails_at_once(tiny_t5_dir, dialogue_files, tmp_path):
    import time

    tree = experiment(
        tiny_t5_dir,
        dialogue_files,
        tmp_path,
        name="busy",
        training={"max_steps": 100000, "save_every": 1, "precision": "fp32"},
    )
    cfg = _cfg_file(tmp_path, tree)
    first = subprocess.Popen(
        [sys.executable, "-m", "tunelab.cli.main", "train", str(cfg), "--resume"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        owner = tmp_path / "runs" / "busy" / ".lock.owner.json"
        deadline = time.monotonic() + 120
        while not (tmp_path / "runs" / "busy" / "checkpoints").is_dir() and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert json.loads(owner.read_text())["pid"] == first.pid
        t0 = time.monotonic()
        second = _cli("train", cfg, "--resume")
        assert second.returncode == 2
        assert f"is in use by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert time.monotonic() - t0 < 60
    finally:
        first.kill()
        first.wait()


# --- the base model of an adapter is identified by what it is ------------------------------------------


def test_an_adapter_loads_on_its_base_by_any_path_and_not_on_another_model(
    tiny_llama_dir, dialogue_files, tmp_path, monkeypatch
):
    import torch

    import tunelab
    from conftest import make_tokenizer, tiny_llama
    from tunelab.errors import ModelError

    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        name="ident",
        training={"max_steps": 2},
        evaluation={"max_samples": 2, "before": False},
    )
    run = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).run_dir
    adapter = run / "adapter"
    assert json.loads((adapter / "tunelab.json").read_text())["base_fingerprint"]["embedding_sha256"]
    text = json.loads(open(dialogue_files["test"]).readline())["dialogue"]

    def summary(**source):
        return tunelab.summarize(tunelab.open_for_generation(**source), [text], max_new_tokens=8)

    expected = summary(run=run)
    link = tmp_path / "same-model-elsewhere"
    link.symlink_to(tiny_llama_dir, target_is_directory=True)
    monkeypatch.chdir(tiny_llama_dir.parent)
    for name in (str(link), os.path.relpath(tiny_llama_dir)):
        assert summary(model=name, adapter=adapter) == expected
    # same architecture and config, other weights: refused, naming both and what differs
    tok = make_tokenizer()
    other = tiny_llama(len(tok))
    with torch.no_grad():
        other.model.embed_tokens.weight.add_(0.01)
    other.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    with pytest.raises(
        ModelError, match=r"trained on base model .*, not .*other.* \(they differ in embedding_sha256\)"
    ):
        tunelab.open_for_generation(model=str(tmp_path / "other"), adapter=adapter)
    # an adapter written before fingerprints were recorded: matched by resolved path
    meta = json.loads((adapter / "tunelab.json").read_text())
    del meta["base_fingerprint"]
    (adapter / "tunelab.json").write_text(json.dumps(meta))
    assert summary(model=str(link), adapter=adapter) == expected
    with pytest.raises(ModelError, match="trained on base model"):
        tunelab.open_for_generation(model=str(tmp_path / "other"), adapter=adapter)


# --- one config loader for train and compare -----------------------------------------------------------


def test_compare_overrides_switch_methods_as_train_does(tmp_path):
    from tunelab.config.compare import load_compare_config

    base = {"method": {"name": "lora", "r": 4}, "training": {"max_steps": 3}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    cfg = _cfg_file(
        tmp_path,
        {
            "name": "c",
            "experiment": "base.yaml",
            "arms": [{"name": "switched"}, {"name": "own", "method": {"name": "ia3"}}],
        },
        "cmp.yaml",
    )
    arms = {a.name: a.experiment for a in load_compare_config(cfg, ("method.name=full", "training.lr=0.001")).arms}
    assert arms["switched"].method.name == "full" and arms["own"].method.name == "ia3"
    assert arms["switched"].training.lr == arms["own"].training.lr == 0.001
    import tunelab

    assert tunelab.load_config(tmp_path / "base.yaml", ["method.name=full"]).method.name == "full"
    (tmp_path / "base.yaml").unlink()
    result = _cli("compare", cfg)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"tunelab: error: base experiment of {cfg} not found: {tmp_path / 'base.yaml'}"


def test_a_task_file_of_ones_own_reads_data_beside_it_or_by_absolute_path(tmp_path, monkeypatch):
    from tunelab.benchmarks import get_task
    from tunelab.benchmarks.loaders import evaluation_documents
    from tunelab.errors import ConfigError

    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path / "no-data-root"))
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    (folder / "docs.jsonl").write_text(
        "".join(json.dumps({"q": f"question {i}", "label": i % 2}) + "\n" for i in range(10))
    )
    task = {
        "name": "mine",
        "kind": "multiple_choice",
        "loader": "jsonl",
        "path": "docs.jsonl",
        "prompt": "{q}\nAnswer:",
        "choices": [" no", " yes"],
        "label_field": "label",
    }
    (folder / "mine.yaml").write_text(yaml.safe_dump(task))
    assert [d["q"] for d in evaluation_documents(get_task(str(folder / "mine.yaml"), limit=3))] == [
        "question 0",
        "question 1",
        "question 2",
    ]
    (folder / "abs.yaml").write_text(yaml.safe_dump({**task, "path": str(folder / "docs.jsonl")}))
    assert len(evaluation_documents(get_task(str(folder / "abs.yaml"), sample=4))) == 4
    with pytest.raises(ConfigError, match="benchmark task file not found"):
        get_task(str(folder / "missing.yaml"))
    # a task missing what its kind needs is refused when read, naming the file and the field
    (folder / "nolabel.yaml").write_text(yaml.safe_dump({k: v for k, v in task.items() if k != "label_field"}))
    with pytest.raises(ConfigError, match=r"nolabel.yaml: .*multiple_choice task needs label_field"):
        get_task(str(folder / "nolabel.yaml"))


def test_a_later_forgetting_measurement_never_rewrites_what_training_recorded(
    tiny_llama_dir, dialogue_files, tmp_path, dialogsum_dir
):
    import tunelab

    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        name="kept",
        training={"max_steps": 2},
        evaluation={"max_samples": 2, "before": False},
        benchmarks={"tasks": ["sst2", "boolq"], "sample": 8, "bootstrap_samples": 0},
    )
    run = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).run_dir
    recorded = {
        n: (run / n).read_bytes()
        for n in ("benchmarks_before.json", "benchmarks_after.json", "forgetting.json", "forgetting.md", "metrics.json")
    }
    first = tunelab.measure_forgetting(run, ["boolq"], limit=5, show_progress=False)
    second = tunelab.measure_forgetting(run, ["boolq"], limit=5, show_progress=False)
    assert {n: (run / n).read_bytes() for n in recorded} == recorded
    assert Path(first["folder"]) == run / "forgetting-boolq-limit5"
    assert Path(second["folder"]) == run / "forgetting-boolq-limit5-2"
    assert set(json.loads((run / "forgetting-boolq-limit5" / "forgetting.json").read_text())["tasks"]) == {"boolq"}
