"""Clustering stages whose memory does not grow with k or the number of tasks: the same
results as the obvious in-memory computation."""

from __future__ import annotations

import json
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hf_mixture.clustering import stages


def test_global_sample_equals_sorting_everything(tmp_path):
    """Two passes, one file open at a time == the m smallest (key, row, id) over all tasks."""
    rng = np.random.default_rng(3)
    (tmp_path / "sample").mkdir()
    everything = []
    for t in range(7):
        n = int(rng.integers(0, 40))
        keys = np.sort(rng.integers(0, 30, n))  # few distinct keys: many ties at the threshold
        rows = rng.permutation(1000)[:n] + 1000 * t
        emb = rng.standard_normal((n, 3)).astype(np.float32)
        table = pa.table({"_key": pa.array(keys, pa.int64()), "_id": [f"d{r}" for r in rows],
                          "emb": pa.array([e.tobytes() for e in emb], pa.binary()),
                          "text": [f"text {r}" for r in rows],
                          "_row": pa.array(rows, pa.int64())})
        pq.write_table(table, tmp_path / "sample" / f"{t:05d}.parquet", row_group_size=5)
        everything += list(zip(keys.tolist(), rows.tolist(), table["_id"].to_pylist(),
                               table["text"].to_pylist(), [e.tobytes() for e in emb]))
    for m in (1, 17, 60, len(everything), len(everything) + 5):
        want = sorted(sorted(everything)[:m], key=lambda r: (r[1], r[2]))
        texts, emb, rows = stages._global_sample(tmp_path, 7, m)
        assert texts == [r[3] for r in want]
        assert rows.tolist() == [r[1] for r in want]
        assert emb.tobytes() == b"".join(r[4] for r in want)


def test_assign_description_sample_is_the_smallest_keys_per_cluster(tmp_path, monkeypatch):
    """The heaps hold (key, row), texts spill to disk: the sample equals the per-cluster
    DESCRIBE_PER_CLUSTER smallest keys with their texts, quality and features."""
    monkeypatch.setattr(stages, "DESCRIBE_PER_CLUSTER", 4)
    monkeypatch.setattr(stages._DescribeSpill, "BATCH", 7)  # several spilled batches
    rng = np.random.default_rng(0)
    n, k, dim = 500, 12, 6
    work = tmp_path
    for sub in ("docs", "emb", "model"):
        (work / sub).mkdir()
    texts = [f"doc {i} " + "x" * int(rng.integers(0, 1500)) for i in range(n)]
    keys = rng.permutation(10 * n)[:n].astype(np.int64)
    quality = rng.random(n)
    pq.write_table(pa.table({"text": texts, "_key": keys, "quality": quality}),
                   work / "docs" / "00000.parquet", row_group_size=100)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb.tofile(work / "emb" / "00000.f32")
    (work / "emb" / "00000.json").write_text(json.dumps({"rows": n, "dim": dim}))
    centroids = rng.standard_normal((k, dim)).astype(np.float32)
    np.save(work / "model" / "centroids.npy", centroids)
    (work / "model" / "model.json").write_text(json.dumps({"backend": "sklearn"}))
    cfg = types.SimpleNamespace(num_threads=1, lexical_weight=0.0, quality_flags=False)
    stages.AssignClusters(str(work), cfg).run(rank=0)

    with np.load(work / "assign" / "00000.npz") as z:
        labels = z["labels"]
    want = set()
    for c in range(k):
        members = np.flatnonzero(labels == c)
        for i in members[np.argsort(keys[members])][:4]:
            want.add((c, int(keys[i]), texts[i][: stages.DESCRIBE_CHARS], float(quality[i]),
                      emb[i].tobytes()))
    got = pq.read_table(work / "assign" / "00000.sample.parquet")
    assert set(zip(*(got[c].to_pylist() for c in ("cluster", "_key", "text", "quality",
                                                     "feat")))) == want
    assert got.num_rows == len(want)
    assert sorted(p.name for p in (work / "assign").iterdir()) == [
        "00000.npz", "00000.sample.parquet"]  # the spill file is gone
