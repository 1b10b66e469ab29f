"""End to end on tiny models: `finetune` writes a complete run directory; the CLI wraps the same API."""

import json

import pytest
import torch
import yaml

import tunelab
from conftest import experiment
from tunelab.cli.main import main
from tunelab.errors import ModelError, RunDirError


@pytest.fixture
def lora_run(tiny_llama_chat_dir, dialogue_files, tmp_path):
    tree = experiment(
        tiny_llama_chat_dir,
        dialogue_files,
        tmp_path,
        method={"name": "lora", "r": 8, "dropout": 0.0, "target_modules": "all-linear"},
        training={"eval_every": 10},
    )
    return tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None)


def test_finetune_writes_a_complete_run_directory(lora_run):
    run = lora_run.run_dir
    for name in (
        "config.yaml",
        "metrics.json",
        "predictions.jsonl",
        "predictions_before.jsonl",
        "COMPLETE",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/tunelab.json",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"before", "after", "training", "cost", "protocol"}
    assert metrics["chat_template"] is True
    assert "use_stemmer=True" in metrics["protocol"]["rouge"]
    assert metrics["after"]["bleu"]["signature"].startswith("nrefs:")
    for key in ("precision", "recall", "f1", "f1_ci95"):
        assert key in metrics["after"]["rouge"]["rouge1"]
    losses = [loss for _, loss in metrics["training"]["train_loss"]]
    assert losses[-1] < losses[0]
    assert len(metrics["training"]["eval_loss"]) == 3  # steps 10, 20 and the end
    assert metrics["training"]["regularization"] == {"kind": "none"}
    assert metrics["cost"]["trainable_parameters"] < metrics["cost"]["total_parameters"]
    assert metrics["cost"]["artefact_bytes"] < metrics["cost"]["full_checkpoint_bytes"]
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and {"id", "prediction", "references", "rouge"} <= preds[0].keys()
    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["name"] == "lora"


def test_training_improves_rouge_on_the_synthetic_task(lora_run):
    m = lora_run.metrics
    assert m["after"]["rouge"]["rouge1"]["f1"] > m["before"]["rouge"]["rouge1"]["f1"] + 20


def test_an_existing_run_directory_is_never_overwritten(lora_run):
    cfg = tunelab.load_config(lora_run.run_dir / "config.yaml")
    before = (lora_run.run_dir / "metrics.json").read_bytes()
    with pytest.raises(RunDirError, match="already holds a finished run"):
        tunelab.finetune(cfg, show_progress=False, echo=None)
    assert (lora_run.run_dir / "metrics.json").read_bytes() == before


def test_evaluate_a_run_reproduces_its_metrics(lora_run):
    out, metrics = tunelab.evaluate(lora_run.run_dir)
    assert out == lora_run.run_dir / "eval-test"
    assert metrics["rouge"]["rouge1"]["f1"] == pytest.approx(lora_run.metrics["after"]["rouge"]["rouge1"]["f1"])
    assert (out / "predictions.jsonl").is_file()


def test_generate_with_a_run_and_with_base_plus_adapter(lora_run, tiny_llama_chat_dir, dialogue_files):
    text = json.loads(open(dialogue_files["test"]).readline())["dialogue"]
    from_run = tunelab.summarize(tunelab.open_for_generation(run=lora_run.run_dir), [text])
    from_adapter = tunelab.summarize(
        tunelab.open_for_generation(model=str(tiny_llama_chat_dir), adapter=lora_run.run_dir / "adapter"), [text]
    )
    assert from_run == from_adapter and from_run[0]


def test_adapter_on_another_base_model_names_both(lora_run, tiny_t5_dir):
    with pytest.raises(ModelError, match=r"trained on base model .*tiny-llama-chat.*not .*tiny-t5"):
        tunelab.open_for_generation(model=str(tiny_t5_dir), adapter=lora_run.run_dir / "adapter")


def test_full_finetuning_seq2seq_end_to_end(tiny_t5_dir, dialogue_files, tmp_path):
    tree = experiment(tiny_t5_dir, dialogue_files, tmp_path, method={"name": "full"})
    result = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None)
    assert (result.run_dir / "model" / "model.safetensors").is_file()
    assert result.metrics["arch"] == "seq2seq"
    assert result.metrics["cost"]["trainable_percent"] == pytest.approx(100.0)
    out, metrics = tunelab.evaluate(result.run_dir)
    assert metrics["rouge"]["rouge1"]["f1"] == pytest.approx(result.metrics["after"]["rouge"]["rouge1"]["f1"])


