"""The command line's stderr: tunelab's notes by default, the libraries' warnings with -v, only warnings with -q;
a closed pipe on stdout is not an error."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from tunelab.cli.main import main


@pytest.mark.parametrize(
    "flags, tunelab_level, library_level",
    [
        ([], logging.INFO, logging.ERROR),
        (["-v"], logging.DEBUG, logging.WARNING),
        (["-q"], logging.WARNING, logging.ERROR),
    ],
)
def test_verbosity_flags_set_tunelab_and_library_levels(flags, tunelab_level, library_level, capsys):
    for position in ("before", "after"):  # `tunelab -v templates list` and `tunelab templates list -v`
        argv = [*flags, "templates", "list"] if position == "before" else ["templates", "list", *flags]
        assert main(argv) == 0
        assert logging.getLogger("tunelab").level == tunelab_level
        assert logging.getLogger("transformers").level == library_level
        assert logging.getLogger("peft").level == library_level
    assert "dialogue_summarization" in capsys.readouterr().out


def test_a_note_goes_to_stderr_unless_quiet(capsys):
    from tunelab.logs import configure_logging, logger

    configure_logging(0)
    logger.info("a note")
    configure_logging(-1)
    logger.info("hidden")
    logger.warning("a warning")
    configure_logging(0)
    err = capsys.readouterr().err
    assert "tunelab: a note" in err and "hidden" not in err and "tunelab: a warning" in err


def test_a_reader_that_leaves_early_is_not_an_error():
    proc = subprocess.run(
        f"{sys.executable} -m tunelab.cli.main tasks | head -1", shell=True, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
