"""Progress: plain lines in a log, task counters summed across processes, quiet libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hf_mixture import _progress
from hf_mixture._progress import TaskCounter, progress_bar, stage_progress


@pytest.fixture
def fast(monkeypatch):
    """Counters written at every update, polled every 0.05 s, a log line at least every 0.1 s."""
    monkeypatch.setattr(_progress, "COUNTER_SECONDS", 0.0)
    monkeypatch.setattr(_progress, "POLL_SECONDS", 0.05)
    monkeypatch.setenv(_progress.LOG_SECONDS_ENV, "0.1")


def test_log_lines_at_each_tenth_and_a_last_line(capsys):
    with progress_bar(20, "tokenize", "doc") as bar:
        for _ in range(20):
            bar.update(1, tokens=100)
            bar._show()  # what the redraw thread does every second
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    # a line at 10%, 20%, ..., 90% (100% is the last line's), then the total
    assert [line.split(" docs")[0] for line in lines[:-1]] == [
        f"tokenize: {n}/20" for n in range(2, 20, 2)]
    assert "docs/s" in lines[0] and "ETA" in lines[0] and lines[0].endswith("[200 tokens]")
    assert lines[-1].startswith("tokenize: 20 docs in ") and lines[-1].endswith("[2.0k tokens]")


def test_a_stalled_bar_still_prints_a_line_every_few_seconds(fast, capsys):
    bar = progress_bar(None, "cluster [4/8] centroids", None)
    time.sleep(0.5)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3, lines
    assert all(line.startswith("cluster [4/8] centroids: running, ") for line in lines[:-1])
    assert lines[-1].startswith("cluster [4/8] centroids: ") and "running" not in lines[-1]


def test_disabled_bar_prints_nothing(capsys):
    with progress_bar(3, "x", "doc", enabled=False) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_task_counters_are_summed_and_stale_ones_dropped(fast, tmp_path, capsys):
    work = tmp_path / "work"
    (work / "logs" / "assign" / "completions").mkdir(parents=True)
    folder = _progress.counter_dir(work, "assign")
    # task 0 finished in an earlier run (its completion marker exists): its count stays;
    # task 2 was interrupted: its half count is dropped, the task starts again from 0
    done = TaskCounter(folder, 0)
    done.update(40)
    done.close()
    (work / "logs" / "assign" / "completions" / "00000").touch()
    stale = TaskCounter(folder, 2)
    stale.update(25)
    stale.close()
    with stage_progress("cluster [5/8] assign", "doc", 100, work, "assign") as bar:
        assert bar.n == 40
        counters = [TaskCounter(folder, 1), TaskCounter(folder, 2)]
        for step in range(3):
            for c in counters:
                c.update(10, tokens=5)
            time.sleep(0.15)
            assert bar.n == 40 + 20 * (step + 1)
        assert bar.extra == {"tokens": 30}
        for c in counters:
            c.close()
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("cluster [5/8] assign: 100 docs in ")
    # the counts shown while it ran went up
    shown = [int(line.split(": ")[1].split("/")[0]) for line in err[:-1]]
    assert shown == sorted(shown) and shown[0] >= 40 and len(set(shown)) >= 2


def test_a_finished_stage_short_of_its_upper_bound_ends_at_its_count(tmp_path, capsys):
    work = tmp_path / "work"
    with stage_progress("cluster [3/8] prepare", "doc", 10, work, "prepare") as bar:
        c = TaskCounter(_progress.counter_dir(work, "prepare"), 0)
        c.update(8)  # two of the 10 input rows were duplicates
        c.close()
    assert bar.total == 8
    assert capsys.readouterr().err.splitlines()[-1].startswith("cluster [3/8] prepare: 8 docs in")


def test_a_counter_file_is_never_half_written(tmp_path):
    c = TaskCounter(tmp_path, 3)
    c.update(7, tokens=9)
    c.close()
    assert json.loads((tmp_path / "00003.json").read_text()) == {
        "n": 7, "extra": {"tokens": 9}, "done": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00003.json"]  # no temporary left


def test_counter_updates_cost_well_under_a_microsecond_each(tmp_path):
    """A task updates its counter once per batch of documents: far below 1% of its time."""
    c = TaskCounter(tmp_path, 0)
    n = 200_000
    start = time.perf_counter()
    for _ in range(n):
        c.update(1)
    per_update = (time.perf_counter() - start) / n
    c.close()
    assert per_update < 20e-6, per_update  # measured ~0.3 us; loose for a loaded machine


_QUIET = """
import json, os, sys
import transformers, datasets
from tqdm import tqdm
from hf_mixture._progress import Progress, quiet_third_party
quiet_third_party()
from transformers.utils import logging as tlog
ours = Progress(3, "ours", "doc", terminal=True)
ours_disabled = ours._tqdm.disable  # (tqdm sets it when the bar closes)
ours.close()
print(json.dumps({
    "transformers_bars": tlog.is_progress_bar_enabled(),
    "transformers_level": tlog.get_verbosity(),
    "datasets_bars": datasets.is_progress_bar_enabled(),
    "third_party_tqdm_disabled": tqdm(range(2)).disable,
    "ours_disabled": ours_disabled,
    "children_env": {k: os.environ.get(k) for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS",
                                                    "HF_DATASETS_DISABLE_PROGRESS_BARS")},
}))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_other_libraries_bars_are_off_at_their_source_unless_verbose(verbose):
    env = {k: v for k, v in os.environ.items()
           if k not in _progress.QUIET_ENV and k != _progress.VERBOSE_ENV}
    if verbose:
        env[_progress.VERBOSE_ENV] = "1"
    proc = subprocess.run([sys.executable, "-c", _QUIET], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ours_disabled"] is False
    assert got["transformers_bars"] is verbose
    assert got["datasets_bars"] is verbose
    assert got["third_party_tqdm_disabled"] is (not verbose)
    assert (got["transformers_level"] == 40) is (not verbose)  # logging.ERROR
    assert all((v == "1") is (not verbose) for v in got["children_env"].values()), got


def test_ray_init_is_quiet_unless_verbose(monkeypatch):
    monkeypatch.delenv(_progress.VERBOSE_ENV, raising=False)
    assert _progress.ray_init_options()["log_to_driver"] is False
    monkeypatch.setenv(_progress.VERBOSE_ENV, "1")
    assert _progress.ray_init_options() == {}
