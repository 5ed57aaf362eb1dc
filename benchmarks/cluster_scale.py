"""Clustering at scale: peak memory and docs/s as the corpus grows, and 1 vs 2 workers.

Builds corpora of ``base x scale`` documents of real text by recombining playground
passages (two passages of one source per document, seeded), then runs the whole
``cluster_corpus`` pipeline on the datatrove local executor with the model-free
``hashing`` embedder (MiniLM's quality is measured by benchmarks/clustering.py; here
the question is whether memory stays flat and tasks scale).  Peak memory is the
largest sum of the resident sets of this process and every worker it started,
sampled every 0.1 s (benchmarks/peak_memory.py).

``--executor local slurm`` also clusters each corpus on a real single-node Slurm (the same
``cluster_corpus`` call with ``ExecutorConfig(executor="slurm")``: one job array per stage,
chained with ``afterok``; 2 tasks at a time, one CPU each, like the 2 local workers).  The
Slurm of ``SLURM_CONF`` is used when it answers; otherwise ``scripts/local_slurm.sh`` starts
one (as root) for the run and stops it at the end.  A Slurm row's time runs from the call to
the moment the chain's last stage has written the corpus and released its lock; its peak
memory also counts the processes of the Slurm jobs (every ``slurmstepd``'s descendants: batch
script, ``srun``, task), which are not this process's descendants, and never the Slurm
daemons -- on this machine only (a multi-node SLURM_CONF's jobs elsewhere are not seen), and
every Slurm job running here, so run it with no other Slurm jobs on the machine.  Its stage timings are the spans of the stages' tasks (first task start to last
task end, from datatrove's task logs and completion markers); ``outside_stages`` is the
rest of its time (submitting, the scheduler starting each stage's jobs).

    python benchmarks/cluster_scale.py                      # 62.5k, 250k and 1M documents
    python benchmarks/cluster_scale.py --base 5000 --scales 1 4
    python benchmarks/cluster_scale.py --scales 1 4 --executor local slurm
    python benchmarks/cluster_scale.py --base 15625 --scales 1 16 --show-processes 6

``--show-processes N`` prints, for each run, the stage its PSS peak fell in and the N largest
processes at that moment (PSS): which process grows when the corpus does.

Targets: the 16x run within 1.3x the 1x run's peak memory and under 3 GB;
2 workers >= 1.7x one worker's docs/s on the embedding-free stages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from peak_memory import PeakMemory

EMBEDDING_FREE = ("dedup-signatures", "assign", "write")
EXECUTORS = ("local", "slurm")
SLURM_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "local_slurm.sh"


def make_corpus(path: Path, n_docs: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hf_mixture import playground

    table = pq.read_table(playground.data_file(), columns=["text", "source"])
    passages: dict[str, list[str]] = {}
    for text, source in zip(table["text"].to_pylist(), table["source"].to_pylist()):
        for i in range(0, len(text), 600):
            piece = text[i: i + 600].strip()
            if len(piece) > 80:
                passages.setdefault(source, []).append(piece)
    sources = sorted(passages)
    rng = np.random.default_rng(seed)
    writer = None
    for lo in range(0, n_docs, 50_000):
        n = min(50_000, n_docs - lo)
        src = rng.integers(0, len(sources), n)
        texts = []
        for s in src:
            pool = passages[sources[s]]
            a, b = rng.integers(0, len(pool), 2)
            texts.append(pool[a] + "\n\n" + pool[b])
        batch = pa.table({"text": texts, "source": [sources[s] for s in src],
                          "doc_id": [f"d{lo + i}" for i in range(n)]})
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema)
        writer.write_table(batch, row_group_size=5_000)
    writer.close()


class Slurm:
    """The Slurm the rows run on: ``SLURM_CONF``'s when it answers, else one started here
    by scripts/local_slurm.sh and stopped on exit.  Jobs submitted through :meth:`track`
    that are still queued or running on exit are cancelled first."""

    def __init__(self, partition: str | None = None):
        self.partition = partition
        self.started: Path | None = None
        self.jobs: list[str] = []
        self._conf_before = os.environ.get("SLURM_CONF")

    @staticmethod
    def _sinfo() -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None

    def __enter__(self):
        info = self._sinfo() if self._conf_before else None
        if info is None or info.returncode != 0 or not info.stdout.strip():
            if os.geteuid() != 0:
                raise SystemExit("--executor slurm: no Slurm answers (SLURM_CONF) and starting "
                                 "one (scripts/local_slurm.sh) needs root")
            self.started = Path(tempfile.mkdtemp(prefix="cluster-scale-slurm-"))
            env = dict(os.environ, SLURM_PORT="free")
            t = time.perf_counter()
            done = subprocess.run(["bash", str(SLURM_SCRIPT), "start", str(self.started)],
                                  env=env, capture_output=True, text=True, check=False,
                                  timeout=900)
            if done.returncode != 0:
                self._stop()
                raise SystemExit(f"scripts/local_slurm.sh start failed:\n{done.stderr[-2000:]}")
            os.environ["SLURM_CONF"] = str(self.started / "slurm.conf")
            print(f"started a single-node Slurm in {self.started} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
            info = self._sinfo()
        parts = [p for p in info.stdout.split() if p]
        if self.partition is None:  # the default partition (marked *), else the first
            self.partition = next((p for p in parts if p.endswith("*")), parts[0]).rstrip("*")
        return self

    def track(self, jobs: list[str]) -> None:
        self.jobs.extend(jobs)

    def cancel_tracked(self, timeout: float = 120) -> None:
        from hf_mixture.executors import slurm_jobs_alive

        alive = slurm_jobs_alive(self.jobs)
        if not alive:
            return
        subprocess.run(["scancel", *alive], check=False, capture_output=True, timeout=60)
        end = time.monotonic() + timeout
        while slurm_jobs_alive(alive) and time.monotonic() < end:
            time.sleep(1)

    def _stop(self) -> None:
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop", str(self.started)], check=False,
                       capture_output=True, timeout=120)
        shutil.rmtree(self.started, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        try:
            self.cancel_tracked()
        finally:
            if self.started is not None:
                self._stop()
                if self._conf_before is None:
                    os.environ.pop("SLURM_CONF", None)
                else:
                    os.environ["SLURM_CONF"] = self._conf_before
                print(f"stopped the Slurm started in {self.started}", flush=True)


def wait_for_chain(out: Path, slurm: Slurm) -> None:
    """Return once the submitted chain's last stage released ``out``'s lock (the corpus is
    written); fail with the Slurm logs' tails when no job of the chain is left before that."""
    from hf_mixture.executors import slurm_jobs_alive

    lock = out.with_name(f".{out.name}.lock")
    try:
        jobs = json.loads(lock.read_text() or "{}").get("jobs", [])
    except (OSError, ValueError):
        jobs = []  # released already
    slurm.track(jobs)
    checked = time.monotonic()
    while lock.exists():
        time.sleep(0.2)
        if time.monotonic() - checked > 5:
            checked = time.monotonic()
            if lock.exists() and not slurm_jobs_alive(jobs):
                time.sleep(1)
                if lock.exists():
                    break
    if lock.exists() or not (out / "clusters.json").is_file():
        work = out.parent
        logs = sorted(work.glob("**/slurm_logs/**/*.out")) + sorted(work.glob("**/logs/*/logs/*.log"))
        tails = "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in logs[-6:])
        raise SystemExit(f"the Slurm chain (jobs {', '.join(jobs)}) ended without writing "
                         f"{out}:\n{tails}")


