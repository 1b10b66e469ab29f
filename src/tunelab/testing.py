"""Hooks for tunelab's own crash tests. Production code marks the places where a crash is most damaging with
`fault_point(name, step)`; a test sets `TUNELAB_FAULT=<name>:<step>` in a child process's environment and that
process is killed (SIGKILL: no cleanup, no `finally`) exactly there. Without the variable a fault point is a
dictionary lookup.

Fault points: `checkpoint-write` (inside a checkpoint's staging folder, between two files) and
`after-checkpoint` (right after checkpoint N is complete).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "TUNELAB_FAULT"


def fault_point(name: str, step: int) -> None:
    if os.environ.get(FAULT_ENV) == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
