"""Atomic file output: every file tunelab writes appears whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import RunDirError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DiskFullError(RunDirError):
    """No space left on the device while writing `path`."""


def _is_disk_full(error: BaseException, path: Path) -> bool:
    """ENOSPC, or a native writer's failure without an errno (torch.save: "file write failed" /
    "basic_ios::clear"; safetensors: its own error type) on a device with (almost) no space left."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit
        return False
    if "No space left" in str(error):
        return True
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free < (1 << 20)
    except OSError:
        return False


def _disk_full(path: Path, what: str, kept: str = "") -> DiskFullError:
    return DiskFullError(f"no space left on the device writing {what} {path}" + (f"; {kept}" if kept else ""))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def default_file_mode() -> int:
    """The mode a plain open() would give a new file (temporary files are created 0600 whatever the umask)."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    return 0o777 & ~_umask()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = _is_disk_full(e, path)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise _disk_full(path, "file", "the previous version of the file is intact") from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_write_yaml(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def atomic_replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written `staging` folder to `final`, replacing an older `final` only after success."""
    final = Path(final)
    if final.exists():
        trash = final.with_name(f".{final.name}.old")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync_dir(final.parent)


@contextmanager
def staged_dir(final: Path, what: str, kept: str = "") -> Iterator[Path]:
    """A folder written in full under a temporary name, then renamed to `final` (an older `final` is replaced
    only after success). On failure the temporary folder is removed, and a full disk becomes a DiskFullError
    naming `final` and what is still intact (`kept`). A kill leaves the temporary folder, never a torn `final`."""
    stage = staging_dir(final)
    try:
        yield stage
        atomic_replace_dir(stage, final)
    except BaseException as e:
        full = not isinstance(e, DiskFullError) and _is_disk_full(e, stage)
        shutil.rmtree(stage, ignore_errors=True)
        if full:
            raise _disk_full(final, what, kept) from None
        raise


def staging_dir(final: Path) -> Path:
    """A fresh temporary folder beside `final`, for writing a folder that appears by rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    stage.chmod(default_dir_mode())
    return stage
