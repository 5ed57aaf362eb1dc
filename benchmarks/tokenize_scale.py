"""Tokenize at ClimbLab scale: peak memory and docs/s of one large component.

Writes a synthetic folder in the released ClimbLab layout -- one cluster,
``cluster_1/cluster_1_<NNN>.tokenized.parquet`` with ``tokens`` (list<int64>, GPT-2-sized
ids) and ``token_count`` (int64), no ``clusters.json`` -- of short documents (4-24 tokens,
seeded), then runs ``hf-mixture tokenize --vocab-size 50257 --eos-id 50256`` on it in a
child process.  Peak memory is the largest sum of the resident sets of that process and
its descendants, sampled every 0.1 s; the corpus is written before and is not counted.

    python benchmarks/tokenize_scale.py                         # 2M and 20M documents
    python benchmarks/tokenize_scale.py --docs 2000000 8000000

Targets (issue: token stores at ClimbLab scale): peak RSS <= 1 GB at 20M documents, and
time linear in documents (20M within 11x the time of 2M).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GPT2_VOCAB = 50257
ROW_GROUP = 50_000  # rows per parquet row group of the synthetic files


def make_climblab_component(root: Path, n_docs: int, docs_per_file: int, seed: int = 0) -> int:
    """``n_docs`` documents in ``root/cluster_1/``; returns the number of tokens."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / "cluster_1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tokens = 0
    for f, lo in enumerate(range(0, n_docs, docs_per_file)):
        n_file = min(docs_per_file, n_docs - lo)
        schema = pa.schema([("tokens", pa.list_(pa.int64())), ("token_count", pa.int64())])
        with pq.ParquetWriter(folder / f"cluster_1_{f + 1:03d}.tokenized.parquet", schema) as out:
            for g in range(0, n_file, ROW_GROUP):
                n = min(ROW_GROUP, n_file - g)
                lengths = rng.integers(4, 25, size=n)
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
                values = rng.integers(0, GPT2_VOCAB - 1, size=int(offsets[-1]))
                table = pa.table({
                    "tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
                    "token_count": pa.array(lengths, type=pa.int64()),
                })
                out.write_table(table, row_group_size=ROW_GROUP)
                tokens += int(offsets[-1])
    return tokens


def run_measured(cmd: list[str], env: dict[str, str], interval: float = 0.1
                 ) -> tuple[float, int, int]:
    """``(seconds, peak RSS of the process tree in bytes, return code)`` of ``cmd``."""
    from peak_memory import PeakMemory

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    with PeakMemory(proc.pid, interval=interval) as mem:
        _, err = proc.communicate()
    if proc.returncode:
        sys.stderr.write(err[-4000:])
    return time.perf_counter() - start, mem.peak, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[2_000_000, 20_000_000],
                    help="Documents in the component, one run per size.")
    ap.add_argument("--docs-per-file", type=int, default=2_000_000,
                    help="Documents per parquet file (ClimbLab's files hold millions).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    root = Path(tempfile.mkdtemp(prefix="tokenize-scale-"))
    rows = []
    try:
        for n in args.docs:
            corpus, store = root / f"climblab-{n}", root / f"store-{n}"
            t0 = time.perf_counter()
            tokens = make_climblab_component(corpus, n, args.docs_per_file, args.seed)
            made = time.perf_counter() - t0
            cmd = [sys.executable, "-m", "hf_mixture", "tokenize", str(corpus), "--output",
                   str(store), "--vocab-size", str(GPT2_VOCAB), "--eos-id", str(GPT2_VOCAB - 1)]
            seconds, peak, rc = run_measured(cmd, env)
            if rc:
                raise SystemExit(f"tokenize of {n:,} documents failed (exit {rc})")
            parquet_mb = sum(f.stat().st_size for f in corpus.rglob("*.parquet")) / 2**20
            store_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20
            row = {"docs": n, "tokens": tokens, "parquet_mb": round(parquet_mb),
                   "store_mb": round(store_mb), "seconds": round(seconds, 1),
                   "docs_per_s": round(n / seconds), "peak_mb": round(peak / 2**20),
                   "corpus_written_s": round(made, 1)}
            rows.append(row)
            print(f"{n:>11,} docs, {tokens:>12,} tokens ({parquet_mb:,.0f} MB parquet -> "
                  f"{store_mb:,.0f} MB store): {seconds:7.1f} s, {row['docs_per_s']:>9,} docs/s, "
                  f"peak {row['peak_mb']:,} MB (all processes)", flush=True)
            shutil.rmtree(corpus, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = {"peak_mb_max": max(r["peak_mb"] for r in rows)}
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        summary["time_ratio"] = round(last["seconds"] / first["seconds"], 2)
        summary["docs_ratio"] = round(last["docs"] / first["docs"], 2)
        print(f"{last['docs']:,} vs {first['docs']:,} documents ({summary['docs_ratio']}x): "
              f"{summary['time_ratio']}x the time (target <= 1.1x the document ratio); peak "
              f"{summary['peak_mb_max']:,} MB (target <= 1024 MB at 20M documents)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
