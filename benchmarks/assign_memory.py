"""The clustering assign stage's memory as k grows, on one task of a synthetic work folder.

Builds the files the centroid stage leaves for one task (documents with 1,200-character
texts and seeded keys, float32 embeddings, ``k`` centroids), then runs the real
:class:`hf_mixture.clustering.stages.AssignClusters` step on it in a child process per k and
reports that process's peak RSS (psutil, every 0.05 s).  Only k changes between the rows,
so what grows is what scales with k: the per-cluster description sample, the sums.

    python benchmarks/assign_memory.py                       # 40,000 documents, k = 250, 1000
    python benchmarks/assign_memory.py --docs 20000 --ks 100 400 1600

Target (clustering at scale): memory flat as the corpus -- and so k = sqrt(N) --
grows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DIM = 448  # the hashing embedder's 384 + the lexical view's 64


def make_work(work: Path, n: int, k: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    for sub in ("docs", "emb", "model"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa"])
    schema = pa.schema([("text", pa.string()), ("_key", pa.int64()), ("quality", pa.float64())])
    with pq.ParquetWriter(work / "docs" / "00000.parquet", schema) as out, \
            open(work / "emb" / "00000.f32", "wb") as emb:
        for lo in range(0, n, 4096):
            m = min(4096, n - lo)
            texts = [" ".join(rng.choice(words, 200)) for _ in range(m)]
            out.write_table(pa.table({
                "text": texts, "_key": rng.integers(0, 2**62, m),
                "quality": rng.random(m)}, schema=schema))
            x = rng.standard_normal((m, DIM)).astype(np.float32)
            emb.write((x / np.linalg.norm(x, axis=1, keepdims=True)).tobytes())
    (work / "emb" / "00000.json").write_text(json.dumps({"rows": n, "dim": DIM}))
    c = rng.standard_normal((k, DIM)).astype(np.float32)
    np.save(work / "model" / "centroids.npy", c / np.linalg.norm(c, axis=1, keepdims=True))
    (work / "model" / "model.json").write_text(json.dumps({"backend": "faiss", "k": k}))


CHILD = """
import sys, types
from hf_mixture.clustering.stages import AssignClusters
cfg = types.SimpleNamespace(num_threads=1, lexical_weight=0.0, language_weight=0.0,
                            layout_weight=0.0,
                            quality_flags=False)
AssignClusters(sys.argv[1], cfg).run(rank=0)
"""


def peak_rss(cmd: list[str], interval: float = 0.05) -> tuple[float, int]:
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps, peak = psutil.Process(proc.pid), 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    if proc.wait():
        raise SystemExit(f"the assign step failed (exit {proc.returncode})")
    done.set()
    t.join()
    return time.perf_counter() - start, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--ks", type=int, nargs="+", default=[250, 1000])
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="assign-memory-"))
    rows = []
    try:
        for k in args.ks:
            work = root / f"k{k}"
            make_work(work, args.docs, k)
            seconds, peak = peak_rss([sys.executable, "-c", CHILD, str(work)])
            sample_mb = (work / "assign" / "00000.sample.parquet").stat().st_size / 2**20
            rows.append({"k": k, "peak_mb": round(peak / 2**20), "seconds": round(seconds, 1)})
            print(f"k = {k:>5}, {args.docs:,} documents: peak {peak / 2**20:,.0f} MB, "
                  f"{seconds:.1f} s, description sample {sample_mb:.1f} MB on disk", flush=True)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if len(rows) > 1:
        print(f"peak at k = {rows[-1]['k']} / k = {rows[0]['k']}: "
              f"{rows[-1]['peak_mb'] / rows[0]['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
