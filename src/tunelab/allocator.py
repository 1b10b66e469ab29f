"""The memory allocator of the processes that load models: mimalloc where it is installed (Linux), else the C library's.

glibc's malloc serves a training step's thousands of tensors of many sizes from one heap that fragments: in an eager
LoRA step on SmolLM2-135M, 0.6 GiB of live tensors left a 1.4 GiB heap with 1.2 GiB free in 16,000 holes, and the
process peaked near 2.4 GiB; under mimalloc the same step peaked at 1.7 GiB with the same losses, and QLoRA (whose
bitsandbytes base dequantizes per product) went from 3.3 to 1.4 GiB (bench/results/methods.md, allocator rows).

A process cannot change its allocator once it runs, so tunelab's commands that load a model start again once, at
the top of `main`, with the library preloaded (`LD_PRELOAD`, the only way to replace malloc for torch's and
bitsandbytes' native code too). Processes they start (torchrun / accelerate workers) inherit it. Notebook users get
it by starting Jupyter with `preload_env()`'s variables (`tunelab env --preload` prints them).
`TUNELAB_ALLOCATOR=system` keeps the C library's allocator.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from tunelab.errors import ConfigError

ENV_VAR = "TUNELAB_ALLOCATOR"
CHOICES = ("mimalloc", "system")
# mimalloc hands freed memory back to the OS after 10 ms by default, so a buffer freed and needed again within a
# training step is unmapped and faulted in again; 1 s keeps a step's working set and still returns memory between
# phases (`release_freed_memory` forces it). Measured: full fine-tuning steps 10.2 / 6.7 s at 10 ms, 6.0 s at 1 s.
PURGE_DELAY_MS = "1000"


def requested_allocator() -> str:
    value = os.environ.get(ENV_VAR, "mimalloc").strip().lower() or "mimalloc"
    if value not in CHOICES:
        raise ConfigError(f"{ENV_VAR}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


@lru_cache(maxsize=1)
def mimalloc_library() -> Path | None:
    """The shared library of the `cmeel-mimalloc` package, None where it is not installed (or not on Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        files = metadata.distribution("cmeel-mimalloc").files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "libmimalloc.so":
            path = Path(str(f.locate()))
            return path if path.is_file() else None
    return None


def preload_env(environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment a process needs to run on mimalloc (`environ` or os.environ, with LD_PRELOAD and mimalloc's
    purge delay added), or None where mimalloc is not wanted, not available, or already preloaded."""
    environ = dict(os.environ if environ is None else environ)
    lib = mimalloc_library()
    if requested_allocator() != "mimalloc" or lib is None:
        return None
    preloaded = environ.get("LD_PRELOAD", "")
    if "libmimalloc" in preloaded:
        return None
    environ["LD_PRELOAD"] = f"{lib}:{preloaded}" if preloaded else str(lib)
    environ.setdefault("MIMALLOC_PURGE_DELAY", PURGE_DELAY_MS)
    return environ


def restart_with_allocator() -> None:
    """Replace this process by the same command running on mimalloc; returns only where that is not needed or not
    possible. Call it before anything has been done that must not happen twice."""
    env = preload_env()
    if env is None or active_allocator() == "mimalloc":
        return
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:  # e.g. an interpreter path that cannot be executed again: carry on with the C library's malloc
        return


def active_allocator() -> str:
    """`mimalloc` where this process runs on it, else the C library's (`glibc` or `system`)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            if any("libmimalloc" in line for line in f):
                return "mimalloc"
    except OSError:
        pass
    import platform

    return "glibc" if platform.libc_ver()[0] == "glibc" else "system"
