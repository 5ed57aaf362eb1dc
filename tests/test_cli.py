"""The command line's output: whose log lines show, and progress without a terminal."""

from __future__ import annotations

import logging
import os

from hf_mixture._progress import VERBOSE_ENV, progress_bar
from hf_mixture.cli import _configure_output


def test_third_party_info_is_quiet_by_default_and_shown_with_verbose(monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, "0")  # restored afterwards: -v sets it for the workers
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    monkeypatch.setattr(logging.getLogger("hf_mixture"), "level", logging.NOTSET)
    _configure_output(verbose=False)
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    assert logging.getLogger("hf_mixture.search").isEnabledFor(logging.INFO)
    assert not logging.getLogger("hf_mixture.search").isEnabledFor(logging.DEBUG)
    _configure_output(verbose=True)
    assert os.environ[VERBOSE_ENV] == "1"
    assert logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    assert logging.getLogger("hf_mixture.search").isEnabledFor(logging.DEBUG)


def test_progress_without_a_terminal_is_plain_lines(capsys):
    bar = progress_bar(2, "proxy runs", "run")
    bar.set_postfix_str("r1-000 target 7.1")
    bar.update(1)
    bar._show()  # what the redraw thread does every second
    bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    first, last = err.splitlines()
    assert first.startswith("proxy runs: 1/2 runs (50%), ") and " ETA " in first
    assert first.endswith(" [r1-000 target 7.1]")
    assert last.startswith("proxy runs: 2 runs in ") and last.endswith(" [r1-000 target 7.1]")
