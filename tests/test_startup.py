"""Light start: help, config validation and the task list import no torch, transformers or peft."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "transformers", "peft", "accelerate")


@pytest.mark.parametrize(
    "code",
    [
        "from tunelab.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from tunelab.cli.main import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass",
        "import tunelab\ntunelab.load_config('configs/dialogsum_lora.yaml', ['method.name=qlora'])",
        "from tunelab.config.compare import load_compare_config\nload_compare_config('configs/compare_dialogsum.yaml')",
        "from tunelab.cli.main import main\nmain(['tasks'])",
    ],
)
def test_light_commands_import_no_heavy_library(code):
    probe = code + "\nimport sys\nprint(sorted(m for m in " + repr(HEAVY) + " if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


def test_a_bad_config_is_reported_without_heavy_imports(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  batch_sise: 8\n")
    probe = (
        "import sys, tunelab\ntry:\n    tunelab.load_config(sys.argv[1])\nexcept tunelab.ConfigError as e:\n"
        "    print(e)\nprint(sorted(m for m in " + repr(HEAVY) + " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "training.batch_sise: unknown key" in out.stdout and out.stdout.strip().endswith("[]")


def test_data_preview_imports_no_heavy_library(tiny_llama_chat_dir, dialogue_files, tmp_path):
    import yaml

    from conftest import experiment

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(experiment(tiny_llama_chat_dir, dialogue_files, tmp_path)))
    probe = (
        "import sys\nfrom tunelab.cli.main import main\nassert main(['data', 'preview', sys.argv[1], '-n', '1']) == 0\n"
        "print(sorted(m for m in " + repr(HEAVY) + " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trained" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-800:]


@pytest.mark.parametrize(
    "package", ["tunelab", "tunelab.data", "tunelab.models", "tunelab.benchmarks", "tunelab.recipes"]
)
def test_lazy_names_do_not_collide_with_submodules(package):
    """A lazily exported name equal to a submodule's name would become the submodule once that is imported."""
    import importlib
    import pkgutil

    module = importlib.import_module(package)
    submodules = {m.name for m in pkgutil.iter_modules(module.__path__)}
    assert not set(module._LAZY) & submodules
