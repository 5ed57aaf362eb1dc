"""The clustered corpus does not depend on the thread count, nor on the input shards' order.

Same rows, same clusters, same clusters.json (less timings and the executor) for
``num_threads`` 1 and 2; for the input shards named so that they sort the other way, the
corpus as a table of (text, cluster) rows and the clusters' sizes must be the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hf_mixture.clustering import ExecutorConfig, cluster_corpus

OPTIONS = {"num_clusters": 6, "final_clusters": 3, "lexical_dims": 16, "shard_rows": 50,
           "embedding_model": "hashing", "dedup": "none", "quality_flags": False}


def _shards(folder: Path, names: list[str]) -> Path:
    from test_clustering import make_corpus

    df = make_corpus()
    folder.mkdir()
    n = len(names)
    for i, name in enumerate(names):
        df.select(range(i, len(df), n)).to_parquet(str(folder / f"{name}.parquet"))
    return folder


def _run(src: Path, out: Path, tok: Path, **kw):
    return cluster_corpus(src, out, executor=ExecutorConfig(workers=1), tokenizer=str(tok),
                          progress=False, **{**OPTIONS, **kw})


def _manifest(path: Path) -> dict:
    m = json.loads((path / "clusters.json").read_text())
    for k in ("timings", "docs_per_s", "executor"):
        m["clustering"].pop(k, None)
    m["clustering"]["config"].pop("num_threads", None)
    return m


def _rows(path: Path) -> list[tuple[str, int]]:
    rows = []
    for f in sorted(path.glob("cluster_*/*.parquet")):
        t = pq.read_table(f, columns=["text", "cluster_id"])
        rows += zip(t.column("text").to_pylist(), t.column("cluster_id").to_pylist())
    return sorted(rows)


def test_one_and_two_threads_write_the_same_corpus(tmp_path, tiny_tokenizer_path):
    src = _shards(tmp_path / "in", ["a", "b", "c"])
    one = _run(src, tmp_path / "t1", tiny_tokenizer_path, num_threads=1)
    two = _run(src, tmp_path / "t2", tiny_tokenizer_path, num_threads=2)
    assert _manifest(one.output_dir) == _manifest(two.output_dir)
    for rel in _manifest(one.output_dir)["files"]:
        assert pq.read_table(one.output_dir / rel).equals(pq.read_table(two.output_dir / rel))


@pytest.mark.xfail(strict=True, reason="open: document keys are '<file index>:<row>' and tasks "
                   "take shards in file order, so the k-means sample and the merge follow the "
                   "input files' names (keying by content alone was not enough)")
def test_shards_that_sort_the_other_way_give_the_same_clusters(tmp_path, tiny_tokenizer_path):
    a = _run(_shards(tmp_path / "in1", ["a", "b", "c"]), tmp_path / "o1", tiny_tokenizer_path)
    b = _run(_shards(tmp_path / "in2", ["c", "b", "a"]), tmp_path / "o2", tiny_tokenizer_path)
    assert _rows(a.output_dir) == _rows(b.output_dir)
    sizes = [sorted(c["docs"] for c in _manifest(o)["clusters"]) for o in (a.output_dir, b.output_dir)]
    assert sizes[0] == sizes[1]
