"""The README's commands run as written, in the order written, after a stand-in for `make demo`.

The workspace holds the repository's own configs, shrunk to a tiny byte-level-BPE Llama (so `export` works)
and a few examples of the same data; `--model smollm2-135m-instruct` is pointed at that tiny model. Every
fenced `bash` line starting with `tunelab` runs through the CLI (stdin redirects honoured), shell helper lines
(`printf`) run in bash, the Python block runs too; lines that start a server or other programs are left to the
tests named in SKIP. Afterwards no file the demo wrote into an arm's folder has changed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import bpe_tokenizer, tiny_llama

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# command prefix -> why the README test does not run it (and where it is tested instead)
SKIP = {
    "make ": "the test command itself",
    "source ": "the test runs inside the virtual environment already",
    "tunelab serve": "serves until stopped: tests/test_serving.py",
    ".venv/bin/tunelab serve": "serves until stopped: tests/test_serving.py",
    "torchrun": "two processes: tests/test_distributed.py",
    "curl": "needs a running server: tests/test_serving.py",
    "vllm": "vLLM is not installed here (no GPU)",
    "ollama": "Ollama is not installed here; the Modelfile is checked in tests/test_export.py",
    "llama-": "llama.cpp binaries are not installed here; llama.cpp itself runs in tests/test_export_llamacpp.py",
    "CMAKE_ARGS": "builds llama.cpp (make test-llamacpp)",
}
SHELL = ("printf ", "python3 -c ")


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def readme_commands() -> list[str]:
    """Each shell command of the README's bash blocks (continuation lines and multi-line quotes joined)."""
    commands = []
    for block in fenced_blocks("bash"):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            if pending.strip() and not pending.lstrip().startswith("#"):
                commands.append(pending.strip())
            pending = ""
    return commands


def _shrink(config: Path, tiny: Path) -> None:
    tree = yaml.safe_load(config.read_text())
    experiment = tree.get("experiment", tree)
    experiment["model"]["name"] = str(tiny)
    experiment["data"].update(max_train_samples=16, max_eval_samples=4)
    experiment["template"].update(max_input_tokens=96, max_target_tokens=24)
    experiment["training"].update(max_steps=3, batch_size=4, eval_every=0)
    experiment["evaluation"].update(max_samples=4, batch_size=4, max_new_tokens=8)
    if "benchmarks" in experiment:
        experiment["benchmarks"].update(sample=8)
    config.write_text(yaml.safe_dump(tree, sort_keys=False))


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _run(line: str, workspace: Path, tiny: Path, monkeypatch) -> int:
    from tunelab.cli.main import main

    line = line.replace("--model smollm2-135m-instruct", f"--model {tiny}").removeprefix(".venv/bin/")
    if line.startswith(SHELL):
        return subprocess.run(["bash", "-c", line], cwd=workspace).returncode
    argv = shlex.split(line, comments=True)
    assert argv[0] == "tunelab", f"README line runs neither tunelab nor a known helper: {line}"
    argv = argv[1:]
    if "<" in argv:
        i = argv.index("<")
        monkeypatch.setattr(sys, "stdin", open(workspace / argv[i + 1], encoding="utf-8"))
        argv = argv[:i] + argv[i + 2 :]
    return main(argv)


def test_readme_commands_work_as_written_and_change_no_earlier_result(dialogsum_dir, tmp_path, monkeypatch):
    from tunelab.cli.main import main

    workspace = tmp_path / "repo"
    shutil.copytree(ROOT / "configs", workspace / "configs")
    tok = bpe_tokenizer()
    tiny = tmp_path / "tiny-model"
    tiny_llama(len(tok)).save_pretrained(tiny)
    tok.save_pretrained(tiny)
    for config in (workspace / "configs").glob("*.yaml"):
        _shrink(config, tiny)
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(dialogsum_dir.parent))
    monkeypatch.chdir(workspace)

    assert main(["compare", "configs/compare_dialogsum.yaml"]) == 0  # what `make demo` runs
    demo = workspace / "runs" / "dialogsum-compare"
    arms = {arm.name: _hashes(arm) for arm in demo.iterdir() if arm.is_dir()}
    assert set(arms) == {"zero-shot", "lora", "prompt-tuning", "full"}

    ran, skipped = [], []
    for line in readme_commands():
        reason = next((why for prefix, why in SKIP.items() if line.startswith(prefix)), None)
        if reason:
            skipped.append(line)
            continue
        assert _run(line, workspace, tiny, monkeypatch) == 0, f"README command failed: {line}"
        ran.append(line)
    for block in fenced_blocks("python"):
        if "127.0.0.1" in block:  # a client of a running server: tests/test_serving.py
            continue
        exec(compile(block, "README.md (python block)", "exec"), {})

    assert len(ran) >= 15, ran  # the parser found the commands
    assert (workspace / "exported-lora" / "model.gguf").is_file() and (workspace / "merged-lora").is_dir()
    assert list((demo / "lora").glob("forgetting-mmlu+boolq-limit50*"))
    assert main(["report", "runs/dialogsum-compare"]) == 0  # lists the later evaluations of each arm
    report = (demo / "report.md").read_text()
    later = report.split("### Later evaluations", 1)[1]
    for folder in ("eval-test", "benchmarks-mmlu+boolq+sst2-sample100", "forgetting-mmlu+boolq-limit50"):
        assert f"| lora | {folder} " in later, folder
    for arm, before in arms.items():
        after = _hashes(demo / arm)
        changed = [f for f, digest in before.items() if after.get(f) != digest]
        assert not changed, f"README commands changed {arm}'s {changed}"


def _readme_numbers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "bench" / "readme_numbers.py")
    numbers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(numbers)
    return numbers


def test_readme_numbers_are_rendered_from_the_committed_results():
    """The generated regions of README.md equal what bench/readme_numbers.py renders from bench/results/."""
    numbers = _readme_numbers()
    text = README.read_text(encoding="utf-8")
    regions = re.findall(r"<!-- numbers:(\w+) -->", text)
    assert set(regions) == set(numbers.RENDERERS), regions
    assert numbers.rendered_readme(text) == text, "README numbers drifted: run python bench/readme_numbers.py"


def test_the_readme_study_table_is_the_committed_studys():
    """bench/results/study.json (the README's first table) holds what results/dialogsum-study holds: the headline
    rows rebuilt from the arms' metrics, the claims as the study's own report judged them."""
    numbers = _readme_numbers()
    collected = json.loads((ROOT / "bench" / "results" / "study.json").read_text())
    claims = collected.pop("claims")
    assert numbers.collect_study(numbers.STUDY, claims=False) == collected, (
        "run bench/readme_numbers.py --collect-study"
    )
    report = (numbers.STUDY / "report.md").read_text()
    assert claims.splitlines()[2:] and all(row in report for row in claims.splitlines()[2:])
