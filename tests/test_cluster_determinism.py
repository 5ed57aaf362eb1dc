"""The clustered corpus does not depend on the thread count, nor on the input shards' order.

Same rows, same clusters, same clusters.json (less timings and the executor) for
``num_threads`` 1 and 2; for the input shards named so that they sort the other way, the
same corpus file for file: every written file byte for byte, and the same clusters.json
less what names the input (its fingerprint holds the files' paths).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from hf_mixture.clustering import ExecutorConfig, cluster_corpus

OPTIONS = {"num_clusters": 6, "final_clusters": 3, "lexical_dims": 16, "shard_rows": 50,
           "embedding_model": "hashing", "dedup": "none", "quality_flags": False}


def _shards(folder: Path, names: list[str], copies: int = 0) -> Path:
    """The test corpus dealt round-robin into one parquet file per name; ``copies``: that
    many extra rows that exact dedup finds duplicates of earlier ones, with another case,
    spacing and ``doc_id`` (so which copy stays shows in the written rows)."""
    import datasets
    from test_clustering import make_corpus

    df = make_corpus()
    if copies:
        extra = [{"text": "  " + df[i]["text"].upper(), "source": df[i]["source"],
                  "doc_id": f"copy-{i}"} for i in range(0, 7 * copies, 7)]
        df = datasets.concatenate_datasets([df, datasets.Dataset.from_list(extra)])
    folder.mkdir(parents=True)
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


_TIMES = re.compile(rb"[0-9.]+ (?:s|docs/s)\b")


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


def test_shards_that_sort_the_other_way_give_the_same_clusters(tmp_path, tiny_tokenizer_path):
    # The same three files under names that sort the other way: keys, the k-means sample
    # and its order, the tasks' shards, the copy exact dedup keeps, the merge and the
    # numbering all follow the content.  (1 and 2 workers: test_cluster_scale.)
    a = _run(_shards(tmp_path / "1" / "in", ["a", "b", "c"], copies=6), tmp_path / "1" / "out",
             tiny_tokenizer_path, dedup="exact")
    b = _run(_shards(tmp_path / "2" / "in", ["c", "b", "a"], copies=6), tmp_path / "2" / "out",
             tiny_tokenizer_path, dedup="exact")
    assert a.num_duplicates == b.num_duplicates == 6
    assert _rows(a.output_dir) == _rows(b.output_dir)
    sizes = [sorted(c["docs"] for c in _manifest(o)["clusters"]) for o in (a.output_dir, b.output_dir)]
    assert sizes[0] == sizes[1]
    ma, mb = _manifest(a.output_dir), _manifest(b.output_dir)
    assert ma["clustering"]["input"].pop("fingerprint") != mb["clustering"]["input"].pop(
        "fingerprint")  # the paths differ ...
    assert ma == mb  # ... and nothing else: clusters, facts, every file's sha256
    written = sorted(p.relative_to(a.output_dir).as_posix()
                     for p in a.output_dir.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(b.output_dir).as_posix()
                             for p in b.output_dir.rglob("*") if p.is_file())
    for rel in written:
        one, two = ((o / rel).read_bytes() for o in (a.output_dir, b.output_dir))
        if rel == "report.md":  # its timings and throughput are the run's, not the corpus'
            one, two = (_TIMES.sub(b"<time>", x) for x in (one, two))
        if rel != "clusters.json":
            assert one == two, rel