def stage_spans(work_root: Path) -> dict[str, float]:
    """Seconds from each stage's first task start to its last task end, from datatrove's task
    logs (the first line's time; the file's mtime, the last line's) and completion markers
    (mtime; the finalize stage removes the write stage's): a Slurm chain's stage timings."""
    spans = {}
    for stage in sorted(work_root.glob("*/logs/*")):
        starts, ends = [], [p.stat().st_mtime for p in (stage / "completions").glob("*")]
        for log in (stage / "logs").glob("task_*.log"):
            ends.append(log.stat().st_mtime)
            with open(log) as fh:
                first = fh.readline()
            try:
                starts.append(datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp())
            except ValueError:
                pass
        if starts and ends:
            spans[stage.name] = max(ends) - min(starts)
    return spans


def run(corpus: Path, work: Path, executor: str, workers: int, seed: int, shard_rows: int,
        slurm: Slurm | None = None) -> dict:
    """One ``cluster_corpus`` run on ``executor``, timed until the corpus is written."""
    from hf_mixture.clustering import ExecutorConfig, cluster_corpus

    if executor == "slurm":
        config = ExecutorConfig(
            executor="slurm", workers=workers, slurm_partition=slurm.partition,
            slurm_cpus_per_task=1, slurm_mem_per_cpu_gb=2, slurm_job_name="cluster-scale",
            slurm_env_command=f"export PATH={Path(sys.executable).parent}:$PATH")
    else:
        config = ExecutorConfig(workers=workers)
    name = f"{executor}-w{workers}"
    out, work_root = work / f"out-{name}", work / f"work-{name}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work_root, ignore_errors=True)
    start = time.perf_counter()
    with PeakMemory(slurm_jobs=executor == "slurm") as mem:
        result = cluster_corpus(
            corpus, out, executor=config, embedding_model="hashing", work_dir=str(work_root),
            shard_rows=shard_rows, quality_flags=False, seed=seed, final_clusters=7,
            progress=False)
        if result is None:  # queued on Slurm: the chain writes the corpus
            wait_for_chain(out, slurm)
    seconds = time.perf_counter() - start
    if result is not None:
        docs, tasks, timings = result.num_docs, result.tasks, dict(result.timings)
    else:
        summary = json.loads((out / "clusters.json").read_text())["clustering"]
        docs, tasks, timings = summary["embedded"], summary["tasks"], stage_spans(work_root)
        # submitting, jobs waiting for the scheduler between stages, Slurm's job start and end
        timings["outside_stages"] = seconds - sum(timings.values())
        timings["total"] = seconds
    # the stage the PSS peak fell in: local runs its stages one after another and times them
    # in order (the time outside them, mostly the setup, counted before the first: approximate
    # at the edges); a Slurm chain's spans come from its logs, with the scheduler's gaps
    # between them, so no stage is named there
    peak_stage = None
    if result is not None:
        stages = {k: v for k, v in timings.items() if k != "total"}
        end = seconds - sum(stages.values())
        for stage, secs in stages.items():
            end += secs
            if mem.peak_pss_at <= end:
                peak_stage = stage
                break
    free_s = sum(timings.get(s, 0.0) for s in EMBEDDING_FREE)
    return {"executor": executor, "docs": docs, "seconds": round(seconds, 1),
            "docs_per_s": round(docs / seconds, 1),
            "embedding_free_docs_per_s": round(docs / free_s, 1) if free_s else None,
            "peak_mb": round(mem.peak / 2**20), "peak_pss_mb": round(mem.peak_pss / 2**20),
            "peak_pss_stage": peak_stage,
            "peak_pss_by_process_mb": [(label, round(b / 2**20))
                                       for label, b in mem.peak_pss_detail],
            "tasks": tasks,
            "timings": {k: round(v, 1) for k, v in timings.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=62_500, help="Documents at scale 1.")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-rows", type=int, default=None,
                    help="Rows per shard (default: base / 8, so scale 1 has 8 tasks).")
    ap.add_argument("--executor", nargs="+", choices=EXECUTORS, default=["local"],
                    help="Where the rows run: local (1 and 2 workers at the first scale, 2 "
                    "after), slurm (2 tasks at a time), or both, side by side.")
    ap.add_argument("--slurm-partition", default=None,
                    help="Partition of an existing Slurm (default: its default partition).")
    ap.add_argument("--show-processes", type=int, default=0, metavar="N",
                    help="Print the N largest processes (PSS) at each run's PSS peak.")
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    args = ap.parse_args()
    executors = [e for e in EXECUTORS if e in args.executor]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # a SIGTERM unwinds like Ctrl-C: queued jobs are cancelled and a Slurm started here stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = {}
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="cluster-scale-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)  # last: after Slurm's exit
        slurm = stack.enter_context(Slurm(args.slurm_partition)) if "slurm" in executors \
            else None
        for scale in args.scales:
            n = args.base * scale
            corpus = root / f"corpus-{scale}x.parquet"
            make_corpus(corpus, n, args.seed)
            size_mb = corpus.stat().st_size / 2**20
            for executor in executors:
                workers = (1, 2) if executor == "local" and scale == args.scales[0] else (2,)
                for w in workers:
                    r = run(corpus, root / f"s{scale}", executor, w, args.seed,
                            args.shard_rows or max(1, args.base // 8), slurm)
                    key = f"{scale}x_w{w}" + ("" if executor == "local" else f"_{executor}")
                    rows[key] = {"scale": scale, "file_mb": round(size_mb), **r}
                    counted = ("all processes, Slurm job processes included"
                               if executor == "slurm" else "all processes")
                    print(f"{scale:>3}x {n:>9,} docs ({size_mb:.0f} MB parquet), {executor:<5} "
                          f"{w} worker(s): {r['seconds']:>7.1f} s, {r['docs_per_s']:>7.1f} docs/s, "
                          f"embedding-free stages {r['embedding_free_docs_per_s']} docs/s, peak "
                          f"{r['peak_mb']} MB RSS / {r['peak_pss_mb']} MB PSS ({counted}), "
                          f"{r['tasks']} tasks", flush=True)
                    if args.show_processes:
                        print(f"      at the PSS peak (stage {r['peak_pss_stage']}):", flush=True)
                    for label, mb in r["peak_pss_by_process_mb"][:args.show_processes]:
                        print(f"      {mb:>6} MB PSS  {label}", flush=True)
            shutil.rmtree(root / f"s{scale}", ignore_errors=True)
            corpus.unlink()
    summary = summarize(rows, args.scales, executors)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")


def summarize(rows: dict, scales: list[int], executors: list[str]) -> dict:
    """The summary lines (printed) and their figures: per executor, peak memory last / first
    scale and its max; local, 2 workers vs 1; slurm vs local wall time and peak at each scale."""
    def key(scale: int, executor: str, w: int = 2) -> str:
        return f"{scale}x_w{w}" + ("" if executor == "local" else f"_{executor}")

    summary: dict = {}
    first, last = scales[0], scales[-1]
    for executor in executors:
        a, b = rows[key(first, executor)], rows[key(last, executor)]
        mine = [r for r in rows.values() if r["executor"] == executor]
        figures = {"memory_ratio_last_vs_first": round(b["peak_mb"] / a["peak_mb"], 2),
                   "peak_mb_max": max(r["peak_mb"] for r in mine),
                   "pss_ratio_last_vs_first": round(b["peak_pss_mb"] / a["peak_pss_mb"], 2),
                   "peak_pss_mb_max": max(r["peak_pss_mb"] for r in mine)}
        line = (f"{executor}: peak memory {last}x / {first}x: "
                f"{figures['memory_ratio_last_vs_first']} RSS, "
                f"{figures['pss_ratio_last_vs_first']} PSS (target <= 1.3), max "
                f"{figures['peak_mb_max']} MB RSS, {figures['peak_pss_mb_max']} MB PSS "
                "(target < 3072)")
        if executor == "local":
            one = rows.get(key(first, "local", 1))
            figures["workers_speedup_embedding_free"] = round(
                a["embedding_free_docs_per_s"] / one["embedding_free_docs_per_s"], 2) \
                if one else None
            figures["workers_speedup_total"] = round(a["docs_per_s"] / one["docs_per_s"], 2) \
                if one else None
            line += (f"; 2 workers vs 1 on the embedding-free stages: "
                     f"{figures['workers_speedup_embedding_free']}x (target >= 1.7), whole run "
                     f"{figures['workers_speedup_total']}x")
            summary.update(figures)  # the local figures stay at the top level, as before
        else:
            summary[executor] = figures
        print(line)
    if "local" in executors and "slurm" in executors:
        compare, parts = {}, []
        for scale in scales:
            lo, sl = rows[key(scale, "local")], rows[key(scale, "slurm")]
            compare[f"{scale}x"] = {
                "wall_ratio": round(sl["seconds"] / lo["seconds"], 2),
                "peak_ratio": round(sl["peak_mb"] / lo["peak_mb"], 2),
                "local_s": lo["seconds"], "slurm_s": sl["seconds"],
                "local_peak_mb": lo["peak_mb"], "slurm_peak_mb": sl["peak_mb"]}
            c = compare[f"{scale}x"]
            parts.append(f"{scale}x wall {c['wall_ratio']}x ({sl['seconds']} s vs "
                         f"{lo['seconds']} s), peak {c['peak_ratio']}x ({sl['peak_mb']} MB vs "
                         f"{lo['peak_mb']} MB)")
        summary["slurm_vs_local"] = compare
        print("slurm vs local (2 workers; slurm's peak includes its job processes): "
              + "; ".join(parts))
    return summary


if __name__ == "__main__":
    main()
