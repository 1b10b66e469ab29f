"""Where tunelab looks for local data and keeps its cache. Both are set by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "TUNELAB_DATA_DIR"
CACHE_DIR_ENV = "TUNELAB_CACHE"


def data_root() -> Path | None:
    """The folder of offline datasets: $TUNELAB_DATA_DIR, else `../shared/data` or `shared/data` seen from the cwd."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    for candidate in (Path.cwd() / ".." / "shared" / "data", Path.cwd() / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def cache_root() -> Path:
    """$TUNELAB_CACHE, else ~/.cache/tunelab."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tunelab"
