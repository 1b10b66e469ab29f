"""tunelab's log: notes and progress go to stderr through the `tunelab` logger; results go to stdout.

Third-party libraries (transformers, accelerate, peft, bitsandbytes) are quiet by default, errors only, because
their routine warnings drown the results; `--verbose` shows their warnings and tunelab's debug notes, `--quiet`
leaves only warnings and errors.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("tunelab")
LIBRARIES = ("transformers", "accelerate", "peft", "bitsandbytes", "datasets")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (a notebook or a test may replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbosity: int = 0) -> None:
    """verbosity -1: warnings only; 0: tunelab's notes, libraries' errors; 1: debug and the libraries' warnings."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("tunelab: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    library_level = logging.WARNING if verbosity > 0 else logging.ERROR
    # read by transformers when it is first imported, so the libraries need not be imported here
    os.environ["TRANSFORMERS_VERBOSITY"] = "warning" if verbosity > 0 else "error"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
    if verbosity <= 0:
        import warnings

        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