def test_same_config_and_seed_give_identical_metrics(tiny_t5_dir, dialogue_files, tmp_path):
    runs = []
    for name in ("a", "b"):
        tree = experiment(
            tiny_t5_dir,
            dialogue_files,
            tmp_path,
            name=name,
            method={"name": "lora", "r": 4, "dropout": 0.1},
            training={"max_steps": 8},
        )
        runs.append(tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).metrics)
    assert runs[0]["training"]["train_loss"] == runs[1]["training"]["train_loss"]
    assert runs[0]["after"]["rouge"] == runs[1]["after"]["rouge"]
    # what the numbers depend on besides the config is recorded with them
    env = runs[0]["environment"]
    from tunelab.models.precision import resolve_precision

    assert (
        env["precision"]["training"]
        == resolve_precision("auto", torch.device("cpu"))
        == runs[0]["training"]["precision"]
    )
    assert env["cpu"]["model"] and env["torch_threads"] == torch.get_num_threads()
    assert env["packages"]["torch"] == torch.__version__


# ---- CLI -------------------------------------------------------------------------------------------


def _write_config(tmp_path, tree):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_cli_train_eval_generate(tiny_t5_dir, dialogue_files, tmp_path, capsys):
    cfg = _write_config(
        tmp_path, experiment(tiny_t5_dir, dialogue_files, tmp_path, method={"name": "lora", "r": 4, "dropout": 0.0})
    )
    assert main(["train", str(cfg), "--set", "training.max_steps=5", "--set", "name=cli"]) == 0
    out = capsys.readouterr().out
    assert "rouge1 F1" in out and "trainable parameters" in out
    run = tmp_path / "runs" / "cli"
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["max_steps"] == 5
    assert main(["eval", str(run), "--max-samples", "3"]) == 0
    assert json.loads((run / "eval-test" / "metrics.json").read_text())["examples"] == 3
    dialogue = tmp_path / "d.txt"
    dialogue.write_text("#person1#: hi , anna here . i want to buy a red car .")
    assert main(["generate", "--run", str(run), "--file", str(dialogue), "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip()


def test_cli_errors_are_one_clear_line(tmp_path, capsys, dialogue_files, tiny_t5_dir):
    cfg = _write_config(tmp_path, {"training": {"batch_sise": 2}})
    assert main(["train", str(cfg)]) == 2
    assert "training.batch_sise: unknown key" in capsys.readouterr().err
    cfg = _write_config(tmp_path, experiment(tmp_path / "no-such-model", dialogue_files, tmp_path))
    assert main(["train", str(cfg)]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad_files = {**dialogue_files, "train": str(tmp_path / "missing.jsonl")}
    cfg = _write_config(tmp_path, experiment(tiny_t5_dir, bad_files, tmp_path, name="x2", evaluation={"before": False}))
    assert main(["train", str(cfg)]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert main(["generate", "--run", str(tmp_path)]) == 2
    assert "not a tunelab run directory" in capsys.readouterr().err


def test_eval_cli_on_a_config_and_benchmarks_on_a_run(
    lora_run, tiny_llama_chat_dir, dialogue_files, tmp_path, capsys, dialogsum_dir
):
    cfg = _write_config(tmp_path, experiment(tiny_llama_chat_dir, dialogue_files, tmp_path, name="base-only"))
    assert main(["eval", str(cfg), "--max-samples", "2"]) == 0
    base = tmp_path / "runs" / "base-only"
    assert json.loads((base / "metrics.json").read_text())["base"]["examples"] == 2
    assert (base / "COMPLETE").exists()

    assert main(["eval", str(cfg), "--set", "name=base-bench", "--tasks", "sst2,copa", "--limit", "3"]) == 0
    bench = tmp_path / "runs" / "base-bench"
    results = json.loads((bench / "benchmarks.json").read_text())
    assert set(results) == {"sst2", "copa"} and all(r["n"] == 3 for r in results.values())
    assert yaml.safe_load((bench / "config.yaml").read_text())["benchmarks"]["limit"] == 3

    assert main(["eval", str(lora_run.run_dir), "--tasks", "sst2", "--limit", "4"]) == 0
    assert json.loads((lora_run.run_dir / "benchmarks-sst2-limit4" / "benchmarks.json").read_text())["sst2"]["n"] == 4
    assert "| sst2" in capsys.readouterr().out
    assert main(["eval", str(lora_run.run_dir), "--tasks", "sst2", "--limit", "3"]) == 0  # a rerun: a new folder
    assert main(["eval", str(lora_run.run_dir), "--tasks", "sst2", "--limit", "3"]) == 0
    assert json.loads((lora_run.run_dir / "benchmarks-sst2-limit3-2" / "benchmarks.json").read_text())["sst2"]["n"] == 3
    assert not (lora_run.run_dir / "benchmarks.json").exists()
