"""Clustering at scale: peak memory and docs/s as the corpus grows, and 1 vs 2 workers.

Builds corpora of ``base x scale`` documents of real text by recombining playground
passages (two passages of one source per document, seeded), then runs the whole
``cluster_corpus`` pipeline on the datatrove local executor with the model-free
``hashing`` embedder (MiniLM's quality is measured by benchmarks/clustering.py; here
the question is whether memory stays flat and tasks scale).  Peak memory is the
largest sum of the resident sets of this process and every worker it started,
sampled every 0.1 s.

    python benchmarks/cluster_scale.py                      # 62.5k, 250k and 1M documents
    python benchmarks/cluster_scale.py --base 5000 --scales 1 4

Targets (TARGETS.md): the 16x run within 1.3x the 1x run's peak memory and under 3 GB;
2 workers >= 1.7x one worker's docs/s on the embedding-free stages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

EMBEDDING_FREE = ("dedup-signatures", "assign", "write")


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


class PeakMemory:
    """Largest RSS sum over this process and all its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.me = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(corpus: Path, work: Path, workers: int, seed: int, shard_rows: int) -> dict:
    from hf_mixture.clustering import ExecutorConfig, cluster_corpus

    out = work / f"out-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / f"work-w{workers}", ignore_errors=True)
    start = time.perf_counter()
    with PeakMemory() as mem:
        result = cluster_corpus(
            corpus, out, executor=ExecutorConfig(workers=workers), embedding_model="hashing",
            work_dir=str(work / f"work-w{workers}"), shard_rows=shard_rows, quality_flags=False,
            seed=seed, final_clusters=7, progress=False)
    seconds = time.perf_counter() - start
    free_s = sum(result.timings.get(s, 0.0) for s in EMBEDDING_FREE)
    return {"docs": result.num_docs, "seconds": round(seconds, 1),
            "docs_per_s": round(result.num_docs / seconds, 1),
            "embedding_free_docs_per_s": round(result.num_docs / free_s, 1) if free_s else None,
            "peak_mb": round(mem.peak / 2**20), "tasks": result.tasks,
            "timings": {k: round(v, 1) for k, v in result.timings.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=62_500, help="Documents at scale 1.")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-rows", type=int, default=None,
                    help="Rows per shard (default: base / 8, so scale 1 has 8 tasks).")
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="cluster-scale-"))
    rows = {}
    try:
        for scale in args.scales:
            n = args.base * scale
            corpus = root / f"corpus-{scale}x.parquet"
            make_corpus(corpus, n, args.seed)
            size_mb = corpus.stat().st_size / 2**20
            workers = (1, 2) if scale == args.scales[0] else (2,)
            for w in workers:
                r = run(corpus, root / f"s{scale}", w, args.seed,
                        args.shard_rows or max(1, args.base // 8))
                rows[f"{scale}x_w{w}"] = {"scale": scale, "file_mb": round(size_mb), **r}
                print(f"{scale:>3}x {n:>9,} docs ({size_mb:.0f} MB parquet), {w} worker(s): "
                      f"{r['seconds']:>7.1f} s, {r['docs_per_s']:>7.1f} docs/s, embedding-free "
                      f"stages {r['embedding_free_docs_per_s']} docs/s, peak {r['peak_mb']} MB "
                      f"(all processes), {r['tasks']} tasks", flush=True)
            shutil.rmtree(root / f"s{scale}", ignore_errors=True)
            corpus.unlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first, last = f"{args.scales[0]}x_w2", f"{args.scales[-1]}x_w2"
    one = rows.get(f"{args.scales[0]}x_w1")
    summary = {
        "memory_ratio_last_vs_first": round(rows[last]["peak_mb"] / rows[first]["peak_mb"], 2),
        "peak_mb_max": max(r["peak_mb"] for r in rows.values()),
        "workers_speedup_embedding_free": round(
            rows[first]["embedding_free_docs_per_s"] / one["embedding_free_docs_per_s"], 2)
        if one else None,
        "workers_speedup_total": round(rows[first]["docs_per_s"] / one["docs_per_s"], 2)
        if one else None,
    }
    print(f"peak memory {args.scales[-1]}x / {args.scales[0]}x: "
          f"{summary['memory_ratio_last_vs_first']} (target <= 1.3), max "
          f"{summary['peak_mb_max']} MB (target < 3072); 2 workers vs 1 on the embedding-free "
          f"stages: {summary['workers_speedup_embedding_free']}x (target >= 1.7), whole run "
          f"{summary['workers_speedup_total']}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
