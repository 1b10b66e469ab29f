"""The `tunelab` program runs the commands that load models on mimalloc (tunelab/allocator.py), hands its freed
memory back between phases, and keeps the C library's allocator when asked to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.allocator import mimalloc_library, preload_env
from tunelab.errors import ConfigError

needs_mimalloc = pytest.mark.skipif(mimalloc_library() is None, reason="cmeel-mimalloc not installed (or not Linux)")
TUNELAB = Path(sys.executable).parent / "tunelab"


def _env_command(env_overrides: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TUNELAB_ALLOCATOR")}
    out = subprocess.run(
        [str(TUNELAB), "env"], env={**env, **env_overrides}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@needs_mimalloc
@pytest.mark.skipif(not TUNELAB.is_file(), reason="the tunelab program is not installed beside this interpreter")
def test_the_program_restarts_on_mimalloc_unless_the_system_allocator_is_asked_for():
    assert _env_command({})["allocator"] == "mimalloc"
    assert _env_command({"TUNELAB_ALLOCATOR": "system"})["allocator"] == "glibc"


@needs_mimalloc
def test_preload_env_adds_the_library_and_keeps_what_the_user_set(monkeypatch):
    monkeypatch.delenv("TUNELAB_ALLOCATOR", raising=False)
    env = preload_env({"LD_PRELOAD": "/opt/other.so", "MIMALLOC_PURGE_DELAY": "50", "HOME": "/h"})
    assert env is not None
    assert env["LD_PRELOAD"] == f"{mimalloc_library()}:/opt/other.so"
    assert env["MIMALLOC_PURGE_DELAY"] == "50" and env["HOME"] == "/h"
    assert preload_env(env) is None  # already preloaded: nothing to restart for
    monkeypatch.setenv("TUNELAB_ALLOCATOR", "system")
    assert preload_env({}) is None


def test_an_unknown_allocator_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("TUNELAB_ALLOCATOR", "jemallocc")
    with pytest.raises(ConfigError, match=r"TUNELAB_ALLOCATOR='jemallocc': expected one of mimalloc, system"):
        preload_env({})


@needs_mimalloc
def test_mimalloc_hands_freed_memory_back_between_phases():
    """mimalloc keeps freed memory for its purge delay (1 s), so a phase boundary must force it back: without that
    the next phase's peak would start from this one's leftovers."""
    probe = (
        "import psutil\nfrom tunelab.allocator import active_allocator\n"
        "from tunelab.training.memory import release_freed_memory\n"
        "p = psutil.Process()\nassert active_allocator() == 'mimalloc'\n"
        "blocks = [bytearray(b'\\1' * 4194304) for _ in range(96)]\ndel blocks\n"
        "held = p.memory_info().rss\nassert not release_freed_memory(collect=False)  # per step: left to mimalloc\n"
        "kept = p.memory_info().rss\nassert release_freed_memory()\n"
        "print(held - kept, kept - p.memory_info().rss)"
    )
    env = preload_env() or dict(os.environ)  # None: this interpreter runs on mimalloc already
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    per_step, at_boundary = map(int, out.stdout.split())
    assert per_step < 64 * 2**20 and at_boundary > 300 * 2**20, (per_step, at_boundary)
