"""What the live progress costs: task counters in the workers, polling in the main process.

A task calls ``TaskCounter.update`` once per batch of documents (256 in the cluster
stages) and rewrites its counter file at most once a second; the main process reads the
counter files that changed once a second.  Measured here, each on its own:

- ``update``: the cost of one update that writes nothing (the common case);
- ``write``: one counter file rewrite (temporary file + rename);
- ``poll``: one poll of a folder of ``--tasks`` counter files while ``--workers`` tasks
  run (their files changed and are read; finished tasks' files are skipped);

then, for a stage of ``--docs`` documents taking ``--stage-seconds`` seconds over
``--tasks`` tasks run ``--workers`` at a time, the share of the stage's time they add.

    python benchmarks/progress.py                         # < 1 min
    python benchmarks/progress.py --tasks 1000 --docs 10000000 --stage-seconds 3600
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hf_mixture import _progress
from hf_mixture._progress import Progress, TaskCounter
from hf_mixture.clustering.stages import BATCH as BATCH_DOCS_HINT


def _per_call(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--docs", type=int, default=600_000)
    parser.add_argument("--stage-seconds", type=float, default=600.0,
                        help="Wall time of the stage without progress.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "progress"
        counter = TaskCounter(folder, 0)
        _progress.COUNTER_SECONDS = 3600.0  # updates only
        update = _per_call(lambda: counter.update(BATCH_DOCS_HINT), 200_000)
        write = _per_call(counter._write, 2_000)
        # every task but `workers` of them has finished (closed counters are not read
        # again); the running ones changed since the last poll
        counters = [TaskCounter(folder, r) for r in range(args.tasks)]
        for c in counters[args.workers:]:
            c.close()
        bar = Progress(None, "poll", "doc", terminal=False, watch=folder)
        polls = []
        for _ in range(50):
            for c in counters[:args.workers]:
                c.update(1)
                c._write()
            t = time.perf_counter()
            bar._poll()
            polls.append(time.perf_counter() - t)
        bar._closed = True
        bar._stop.set()
        poll = sorted(polls)[len(polls) // 2]

    batches = args.docs / BATCH_DOCS_HINT
    per_worker_seconds = args.stage_seconds  # each worker is busy for the whole stage
    worker_cost = (batches / args.workers) * update + per_worker_seconds * write
    main_cost = args.stage_seconds * poll  # one poll a second
    print(f"update (no write)      {update * 1e6:8.2f} us")
    print(f"counter file rewrite   {write * 1e6:8.2f} us")
    print(f"poll of {args.tasks} files    {poll * 1e3:8.2f} ms")
    print(f"stage: {args.docs:,} docs in {args.stage_seconds:,.0f} s, {args.tasks} tasks, "
          f"{args.workers} workers")
    print(f"  worker time added    {worker_cost:8.3f} s per worker "
          f"({100 * worker_cost / per_worker_seconds:.4f}% of the stage)")
    print(f"  main process time    {main_cost:8.3f} s "
          f"({100 * main_cost / args.stage_seconds:.4f}% of one core)")


if __name__ == "__main__":
    main()
